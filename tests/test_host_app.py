"""examples/host_app.py under gunicorn: the chat at /chat, users from the host's session, the hooks still working."""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import PYTHON, ROOT, Closed
from served import under_gunicorn

from chat.client import Client as ChatClient


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[str, object]]:
    """Serve the example host app for the module; yield its base URL and process."""
    with under_gunicorn("examples.host_app:app", "/chat/healthz", SECRET_KEY="host-test-secret") as served:
        yield served


def form_token(opener: urllib.request.OpenerDirector, base: str) -> str:
    """Open the host's page and return the CSRF token its forms carry."""
    with opener.open(base + "/", timeout=5) as response:
        found = re.search(r'name="csrf" value="([^"]+)"', response.read().decode())
    assert found, "the page's forms carry no CSRF token"
    return found[1]


def sign_in(base: str, user: str) -> str:
    """Sign in through the host's form (with its CSRF token) and return the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"user": user, "csrf": form_token(opener, base)}).encode()
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
    token = re.search(r'name="csrf" value="([^"]+)"', page(base, cookie))[1]
    opener.open(urllib.request.Request(
        f"{base}/logout", data=urllib.parse.urlencode({"csrf": token}).encode(), method="POST",
        headers={"Cookie": cookie},
    ), timeout=5)
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


def page(base: str, cookie: str) -> str:
    """Return the host's page as the holder of cookie sees it."""
    request = urllib.request.Request(base + "/", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def test_a_cookie_copied_before_logout_is_dead_after_it(host, connect):
    """Signing out ends the session everywhere: a copy of the cookie taken before is signed out too."""
    base, _ = host
    cookie = sign_in(base, "lou")
    token = re.search(r'name="csrf" value="([^"]+)"', page(base, cookie))[1]
    logout = urllib.request.Request(
        f"{base}/logout", data=urllib.parse.urlencode({"csrf": token}).encode(), method="POST",
        headers={"Cookie": cookie},
    )
    urllib.request.urlopen(logout, timeout=5).close()
    assert "login-name" in page(base, cookie)
    with pytest.raises(Closed) as refused:
        connect(socket(base, "?room=copied"), cookie=cookie).next()
    assert refused.value.code == 4401


def test_login_without_the_forms_csrf_token_is_refused(host):
    """A cross-site form post to /login (no CSRF token) is refused with 400 and signs nobody in."""
    base, _ = host
    form = urllib.parse.urlencode({"user": "mallory"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/login", data=form, timeout=5)
    assert refused.value.code == 400 and "Set-Cookie" not in refused.value.headers


@pytest.mark.parametrize(("env", "starts"), [
    ({}, False), ({"FLASK_DEBUG": "1"}, True), ({"SECRET_KEY": "k" * 32}, True),
])
def test_the_example_refuses_to_start_without_a_secret_key(env, starts):
    """Outside debug mode the example will not run with a known secret: without SECRET_KEY it stops with why."""
    environ = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "FLASK_DEBUG")}
    result = subprocess.run(
        [PYTHON, "-c", "import examples.host_app"], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True,
        timeout=60,
    )
    assert (result.returncode == 0) == starts, result.stderr
    if not starts:
        assert "SECRET_KEY" in result.stderr
