// Protocol v3 through the JavaScript client, against a real chat server with JWTs: replies, changes, reads,
// typing and DMs.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";

import { ChatClient, Refused } from "../chat-client.js";
import { Server, WebSocket, waitFor } from "../support/server.js";

const SECRET = "a-test-secret-that-is-long-enough-for-hs256";
const clients = [];
let server;

before(async () => {
  server = await new Server({ CHAT_RATE_LIMIT: "off", CHAT_JWT_SECRET: SECRET }).start();
});

after(async () => {
  for (const client of clients) client.close();
  await server.dispose();
});

/** Return an HS256 JWT for user, as a host app would mint it. */
function mint(user) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = encode({ alg: "HS256", typ: "JWT" }) + "." + encode({ sub: user, name: user, exp: Math.floor(Date.now() / 1000) + 3600 });
  return body + "." + createHmac("sha256", SECRET).update(body).digest("base64url");
}

/** Open a client for user that records what it is given, and wait for its welcome. */
async function open(user, options) {
  const client = new ChatClient(server.wsUrl, { token: mint(user), WebSocket, ...options });
  clients.push(client);
  client.seen = { message: [], change: [], presence: [] };
  for (const event of Object.keys(client.seen)) client.on(event, (frame) => client.seen[event].push(frame));
  await waitFor(() => client.welcome, 10000, `${user}'s welcome`);
  return client;
}

test("a reply carries reply_to, and edit, react and delete are acked changes every client gets in order", async () => {
  const ana = await open("ana", { room: "changes" });
  const bo = await open("bo", { room: "changes" });
  const first = await ana.send("first");
  const reply = await bo.send("a reply", { replyTo: first.id });
  await waitFor(() => ana.seen.message.find((frame) => frame.id === reply.id));
  assert.equal(ana.seen.message.find((frame) => frame.id === reply.id).reply_to, first.id);

  const edit = await ana.edit(first.id, "first, edited");
  const react = await bo.react(first.id, "👍");
  const removed = await ana.delete(first.id);
  await waitFor(() => bo.seen.change.length === 3, 10000, "three changes");
  assert.deepEqual(bo.seen.change.map((change) => [change.kind, change.id, change.target]), [
    ["edit", edit.id, first.id], ["react", react.id, first.id], ["delete", removed.id, first.id]]);
  assert.equal(bo.seen.change[0].text, "first, edited");
  assert.equal(bo.seen.change[1].emoji, "👍");
  assert.equal(bo.lastId, removed.id);

  await assert.rejects(bo.edit(reply.id, "  "), (error) => error instanceof Refused && error.code === "empty");
  await assert.rejects(bo.delete(first.id), (error) => error instanceof Refused);
  const page = await bo.history({ limit: 10 });
  const folded = page.messages.find((frame) => frame.id === first.id);
  assert.equal(folded.deleted, true);
});

test("a client that joins later gets the changes folded into the messages, and resumes after a change", async () => {
  const ana = await open("ana", { room: "folded" });
  const first = await ana.send("to edit");
  const edit = await ana.edit(first.id, "edited");
  const late = await open("cy", { room: "folded" });
  await waitFor(() => late.seen.message.length === 1, 10000, "the replayed message");
  assert.equal(late.seen.message[0].message, "edited");
  assert.equal(typeof late.seen.message[0].edited, "number");
  const resumed = await open("cy", { room: "folded", since: edit.id });
  await ana.send("after the edit");
  await waitFor(() => resumed.seen.message.length === 1, 10000, "the next message");
  assert.deepEqual(resumed.seen.message.map((frame) => frame.message), ["after the edit"]);
  assert.deepEqual(resumed.seen.change, []);
});

test("typing reaches the others, read moves the position and tells them", async () => {
  const ana = await open("ana", { room: "den" });
  const bo = await open("bo", { room: "den" });
  assert.equal(ana.welcome.private, false);
  assert.ok("unread" in bo.welcome);
  assert.equal(ana.typing(), true);
  assert.equal(ana.typing(), false);
  await waitFor(() => bo.seen.presence.find((frame) => frame.event === "typing"), 10000, "typing");
  assert.equal(bo.seen.presence.find((frame) => frame.event === "typing").user, "ana");
  const said = await bo.send("read me");
  assert.equal(ana.read(said.id), true);
  await waitFor(() => bo.seen.presence.find((frame) => frame.event === "read"), 10000, "the receipt");
  const receipt = bo.seen.presence.find((frame) => frame.event === "read");
  assert.deepEqual([receipt.user, receipt.id], ["ana", said.id]);
});

test("a DM is one room from either side, told by the welcome", async () => {
  const ana = await open("ana", { dm: "bo" });
  assert.match(ana.room, /^dm-[0-9a-f]{24}$/);
  assert.equal(ana.welcome.dm, "bo");
  const said = await ana.send("psst");
  const bo = await open("bo", { dm: "ana" });
  assert.equal(bo.room, ana.room);
  await waitFor(() => bo.seen.message.length === 1, 10000, "the DM's message");
  assert.equal(bo.seen.message[0].id, said.id);
});

test("v3 calls refuse to run on an older protocol", () => {
  const old = new ChatClient(server.wsUrl, { room: "old", version: 2, WebSocket, connect: false });
  assert.throws(() => old.edit("1", "x"), /needs protocol v3/);
  assert.throws(() => old.typing(), /needs protocol v3/);
});
