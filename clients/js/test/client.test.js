// The JavaScript client against a real chat server (gunicorn), in Node.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ChatClient, Refused } from "../chat-client.js";
import { Server, WebSocket, waitFor } from "../support/server.js";

const clients = [];
let server;

before(async () => {
  server = await new Server({ CHAT_RATE_LIMIT: "off" }).start();
});

after(async () => {
  for (const client of clients) client.close();
  await server.dispose();
});

/** Open a client that records every message it is given, and the URLs it connects to. */
function open(room, name, options = {}) {
  const urls = [];
  class Recorded extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      urls.push(url);
    }
  }
  const client = new ChatClient(options.url || server.wsUrl, { room, name, WebSocket: Recorded, ...options });
  client.urls = urls;
  client.messages = [];
  client.on("message", (frame) => client.messages.push(frame));
  clients.push(client);
  return client;
}

function welcomed(client) {
  return waitFor(() => client.state === "connected" && client.welcome !== null && client.you, 10000, "the welcome");
}

function texts(client) {
  return client.messages.map((frame) => frame.message);
}

test("send resolves to the ack and every client in the room gets the message once", async () => {
  const alice = open("acks", "alice");
  const bob = open("acks", "bob");
  await Promise.all([welcomed(alice), welcomed(bob)]);
  const ack = await alice.send("hello bob");
  assert.match(ack.id, /^\d+$/);
  await waitFor(() => bob.messages.length === 1, 10000, "bob's message");
  assert.deepEqual(texts(bob), ["hello bob"]);
  assert.equal(bob.messages[0].id, ack.id);
  await waitFor(() => alice.messages.length === 1);
  assert.equal(alice.messages[0].name, "alice");
  assert.deepEqual(alice.pending(), []);
});

test("presence: the welcome lists who is here, digests add and remove names", async () => {
  const first = open("people", "first");
  await welcomed(first);
  assert.deepEqual(first.users, ["first"]);
  const second = open("people", "second");
  await welcomed(second);
  assert.deepEqual([...second.users].sort(), ["first", "second"]);
  await waitFor(() => first.users.includes("second") && first.online === 2, 10000, "second in first's list");
  second.close();
  await waitFor(() => !first.users.includes("second") && first.online === 1, 10000, "second gone");
  assert.equal(second.state, "disconnected");
});

test("a refused message rejects with its code and is not sent again", async () => {
  const client = open("refusals", "rita");
  await welcomed(client);
  await assert.rejects(client.send("   "), (error) => error instanceof Refused && error.code === "empty");
  assert.deepEqual(client.pending(), []);
  const ack = await client.send("fine");
  assert.match(ack.id, /^\d+$/);
});

test("ten messages queued while offline are sent once each", async () => {
  const reader = open("offline", "reader");
  const writer = open("offline", "writer");
  await Promise.all([welcomed(reader), welcomed(writer)]);
  writer.close();
  const sent = Array.from({ length: 10 }, (_, n) => `queued ${n}`);
  const acks = sent.map((text) => writer.send(text));
  assert.equal(writer.pending().length, 10);
  writer.connect();
  const ids = (await Promise.all(acks)).map((ack) => ack.id);
  assert.equal(new Set(ids).size, 10);
  await waitFor(() => reader.messages.length >= 10, 10000, "the ten messages");
  assert.deepEqual(texts(reader), sent);
  const page = await reader.history({ limit: 50 });
  assert.deepEqual(page.messages.map((frame) => frame.message), sent);
});

test("history pages back to the first message", async () => {
  const writer = open("paged", "writer");
  await welcomed(writer);
  const sent = Array.from({ length: 25 }, (_, n) => `line ${n}`);
  for (const text of sent) await writer.send(text);
  const seen = [];
  let page = await writer.history({ limit: 10 });
  seen.unshift(...page.messages.map((frame) => frame.message));
  while (page.more) {
    page = await writer.history({ limit: 10, before: page.messages[0].id });
    seen.unshift(...page.messages.map((frame) => frame.message));
  }
  assert.deepEqual(seen, sent);
  const newer = await writer.history({ since: page.messages[4].id, limit: 3 });
  assert.deepEqual(newer.messages.map((frame) => frame.message), ["line 5", "line 6", "line 7"]);
});

test("a server restart: both clients come back by themselves and resume with since, without gap or duplicate", async () => {
  const own = await new Server({ CHAT_RATE_LIMIT: "off", CHAT_HEARTBEAT_INTERVAL: "0.5" }).start();
  try {
    const reader = open("restart", "reader", { url: own.wsUrl, connectTimeout: 2000 });
    const writer = open("restart", "writer", { url: own.wsUrl, connectTimeout: 2000 });
    await Promise.all([welcomed(reader), welcomed(writer)]);
    const states = [];
    reader.on("state", (change) => states.push(change.state));
    await writer.send("before");
    await waitFor(() => reader.messages.length === 1);

    await own.stop();
    await waitFor(() => states.includes("reconnecting"), 10000, "the reader to notice");
    const during = ["during 1", "during 2", "during 3"];
    const acks = during.map((text) => writer.send(text));
    await own.start();
    await Promise.all(acks);
    const later = ["after 1", "after 2"];
    for (const text of later) await writer.send(text);

    const all = ["before", ...during, ...later];
    await waitFor(() => reader.messages.length >= all.length, 20000, "the reader to catch up");
    assert.deepEqual(texts(reader), all);
    assert.equal(new Set(reader.messages.map((frame) => frame.id)).size, all.length);
    assert.ok(reader.urls.length >= 2);
    assert.match(reader.urls.at(-1), /[?&]since=\d+/);
    const stored = await reader.history({ limit: 50 });
    assert.deepEqual(stored.messages.map((frame) => frame.message), all);
  } finally {
    await own.dispose();
  }
});

test("a policy close is final: the client stays closed and says why", async () => {
  const client = open("lobby", "bell\u0007", { connect: false });
  const changes = [];
  client.on("state", (change) => changes.push(change));
  client.connect();
  const final = await waitFor(() => changes.find((change) => change.final), 10000, "the refusal");
  assert.equal(final.state, "disconnected");
  assert.equal(final.code, 1008);
  assert.ok(final.reason);
  assert.equal(client.urls.length, 1);
});

test("messages refused for now by the rate limit are sent again and acked once each", async () => {
  const own = await new Server({ CHAT_RATE_LIMIT: "1,2" }).start();
  try {
    const client = open("limited", "quick", { url: own.wsUrl });
    await welcomed(client);
    const notices = [];
    client.on("notice", (frame) => notices.push(frame.code));
    const sent = ["one", "two", "three", "four", "five"];
    const ids = (await Promise.all(sent.map((text) => client.send(text)))).map((ack) => ack.id);
    assert.equal(new Set(ids).size, sent.length);
    assert.ok(notices.includes("rate_limited"));
    const page = await client.history({ limit: 10 });
    assert.deepEqual(page.messages.map((frame) => frame.message), sent);
  } finally {
    await own.dispose();
  }
});
