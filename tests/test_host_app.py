"""examples/host_app.py under gunicorn: the chat at /chat, users from the host's session, the hooks still working."""

from __future__ import annotations

import http.cookiejar
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import Closed
from served import under_gunicorn

from chat.client import Client as ChatClient


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[str, object]]:
    """Serve the example host app for the module; yield its base URL and process."""
    with under_gunicorn("examples.host_app:app", "/chat/healthz", SECRET_KEY="host-test-secret") as served:
        yield served


def sign_in(base: str, user: str) -> str:
    """Sign in through the host's form and return the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"user": user}).encode()
    with opener.open(f"{base}/login", data=form, timeout=5) as response:
        assert response.url.endswith("/chat/")
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


def socket(base: str, query: str = "") -> str:
    """Return the chat socket's URL under the host."""
    return base.replace("http:", "ws:", 1) + "/chat/ws" + query


def test_the_host_keeps_its_own_root_and_the_chat_refuses_guests(host, connect):
    """/ is the host's page; a socket without a session is closed with 4401, as CHAT_ANONYMOUS is off there."""
    base, _ = host
    with urllib.request.urlopen(base + "/", timeout=5) as response:
        assert b"login-name" in response.read()
    with pytest.raises(Closed) as refused:
        connect(socket(base)).next()
    assert refused.value.code == 4401


def test_a_signed_in_user_is_named_by_the_session_and_bans_are_applied(host, connect):
    """The session's user is the socket's name and user; a banned word gets a rejected notice, not the room."""
    base, _ = host
    client = connect(socket(base, "?room=hosted&name=someone-else"), cookie=sign_in(base, "ivy"))
    assert client.welcome()["you"] == "ivy"
    client.send("oh heck")
    assert client.next_where(lambda e: e["state"] in (2, 4))["code"] == "rejected"
    client.send("fine")
    message = client.next_where(lambda e: e["state"] == 2)
    assert (message["name"], message["user"], message["message"]) == ("ivy", "ivy", "fine")


def test_sign_out_closes_the_socket_and_the_next_handshake_is_refused(host, connect):
    """The host's logout route closes the user's socket with 1008 "signed out"; the cleared session gets 4401."""
    base, _ = host
    cookie = sign_in(base, "jo")
    client = connect(socket(base, "?room=leaving"), cookie=cookie)
    client.welcome()
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(urllib.request.Request(f"{base}/logout", method="POST", headers={"Cookie": cookie}), timeout=5)
    with pytest.raises(Closed) as closed:
        client.next_where(lambda e: False)
    assert (closed.value.code, closed.value.reason) == (1008, "signed out")
    # The browser now holds the emptied session the logout answered with.
    cleared = "; ".join(f"{c.name}={c.value}" for c in jar) or "session="
    with pytest.raises(Closed) as refused:
        connect(socket(base, "?room=leaving"), cookie=cleared).next()
    assert refused.value.code == 4401


def test_gunicorn_hooks_find_the_chat_in_the_host_app(connect):
    """Mounted by Chat(app, url_prefix=...), the chat is found by the hooks: SIGTERM closes its sockets with 1001."""
    with under_gunicorn("examples.host_app:app", "/chat/healthz", SECRET_KEY="host-test-secret") as (base, process):
        client = connect(socket(base), cookie=sign_in(base, "kim"))
        client.welcome()
        process.terminate()
        assert client.close_code() == 1001


def test_the_python_client_chats_with_the_host_s_session_cookie(host):
    """chat.client.Client with the host's session cookie is the signed-in user; its history call carries it too."""
    base, _ = host
    cookie = sign_in(base, "lee")
    with ChatClient(socket(base), "cookies", headers={"Cookie": cookie}) as lee:
        assert lee.you == "lee"
        message_id = lee.send("signed in from Python")
        page = lee.history()
    stored = [(message["id"], message["user"], message["message"]) for message in page["messages"]]
    assert stored == [(message_id, "lee", "signed in from Python")]
