"""Identity: the host's session through @chat.identify, signed tokens, guests, and each refusal, under gunicorn."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import jwt
import pytest
import tokens
from conftest import Client, Closed, wait_for
from tokens import SECRET


@pytest.fixture
def serve(make_server) -> Callable[..., str]:
    """Start the host app hosts:identified under gunicorn (the token secret and the given settings in its
    environment, as deployed) and return its base URL."""

    def start(**settings: str) -> str:
        return make_server(target="hosts:identified", health="/chat/healthz",
                           **{"CHAT_JWT_SECRET": SECRET, **settings}).url

    return start


def mint(sub: str = "u1", name: str | None = "Alice", **claims: object) -> str:
    """Return a token for sub, named Alice unless told otherwise."""
    return tokens.mint(sub, name, **claims)


def sign_in(base: str, user: str) -> str:
    """Sign user in through the host's route and return its session cookie."""
    request = urllib.request.Request(f"{base}/login/{user}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Set-Cookie"].split(";")[0]


def ws(base: str, query: str = "") -> str:
    """Return the chat socket's URL under base."""
    return base.replace("http:", "ws:", 1) + "/chat/ws" + (f"?{query}" if query else "")


def refusal(client: Client) -> tuple[int, str]:
    """Read until the server closes and return its code and reason."""
    try:
        while True:
            client.next()
    except Closed as closed:
        return closed.code, closed.reason


def test_session_identity_names_the_connection_and_its_messages(serve, connect):
    """@chat.identify reads the handshake's session: the welcome names the user, and chat frames carry user."""
    base = serve()
    client = connect(ws(base, "room=team&name=mallory"), cookie=sign_in(base, "bob"))
    assert client.welcome()["you"] == "Bob"
    client.send("hello")
    message = client.next_where(lambda e: e["state"] == 2)
    assert (message["name"], message["user"], message["message"]) == ("Bob", "bob", "hello")


def test_token_identity_overrides_the_name_parameter(serve, connect):
    """?token= names the connection by its claims, whatever ?name= says, and its frames carry sub as user."""
    base = serve()
    client = connect(ws(base, f"token={mint()}&name=mallory"))
    welcome = client.welcome()
    assert welcome["you"] == "Alice" and welcome["users"] == ["Alice"]
    client.send("signed")
    message = client.next_where(lambda e: e["state"] == 2)
    assert (message["name"], message["user"]) == ("Alice", "u1")


def test_guests_are_as_before_while_anonymous_access_is_on(serve, connect):
    """Without an identity a client chooses its name and its frames carry no user."""
    base = serve()
    client = connect(ws(base, "name=carol"))
    assert client.welcome()["you"] == "carol"
    client.send("as a guest")
    assert "user" not in client.next_where(lambda e: e["state"] == 2)


@pytest.mark.parametrize(
    ("query", "code", "said"),
    [
        (lambda: f"token={mint(ttl=-10)}", 4401, "expired"),
        (lambda: f"token={mint(secret='another-secret-of-someone-else-0123456789')}", 4401, "invalid token"),
        (lambda: "token=not.a.token", 4401, "invalid token"),
        (lambda: "token=" + jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, None, algorithm="none"), 4401,
         "invalid token"),
        (lambda: "token=" + jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256"), 4401, "exp"),
        (lambda: f"room=secret&token={mint(rooms=['lobby'])}", 4403, "room secret is not allowed"),
    ],
    ids=["expired", "foreign-signature", "malformed", "unsigned", "no-exp", "room-not-granted"],
)
def test_a_bad_token_is_closed_with_its_code_and_reason(serve, connect, query, code, said):
    """An expired, foreign, malformed, unsigned or exp-less token closes with 4401, a room not granted with 4403."""
    base = serve()
    watcher = connect(ws(base, "room=secret"))
    watcher.welcome()
    closed = refusal(connect(ws(base, query())))
    assert closed[0] == code and said in closed[1]
    watcher.send("after the attempt")
    watcher.next_where(lambda e: e["state"] == 2)
    assert not any(e.get("event") == "join" for e in watcher.events)


def test_a_granted_room_is_joined(serve, connect):
    """A token whose rooms claim lists the room joins it."""
    base = serve()
    assert connect(ws(base, f"room=ops&token={mint(rooms=['ops'])}")).welcome()["you"] == "Alice"


def test_tokens_are_refused_when_no_secret_is_set(serve, connect):
    """Without CHAT_JWT_SECRET a token cannot be checked, so it is refused with 4401 rather than ignored."""
    base = serve(CHAT_JWT_SECRET="")
    code, reason = refusal(connect(ws(base, f"token={mint()}")))
    assert code == 4401 and "CHAT_JWT_SECRET" in reason


def test_anonymous_off_refuses_guests_and_admits_identities(serve, connect):
    """With CHAT_ANONYMOUS off a client without identity is closed with 4401; a session or a token gets in."""
    base = serve(CHAT_ANONYMOUS="off")
    code, reason = refusal(connect(ws(base, "name=guest")))
    assert code == 4401 and "sign in" in reason
    assert connect(ws(base), cookie=sign_in(base, "dora")).welcome()["you"] == "Dora"
    assert connect(ws(base, f"token={mint()}")).welcome()["you"] == "Alice"


def test_an_identified_page_shows_its_name_instead_of_the_name_box(serve):
    """The page rendered for a signed-in user carries its name and has no name input."""
    base = serve()
    request = urllib.request.Request(f"{base}/chat/", headers={"Cookie": sign_in(base, "erin")})
    with urllib.request.urlopen(request, timeout=5) as response:
        html = response.read().decode()
    assert 'data-you="Erin"' in html and 'data-user="erin"' in html and 'id="name"' not in html


@pytest.mark.parametrize("kind", ["dev", "gthread"])
def test_the_token_is_never_written_to_a_log(make_server, connect, kind):
    """The development server's request log and gunicorn's access log show token=[redacted], never the token."""
    server = make_server(kind, CHAT_JWT_SECRET=SECRET, GUNICORN_CMD_ARGS="--access-logfile -")
    token = mint()
    client = connect(f"{server.ws_url}?room=logged&token={token}")
    assert client.welcome()["you"] == "Alice"
    client.close()
    # gunicorn writes no access line for a WebSocket; an HTTP request shows its access log is redacted too.
    with urllib.request.urlopen(f"{server.url}/healthz?token={token}", timeout=5):
        pass
    wait_for(lambda: "token=[redacted]" in server.log(), 10, "the redacted request line")
    assert token not in server.log() and token.split(".")[2] not in server.log()


def test_a_user_in_two_tabs_is_one_entry_online(serve, connect):
    """Two connections of one user are one name in users and one in online; a guest's each count."""
    base = serve()
    cookie = sign_in(base, "fred")
    connect(ws(base, "room=tabs"), cookie=cookie).welcome()
    second = connect(ws(base, "room=tabs"), cookie=cookie).welcome()
    assert (second["online"], second["users"]) == (1, ["Fred"])


def test_a_user_on_two_hosts_is_one_entry_online(make_server, connect, clean_redis_url):
    """Through a shared Redis, one user connected to two hosts is one name and one count; a guest adds one."""
    hosts = [make_server(CHAT_BACKEND_URL=clean_redis_url, CHAT_JWT_SECRET=SECRET) for _ in range(2)]
    token = mint("u7", "Gil")
    connect(f"{hosts[0].ws_url}?room=wide&token={token}").welcome()
    second = connect(f"{hosts[1].ws_url}?room=wide&token={token}").welcome()
    assert (second["online"], second["users"]) == (1, ["Gil"])
    guest = connect(f"{hosts[1].ws_url}?room=wide&name=hal").welcome()
    assert (guest["online"], sorted(guest["users"])) == (2, ["Gil", "hal"])


def test_a_guest_may_not_take_the_name_of_a_signed_in_member(serve, connect):
    """A guest named as a signed-in member of the room, in any case, is closed 1008 while any of that user's
    connections is in the room; the name stays free in other rooms, and other names are free in the room."""
    base = serve()

    def connections() -> int:
        with urllib.request.urlopen(f"{base}/chat/healthz", timeout=5) as response:
            return json.load(response)["connections"]

    def refused(name: str) -> tuple[int, str]:
        closed = connect(ws(base, f"room=names&name={name}")).closed()
        return closed.code, closed.reason

    tabs = [connect(ws(base, f"room=names&token={mint()}")) for _ in range(2)]
    for tab in tabs:
        tab.welcome()
    taken = (1008, "that name belongs to a signed-in user here: choose another")
    assert refused("aLiCe") == taken
    assert connect(ws(base, "room=elsewhere&name=Alice")).welcome()["you"] == "Alice"
    assert connect(ws(base, "room=names&name=Bob")).welcome()["you"] == "Bob"
    tabs[0].close()
    wait_for(lambda: connections() == 3, message="the first tab to go")
    assert refused("ALICE") == taken
    tabs[1].close()
    wait_for(lambda: connections() == 2, message="the second tab to go")
    assert connect(ws(base, "room=names&name=alice")).welcome()["you"] == "alice"
