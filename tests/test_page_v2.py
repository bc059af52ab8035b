"""The page on protocol v2, in Chromium: a clock until the ack, a queue that outlives the server and a reload,
refusals shown on the message, and scrolling back to the first message of a room."""

from __future__ import annotations

import re

import pytest
from conftest import Client
from pages import DESKTOP, Opener, say, texts
from playwright.sync_api import Browser, Page, expect

#: How long a page may take to notice that the server is back (its backoff grows while it is down).
BACK_MS = 30_000


def sending(page: Page):
    """Return the clocks of the messages still waiting for their ack."""
    return page.get_by_test_id("sending")


@pytest.mark.slow
def test_messages_typed_while_the_server_is_down_go_out_once(make_server, open_page: Opener) -> None:
    """Three messages typed while the server is down wait with a clock, then show once, sent, in both tabs."""
    server = make_server(CHAT_HEARTBEAT_INTERVAL="0.2")
    writer = open_page(server.url, "queue", "writer")
    reader = open_page(server.url, "queue", "reader")
    server.stop()
    expect(writer.get_by_test_id("status")).not_to_have_text("connected")
    typed = ["one", "two", "three"]
    for text in typed:
        say(writer, text)
    expect(sending(writer)).to_have_count(3)
    expect(writer.locator('.message[data-state="pending"] .text')).to_have_text(typed)

    server.start()
    for page in (writer, reader):
        expect(page.get_by_test_id("status")).to_have_text("connected", timeout=BACK_MS)
        expect(texts(page)).to_have_text(typed)
    expect(sending(writer)).to_have_count(0)
    expect(writer.locator(".message.own .text")).to_have_text(typed)


def test_the_queue_outlives_a_reload(server, open_page: Opener) -> None:
    """Messages typed while disconnected survive a reload (localStorage) and go out once when the page connects."""
    writer = open_page(server.url, "kept", "writer")
    reader = open_page(server.url, "kept", "reader")
    writer.get_by_test_id("toggle").click()
    expect(writer.get_by_test_id("status")).to_have_text("disconnected")
    say(writer, "first while away")
    say(writer, "second while away")
    expect(sending(writer)).to_have_count(2)

    writer.reload()
    expect(writer.get_by_test_id("status")).to_have_text("connected")
    for page in (writer, reader):
        expect(texts(page)).to_have_text(["first while away", "second while away"])
    expect(sending(writer)).to_have_count(0)
    assert writer.evaluate("localStorage.getItem('chat.queue')") == "[]"


def test_scrolling_to_the_top_loads_older_messages_and_keeps_the_place(make_server, open_page: Opener) -> None:
    """At the top the page loads the page before, keeps the message read in place, and ends at the first one."""
    server = make_server(CHAT_RATE_LIMIT="off")
    filler = Client(server.ws_url + "?room=long")
    try:
        filler.welcome()
        for number in range(130):
            filler.send(f"line {number}")
        filler.chats(130)
    finally:
        filler.close()
    page = open_page(server.url, "long", "reader")
    expect(texts(page)).to_have_count(50)
    messages = page.get_by_test_id("messages")
    while not page.get_by_test_id("beginning").count():
        shown = texts(page).count()
        top = texts(page).first
        text = top.text_content()
        messages.evaluate("list => { list.scrollTop = 0; }")
        expect(texts(page)).not_to_have_count(shown)
        expect(texts(page).filter(has_text=re.compile(f"^{text}$"))).to_be_in_viewport()
    expect(texts(page)).to_have_text([f"line {number}" for number in range(130)])
    expect(page.get_by_test_id("beginning")).to_have_text("beginning of the room")


def test_a_refused_message_says_why_under_it(browser: Browser, host_app_url: str) -> None:
    """A message the host's on_message hook refuses is marked, with the reason under it, and not sent again."""
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(host_app_url + "/")
        page.get_by_test_id("login-name").fill("alice")
        page.get_by_test_id("login").click()
        expect(page.get_by_test_id("status")).to_have_text("connected")
        say(page, "well darn it")
        refused = page.locator('.message[data-state="failed"]')
        expect(refused.locator(".text")).to_have_text("well darn it")
        expect(refused.get_by_test_id("refused")).to_contain_text("not accepted")
        expect(sending(page)).to_have_count(0)
        say(page, "sorry")
        expect(page.locator(".message.own:not(.failed) .text")).to_have_text(["sorry"])
    finally:
        context.close()
