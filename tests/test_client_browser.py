"""The JavaScript client in Chromium, imported from the chat's static folder: the outbox in localStorage, and v3."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from conftest import wait_for
from pages import say, texts
from playwright.sync_api import Browser, Page, expect

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def mint(user: str) -> str:
    """Return a JWT for user, signed with the test secret."""
    return jwt.encode({"sub": user, "name": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")


@pytest.fixture
def opened(browser: Browser, make_server) -> Iterator[tuple[Page, str]]:
    """Open a page of a chat server with JWTs on, where the client module can be imported; yield it and /ws."""
    server = make_server(CHAT_JWT_SECRET=SECRET, CHAT_RATE_LIMIT="off")
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/healthz")
    yield page, server.ws_url
    context.close()
    assert errors == []


QUEUED = """async ({url}) => {
  const { ChatClient } = await import("/static/chat-client.js");
  const writer = new ChatClient(url, { room: "queued", name: "writer", connect: false });
  const acks = Array.from({ length: 10 }, (_, n) => writer.send("queued " + n));
  const stored = JSON.parse(localStorage.getItem("chat.queue")).length;
  writer.connect();
  const ids = (await Promise.all(acks)).map((ack) => ack.id);
  const page = await writer.history({ limit: 50 });
  writer.close();
  return { stored, ids, texts: page.messages.map((frame) => frame.message), left: localStorage.getItem("chat.queue") };
}"""


def test_ten_messages_queued_in_the_browser_go_out_once_each(opened: tuple[Page, str]) -> None:
    """Ten sends before connecting wait in localStorage, are acked once connected, and are stored once each."""
    page, url = opened
    result = page.evaluate(QUEUED, {"url": url})
    assert result["stored"] == 10
    assert len(set(result["ids"])) == 10
    assert result["texts"] == [f"queued {n}" for n in range(10)]
    assert result["left"] == "[]"


V3 = """async ({url, ana, bo}) => {
  const { ChatClient } = await import("/static/chat-client.js");
  const until = (test) => new Promise((resolve) => {
    const poll = () => (test() ? resolve() : setTimeout(poll, 20));
    poll();
  });
  const open = async (token, options) => {
    const client = new ChatClient(url, { token, ...options });
    client.seen = [];
    for (const event of ["message", "change", "presence"]) client.on(event, (frame) => client.seen.push(frame));
    await until(() => client.welcome);
    return client;
  };
  const a = await open(ana, { room: "v3" });
  const b = await open(bo, { room: "v3" });
  const first = await a.send("first");
  const reply = await b.send("reply", { replyTo: first.id });
  const edit = await a.edit(first.id, "edited");
  const react = await b.react(first.id, "🎉");
  const removed = await a.delete(first.id);
  a.typing();
  b.read(reply.id);
  await until(() => b.seen.filter((frame) => frame.state === 6).length === 3
    && b.seen.some((frame) => frame.event === "typing") && a.seen.some((frame) => frame.event === "read"));
  const dm = await open(ana, { dm: "bo" });
  const other = await open(bo, { dm: "ana" });
  const said = await dm.send("psst");
  await until(() => other.seen.some((frame) => frame.id === said.id));
  for (const client of [a, b, dm, other]) client.close();
  return {
    replyTo: b.seen.find((frame) => frame.id === reply.id).reply_to,
    first: first.id,
    changes: b.seen.filter((frame) => frame.state === 6).map((frame) => [frame.kind, frame.id, frame.target]),
    ids: [edit.id, react.id, removed.id],
    typing: b.seen.find((frame) => frame.event === "typing").user,
    read: a.seen.find((frame) => frame.event === "read").id,
    reply: reply.id,
    rooms: [dm.room, other.room],
  };
}"""


def test_every_v3_frame_from_the_browser(opened: tuple[Page, str]) -> None:
    """In Chromium: a reply, edit, react and delete (acked, seen as state 6 in order), typing, a read, a DM."""
    page, url = opened
    result = page.evaluate(V3, {"url": url, "ana": mint("ana"), "bo": mint("bo")})
    assert result["replyTo"] == result["first"]
    assert result["changes"] == [[kind, change, result["first"]] for kind, change in
                                 zip(("edit", "react", "delete"), result["ids"], strict=True)]
    assert result["typing"] == "ana"
    assert result["read"] == result["reply"]
    assert result["rooms"][0] == result["rooms"][1] and result["rooms"][0].startswith("dm-")


@pytest.mark.parametrize("wake", ["window.dispatchEvent(new Event('online'))",
                                  "document.dispatchEvent(new Event('visibilitychange'))"])
def test_back_online_or_on_screen_reconnects_at_once(browser: Browser, make_server, wake: str) -> None:
    """With the backoff's timers frozen, the browser's online or visibilitychange event alone reconnects the client."""
    server = make_server(CHAT_HEARTBEAT_INTERVAL="0.5")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/healthz")
        page.clock.install()
        page.evaluate("""async (url) => {
          const { ChatClient } = await import("/static/chat-client.js");
          window.client = new ChatClient(url, { room: "wake", name: "sleeper", connect: false });
          window.changes = [];
          window.welcomes = 0;
          client.on("state", (change) => changes.push(change));
          client.on("presence", (frame) => { if (frame.event === "welcome") welcomes += 1; });
          client.connect();
        }""", server.ws_url)
        wait_for(lambda: page.evaluate("welcomes === 1"), 10, "a welcome")
        server.stop()
        page.clock.pause_at(time.time() + 1)
        # The last change is a retry being set (it carries the close code) on a timer that is now frozen.
        wait_for(lambda: page.evaluate("changes.at(-1).state === 'reconnecting' && 'code' in changes.at(-1)"), 10,
                 "a retry")
        server.start()
        page.evaluate(wake)
        wait_for(lambda: page.evaluate("welcomes === 2 && client.state === 'connected'"), 10, "the reconnect")
    finally:
        context.close()


def test_ten_messages_typed_in_the_page_while_offline_show_once_each(server, open_page) -> None:
    """Through the page: ten messages typed while disconnected wait with a clock, then show once in both pages."""
    writer = open_page(server.url, "ten", "writer")
    reader = open_page(server.url, "ten", "reader")
    writer.get_by_test_id("toggle").click()
    expect(writer.get_by_test_id("status")).to_have_text("disconnected")
    typed = [f"offline {n}" for n in range(10)]
    for text in typed:
        say(writer, text)
    expect(writer.get_by_test_id("sending")).to_have_count(10)

    writer.get_by_test_id("toggle").click()
    for page in (writer, reader):
        expect(texts(page)).to_have_text(typed)
    expect(writer.get_by_test_id("sending")).to_have_count(0)
    assert writer.evaluate("localStorage.getItem('chat.queue')") == "[]"
    expect(reader.get_by_test_id("online")).to_have_text("2")
