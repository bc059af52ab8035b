"""Hostile clients, finding 7: bad text, deep JSON, doubtful tokens, sign-outs, borrowed names, stray methods."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt
import pytest
from conftest import Server, wait_for

SECRET = "a-secret-for-tests-only-0123456789abcdef"
KEY = "input-test-key-0123456789"


@pytest.fixture(scope="module")
def server():
    """Start one gthread server with tokens and the API on."""
    started = Server("gthread", CHAT_JWT_SECRET=SECRET, CHAT_API_KEY=KEY).start()
    yield started
    started.stop()


def mint(sub: str = "u1", **claims: object) -> str:
    """Return a token for sub, valid for a minute unless claims say otherwise."""
    return jwt.encode({"sub": sub, "name": sub.title(), "exp": int(time.time() + 60), **claims}, SECRET, "HS256")


def api(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    """Call the API with the key and return the status and the JSON body."""
    request = urllib.request.Request(
        server.url + "/api" + path, data=body, method=method,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_a_lone_surrogate_is_refused_as_invalid_and_the_connection_lives(server, connect):
    """{"text": "\\ud800"} gets a state-4 "invalid" notice naming its cid, not a 1011; the next message goes."""
    client = connect(server.ws_url + "?room=text&v=2")
    client.welcome()
    client.send('{"text": "\\ud800", "cid": "x"}')
    notice = client.next_where(lambda e: e["state"] in (4, 5))
    assert (notice["state"], notice["code"], notice["cid"]) == (4, "invalid", "x")
    client.send(json.dumps({"text": "fine", "cid": "y"}))
    assert client.next_where(lambda e: e["state"] in (4, 5))["ack"] == "y"
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("body", [
    b'{"message": "\\ud800"}', b'{"message": "hi", "user": "\\udfff"}', b"[" * 100_000 + b"]" * 100_000,
])
def test_the_api_answers_bad_text_and_deep_nesting_with_400(server, body):
    """A lone surrogate or JSON nested beyond Python's recursion is a 400 with a JSON error, not a 500."""
    status, answer = api(server, "POST", "/rooms/text/messages", body)
    assert status == 400 and answer["error"]


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/rooms/text"), ("PATCH", "/rooms/text/messages/1"), ("POST", "/dms"),
])
def test_every_api_body_is_bounded_in_nesting(server, method, path):
    """Deep JSON to the conversation and change endpoints is a 400 too, as it is to a post: one parser for all."""
    status, answer = api(server, method, path, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested" in answer["error"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/rooms/text/messages", "GET or POST"), ("POST", "/rooms/text", "GET or PUT"),
    ("GET", "/dms", "POST"), ("POST", "/users/u1/messages", "DELETE or GET"),
])
def test_a_method_the_api_does_not_take_is_answered_in_json(server, method, path, allowed):
    """405 on any of the API's paths (messages, rooms, DMs, a user's messages) is JSON with an Allow header."""
    status, answer = api(server, method, path)
    assert status == 405 and allowed in answer["error"]


@pytest.mark.parametrize("claims", [
    {"rooms": None}, {"rooms": "text"}, {"exp": str(int(time.time() + 60))}, {"exp": 10**30},
    {"exp": time.time() + 31 * 86400},
])
def test_doubtful_token_claims_are_refused(server, connect, claims):
    """rooms not a list, exp as a string, or exp past CHAT_JWT_MAX_AGE (30 days) are refused with 4401."""
    assert connect(f"{server.ws_url}?room=text&token={mint(**claims)}").close_code() == 4401


def test_issuer_and_audience_are_checked_when_set(make_server, connect):
    """With CHAT_JWT_ISSUER and CHAT_JWT_AUDIENCE set, a token must carry both."""
    checked = make_server(CHAT_JWT_SECRET=SECRET, CHAT_JWT_ISSUER="https://id.example", CHAT_JWT_AUDIENCE="chat")
    assert connect(f"{checked.ws_url}?token={mint()}").close_code() == 4401
    wrong = mint(iss="https://evil.example", aud="chat")
    assert connect(f"{checked.ws_url}?token={wrong}").close_code() == 4401
    right = mint(iss="https://id.example", aud="chat")
    assert connect(f"{checked.ws_url}?token={right}").welcome()["you"] == "U1"


def test_a_signed_out_token_cannot_reconnect(server, connect):
    """After a sign-out the user's token is refused with 4401; a token issued after it is welcome."""
    token = mint("erin", iat=int(time.time()) - 5)
    first = connect(f"{server.ws_url}?room=out&token={token}")
    first.welcome()
    assert api(server, "DELETE", "/users/erin/connections")[0] == 202
    signed_out = time.time()
    assert first.close_code() == 1008
    assert connect(f"{server.ws_url}?room=out&token={token}").close_code() == 4401
    # A token's iat is in whole seconds, and one issued in the second of the sign-out may predate it.
    wait_for(lambda: time.time() >= int(signed_out) + 1, 3, "the next second")
    fresh = mint("erin", iat=int(time.time()))
    assert connect(f"{server.ws_url}?room=out&token={fresh}").welcome()["you"] == "Erin"


@pytest.mark.parametrize(("name", "code"), [
    ("\u115f", 1008), ("x\u0301\u0301\u0301", 1008), ("\u0301abc", 1008), ("\u200bx", 1008),
])
def test_invisible_and_stacked_names_are_refused(server, connect, name, code):
    """Hangul fillers, zero-width characters and stacked combining marks are refused with 1008."""
    assert connect(f"{server.ws_url}?room=names&name={urllib.parse.quote(name)}").close_code() == code


def test_names_are_nfkc_normalised(server, connect):
    """A fullwidth name reads as its plain letters."""
    client = connect(f"{server.ws_url}?room=names&name={urllib.parse.quote('Ｚｏｅ')}")
    assert client.welcome()["you"] == "Zoe"


def test_a_guest_cannot_take_a_signed_in_users_name(server, connect):
    """While Frank (signed in) is in the room, a guest named frank is refused with 1008; elsewhere it may."""
    frank = connect(f"{server.ws_url}?room=club&token={mint('frank')}")
    frank.welcome()
    assert connect(f"{server.ws_url}?room=club&name=frank").close_code() == 1008
    assert connect(f"{server.ws_url}?room=other&name=frank").welcome()["you"] == "frank"
