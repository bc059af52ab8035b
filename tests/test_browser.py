"""Drive the chat page in a real Chromium against a real server."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from conftest import wait_for
from pages import DESKTOP, PHONE, SOCKETS, Opener, join, say, texts
from playwright.sync_api import Browser, Page, WebSocket, WebSocketRoute, expect


def test_message_reaches_every_page_once(server, open_page: Opener) -> None:
    """A message typed in one page shows once in both pages, marked own only in the sender's."""
    alice = open_page(server.url, "lobby", "alice")
    bob = open_page(server.url, "lobby", "bob")
    expect(alice.get_by_test_id("online")).to_have_text("2")

    say(alice, "hello from alice")

    for page in (alice, bob):
        expect(texts(page)).to_have_text(["hello from alice"])
        expect(page.get_by_test_id("message")).to_contain_text("alice")
    expect(alice.get_by_test_id("input")).to_have_value("")
    expect(alice.get_by_test_id("message")).to_have_class(re.compile(r"\bown\b"))
    expect(bob.get_by_test_id("message")).not_to_have_class(re.compile(r"\bown\b"))


def test_disconnect_then_connect(server, open_page: Opener) -> None:
    """Disconnect closes the socket and stays closed, what is typed meanwhile waits; Connect sends it."""
    page = open_page(server.url, "lobby", "carol")
    toggle = page.get_by_test_id("toggle")

    toggle.click()
    expect(page.get_by_test_id("status")).to_have_text("disconnected")
    expect(toggle).to_have_text("Connect")
    say(page, "typed while away")
    expect(page.get_by_test_id("sending")).to_have_count(1)

    toggle.click()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    expect(toggle).to_have_text("Disconnect")
    expect(page.get_by_test_id("sending")).to_have_count(0)
    say(page, "back again")
    expect(texts(page)).to_have_text(["typed while away", "back again"])


def test_html_is_shown_as_text(server, open_page: Opener) -> None:
    """Markup in a message and a name is shown literally and injects no element."""
    payload = "<img src=x onerror=alert(1)>"
    sender = open_page(server.url, "lobby", "<b>eve</b>")
    reader = open_page(server.url, "lobby", "dave")

    say(sender, payload)

    for page in (sender, reader):
        expect(texts(page)).to_have_text([payload])
        expect(page.get_by_test_id("message").locator(".who")).to_have_text("<b>eve</b>")
        expect(page.get_by_test_id("messages").locator("img, b")).to_have_count(0)
    expect(reader.get_by_test_id("users").locator("b")).to_have_count(0)


def test_rooms_are_separate(server, open_page: Opener) -> None:
    """Pages in different rooms see neither each other's messages nor each other online."""
    red = open_page(server.url, "red", "rita")
    blue = open_page(server.url, "blue", "bert")

    # Each page's own messages come down its one socket in order, so seeing
    # the later one proves the earlier message of the other room never came.
    say(red, "red 1")
    expect(texts(red)).to_have_text(["red 1"])
    say(blue, "blue 1")
    expect(texts(blue)).to_have_text(["blue 1"])
    say(red, "red 2")
    expect(texts(red)).to_have_text(["red 1", "red 2"])

    for page in (red, blue):
        expect(page.get_by_test_id("online")).to_have_text("1")
    expect(red.get_by_test_id("users")).not_to_contain_text("bert")


def test_room_switch_clears_list_and_is_remembered(server, open_page: Opener) -> None:
    """Joining another room empties the list, and a reload comes back to that room and name."""
    page = open_page(server.url, "first", "remy")
    say(page, "in first")
    expect(texts(page)).to_have_text(["in first"])

    join(page, "second", "remy")
    expect(texts(page)).to_have_count(0)
    say(page, "in second")
    expect(texts(page)).to_have_text(["in second"])

    page.reload()
    expect(page.get_by_test_id("room")).to_have_value("second")
    expect(page.get_by_test_id("name")).to_have_value("remy")
    expect(page.get_by_test_id("status")).to_have_text("connected")
    expect(texts(page)).to_have_text(["in second"])


def test_offline_page_catches_up_once(make_server, open_page: Opener) -> None:
    """A page cut off across a server restart comes back by itself with each missed message once."""
    server = make_server(CHAT_HEARTBEAT_INTERVAL="0.2")
    reader = open_page(server.url, "news", "reader")
    say(reader, "first")
    expect(texts(reader)).to_have_text(["first"])
    # The page's watchdog, which notices the dead connection, starts with the gap between two heartbeats.
    for _ in range(2):
        with SOCKETS[reader][-1].expect_event("framereceived", lambda frame: '"state":1' in str(frame), timeout=5_000):
            pass

    # Offline emulation holds the open socket's frames instead of closing it;
    # the restart is what really drops the connection.
    reader.context.set_offline(True)
    server.restart()
    expect(reader.get_by_test_id("status")).to_have_text("reconnecting…", timeout=10_000)

    writer = open_page(server.url, "news", "writer")
    sent = [f"missed {n}" for n in range(1, 6)]
    for text in sent:
        say(writer, text)
    # The store kept "first" across the restart.
    expect(texts(writer)).to_have_text(["first", *sent])
    expect(texts(reader)).to_have_text(["first"])

    reader.context.set_offline(False)
    expect(reader.get_by_test_id("status")).to_have_text("connected", timeout=10_000)
    expect(texts(reader)).to_have_text(["first", *sent])


def test_gap_marker_when_history_is_gone(make_server, open_page: Opener) -> None:
    """A page resuming from an id older than the history window shows a missed-messages marker."""
    server = make_server(CHAT_HISTORY_SIZE="3")
    reader = open_page(server.url, "busy", "reader")
    writer = open_page(server.url, "busy", "writer")
    say(writer, "m0")
    expect(texts(reader)).to_have_text(["m0"])

    reader.get_by_test_id("toggle").click()
    expect(reader.get_by_test_id("status")).to_have_text("disconnected")
    sent = [f"m{n}" for n in range(1, 7)]
    for text in sent:
        say(writer, text)
    expect(texts(writer)).to_have_text(["m0", *sent])

    reader.get_by_test_id("toggle").click()
    expect(reader.get_by_test_id("gap")).to_have_count(1)
    expect(reader.get_by_test_id("gap")).to_contain_text("missed")
    expect(texts(reader)).to_have_text(["m0", "m4", "m5", "m6"])


def test_policy_close_shows_reason_and_stays_closed(server, open_page: Opener) -> None:
    """A name the server refuses (1008) shows its reason by the chooser and is not retried."""
    page = open_page(server.url, "lobby", "frank")

    page.get_by_test_id("name").fill("bell\x07")
    page.get_by_test_id("join").click()

    expect(page.get_by_test_id("problem")).to_be_visible()
    expect(page.get_by_test_id("problem")).not_to_be_empty()
    expect(page.get_by_test_id("status")).to_have_text("disconnected")
    expect(page.get_by_test_id("toggle")).to_have_text("Connect")


def test_notice_is_not_a_chat_message(make_server, open_page: Opener) -> None:
    """A state-4 notice (rate limited) shows in the notice line, not in the list; the message goes out later."""
    server = make_server(CHAT_RATE_LIMIT="1,2")
    page = open_page(server.url, "lobby", "quick")

    for text in ("one", "two", "three"):
        say(page, text)

    notice = page.get_by_test_id("notice")
    expect(notice).to_be_visible()
    expect(notice).not_to_be_empty()
    expect(page.get_by_test_id("messages")).not_to_contain_text(notice.inner_text())
    expect(texts(page)).to_have_text(["one", "two", "three"])
    expect(page.get_by_test_id("sending")).to_have_count(0)


def test_phone_width_can_send(server, open_page: Opener) -> None:
    """At 360x640 the controls are on screen, nothing overflows sideways, and Send works."""
    page = open_page(server.url, "lobby", "pat", viewport=PHONE)

    for testid in ("input", "send", "status", "toggle", "room", "name", "join"):
        expect(page.get_by_test_id(testid)).to_be_in_viewport(ratio=1)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    page.get_by_test_id("input").fill("sent from a phone")
    page.get_by_test_id("send").click()
    expect(texts(page)).to_have_text(["sent from a phone"])


def test_reading_older_messages_is_not_interrupted(server, open_page: Opener) -> None:
    """New messages follow the bottom of the list, but not when the reader has scrolled up."""
    reader = open_page(server.url, "lobby", "reader", viewport=PHONE)
    writer = open_page(server.url, "lobby", "writer")
    messages = reader.get_by_test_id("messages")
    for n in range(12):
        say(writer, f"line {n}")
    expect(texts(reader)).to_have_count(12)
    expect(texts(reader).last).to_be_in_viewport()

    messages.evaluate("list => { list.scrollTop = 0; }")
    say(writer, "while reading")
    expect(texts(reader)).to_have_count(13)
    expect(reader.get_by_test_id("jump")).to_be_visible()
    assert messages.evaluate("list => list.scrollTop") == 0

    reader.get_by_test_id("jump").click()
    expect(texts(reader).last).to_be_in_viewport()
    expect(reader.get_by_test_id("jump")).to_be_hidden()


def pass_through(routes: list[WebSocketRoute]) -> Callable[[WebSocketRoute], None]:
    """Return a WebSocket route handler that connects each socket to the real server and keeps its route."""

    def handle(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        # The page side's code (1011 and the like) cannot be given to the browser's
        # real socket, so the server side is closed normally.
        ws.on_close(lambda code, reason: server.close())
        routes.append(ws)

    return handle


def sockets_to(page: Page, room: str) -> list[WebSocket]:
    """Return the sockets page opened to room, in order."""
    return [socket for socket in SOCKETS[page] if f"room={room}&" in socket.url + "&"]


def test_a_server_restart_closes_with_1001_and_the_page_resumes_with_since(make_server, open_page: Opener) -> None:
    """SIGTERM closes the page's socket with 1001 (the page says why); once the server is back the page reconnects
    on its own, resumes with since, and nothing is shown twice."""
    server = make_server()
    page = open_page(server.url, "restarted", "rhea")
    say(page, "before")
    expect(texts(page)).to_have_text(["before"])
    expect(page.get_by_test_id("sending")).to_have_count(0)
    server.stop()
    expect(page.get_by_test_id("notice")).to_have_text("server is restarting")
    server.start()
    # The page's backoff may have grown to its 30 s ceiling while the server was down.
    expect(page.get_by_test_id("status")).to_have_text("connected", timeout=45_000)
    assert "since=" in sockets_to(page, "restarted")[-1].url
    say(page, "after")
    expect(texts(page)).to_have_text(["before", "after"])


def test_a_full_server_closes_with_1013_and_the_page_gets_in_once_a_place_frees(make_server, open_page: Opener,
                                                                               connect) -> None:
    """With CHAT_MAX_CONNECTIONS=1 taken, the page's socket is closed with 1013 and the page keeps retrying; once
    the place is free it connects."""
    server = make_server(CHAT_MAX_CONNECTIONS="1")
    page = open_page(server.url, "lobby", "rhea")
    page.clock.install()
    page.get_by_test_id("toggle").click()
    expect(page.get_by_test_id("status")).to_have_text("disconnected")
    # The page shows it closed before the server has let go of its place.
    wait_for(lambda: server.health()["connections"] == 0, 10, "the page's place to free up")
    holder = connect(server.ws_url + "?room=full")
    holder.welcome()
    page.get_by_test_id("toggle").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    wait_for(lambda: "server is full" in server.log(), 10, "the page to be refused")
    # Held still, the page's retry cannot take the place before the test has seen it free.
    page.clock.pause_at(page.evaluate("Date.now()") + 1)
    # A retry already on its way when the clock stopped is refused too (the place is still taken), and only once
    # it is over does the page wait on the clock: else that retry could take the place, or schedule the next one
    # after the clock was run. The evaluate lets Playwright deliver the sockets' events.
    wait_for(lambda: page.evaluate("0") == 0 and all(socket.is_closed() for socket in SOCKETS[page]), 10,
             "the page's retry under way to end")
    holder.close()
    wait_for(lambda: server.health()["connections"] == 0, 10, "the place to free up")
    # Past the longest backoff: the retry timer fires, once. Not run_for, which would also fire the new socket's
    # 10 s connect watchdog before a loaded machine had opened it, and leave the next retry for a clock held still.
    page.clock.fast_forward(31_000)
    expect(page.get_by_test_id("status")).to_have_text("connected")


@pytest.mark.parametrize(
    ("settings", "act"),
    [({"CHAT_MAX_MESSAGE_BYTES": "100"}, "too-big"), ({"CHAT_ANONYMOUS": "off"}, "no-identity")],
    ids=["1009", "4401"],
)
def test_a_refusal_retrying_cannot_fix_is_shown_and_not_retried(make_server, browser: Browser, settings: dict,
                                                               act: str) -> None:
    """The server closes with 1009 (a message too big) or 4401 (guests refused): the page shows the reason, stays
    disconnected, and opens no other socket, even past its longest backoff."""
    server = make_server(**settings)
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        opened: list[WebSocket] = []
        page.on("websocket", lambda socket: opened.append(socket))
        page.goto(server.url + "/")
        page.clock.install()
        page.get_by_test_id("room").fill("refusing")
        page.get_by_test_id("name").fill("rhea")
        page.get_by_test_id("join").click()
        if act == "too-big":
            expect(page.get_by_test_id("status")).to_have_text("connected")
            say(page, "x" * 200)
        status = page.get_by_test_id("status")
        expect(status).to_have_text("disconnected")
        expect(page.get_by_test_id("problem")).not_to_be_empty()
        count = len(opened)
        page.clock.run_for(31_000)
        assert status.text_content() == "disconnected"
        assert len(opened) == count
    finally:
        context.close()


@pytest.mark.parametrize(
    ("code", "retried"),
    [(1011, True), (1003, False), (1008, False), (4403, False)],
)
def test_retry_follows_the_close_code(server, open_page: Opener, code: int, retried: bool) -> None:
    """The page resumes with since after 1011 (liveness), and stays closed showing why after 1003, 1008 and 4403.

    These codes are injected through Playwright's socket route: the server sends them only when the page misses
    pongs (1011), sends a binary frame (1003, which the page never does), floods or is signed out (1008, the
    host app's test signs a page out for real) or asks for a room its token does not grant (4403)."""
    page = open_page(server.url, "lobby", "rhea")
    routes: list[WebSocketRoute] = []
    page.route_web_socket(re.compile(r"/ws\?"), pass_through(routes))
    page.clock.install()
    join(page, "closes", "rhea")
    say(page, "before")
    expect(texts(page)).to_have_text(["before"])
    expect(page.get_by_test_id("sending")).to_have_count(0)
    assert len(routes) == 1
    status = page.get_by_test_id("status")

    reason = f"closed with {code}"
    routes[0].close(code=code, reason=reason)

    if retried:
        expect(page.get_by_test_id("notice")).to_have_text(reason)
        expect(status).to_have_text("connected")
        assert len(routes) == 2
        assert "since=" in routes[1].url
        say(page, "after")
        expect(texts(page)).to_have_text(["before", "after"])
    else:
        expect(page.get_by_test_id("problem")).to_have_text(reason)
        expect(status).to_have_text("disconnected")
        expect(page.get_by_test_id("toggle")).to_have_text("Connect")
        # Past the longest backoff (30 s): a retry timer, had one been set, has fired.
        page.clock.run_for(31_000)
        assert status.text_content() == "disconnected"
        assert len(routes) == 1


def test_host_app_users_chat_by_name_and_are_signed_out(browser: Browser, host_app_url: str) -> None:
    """Two users signed in to the host app see each other by name; a banned word is refused; sign-out ends the chat."""
    errors: list[str] = []
    contexts = []

    def sign_in(user: str) -> Page:
        context = browser.new_context(viewport=DESKTOP)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{user}: {error}"))
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(host_app_url + "/")
        page.get_by_test_id("login-name").fill(user)
        page.get_by_test_id("login").click()
        expect(page.get_by_test_id("status")).to_have_text("connected")
        expect(page.get_by_test_id("you")).to_contain_text(user)
        expect(page.get_by_test_id("name")).to_have_count(0)
        assert sockets and all(re.search(r"^ws://[^/]+/chat/ws\?", url) for url in sockets), sockets
        return page

    try:
        alice, bob = sign_in("alice"), sign_in("bob")
        for page in (alice, bob):
            expect(page.get_by_test_id("users")).to_contain_text("alice")
            expect(page.get_by_test_id("users")).to_contain_text("bob")
            expect(page.get_by_test_id("online")).to_have_text("2")

        say(alice, "hello bob")
        expect(texts(bob)).to_have_text(["hello bob"])
        expect(bob.get_by_test_id("message").locator(".who")).to_have_text("alice")
        expect(alice.locator(".message.own")).to_have_count(1)

        say(alice, "well darn it")
        expect(alice.get_by_test_id("notice")).to_contain_text("not accepted")
        say(alice, "sorry")
        expect(texts(bob)).to_have_text(["hello bob", "sorry"])

        home = alice.context.new_page()
        home.goto(host_app_url + "/")
        home.get_by_test_id("announce").click()
        for page in (alice, bob):
            expect(texts(page).last).to_have_text("Deploy finished (started by alice)")

        home.get_by_test_id("logout").click()
        expect(alice.get_by_test_id("problem")).to_have_text("signed out")
        expect(alice.get_by_test_id("status")).to_have_text("disconnected")
        expect(bob.get_by_test_id("online")).to_have_text("1")
        expect(bob.get_by_test_id("users")).not_to_contain_text("alice")
    finally:
        for context in contexts:
            context.close()
    assert errors == []


def test_a_welcome_does_not_overwrite_a_room_being_typed(server, browser: Browser) -> None:
    """A room typed while the page's own join is still under way stays in the field when that join's welcome
    comes (as the name field does), and Join then takes the page there."""
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        held: list[str | bytes] = []
        routes: list[WebSocketRoute] = []
        holding = [True]

        def hold_the_servers_frames(route: WebSocketRoute) -> None:
            routes.append(route)

            def from_server(message: str | bytes) -> None:
                if holding[0]:
                    held.append(message)
                else:
                    route.send(message)

            route.connect_to_server().on_message(from_server)

        page.route_web_socket(re.compile(r"/ws"), hold_the_servers_frames)
        page.goto(server.url + "/")
        page.get_by_test_id("room").fill("elsewhere")
        # Playwright hands over the held frames while it runs: poll through it, within a bound on a hang.
        for _ in range(200):
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the server's welcome never came"
        expect(page.get_by_test_id("status")).not_to_have_text("connected")
        holding[0] = False
        for message in held:
            routes[0].send(message)
        expect(page.get_by_test_id("status")).to_have_text("connected")
        expect(page.get_by_test_id("room")).to_have_value("elsewhere")
        page.get_by_test_id("join").click()
        wait_for(lambda: page.evaluate("() => localStorage.getItem('chat.room')") == "elsewhere", 10,
                 "the page to have joined elsewhere")
    finally:
        context.close()
