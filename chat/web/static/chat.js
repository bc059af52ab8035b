// The chat page: the UI only. The connection, the outbox, presence and history are the client's
// (chat-client.js, the same module as the JavaScript client package).
import { ChatClient } from "./chat-client.js";
import { Changes } from "./chat-changes.js";
import { Conversations } from "./chat-conversations.js";

const NOTICE_MS = 4000;
const NEAR_BOTTOM_PX = 80;
const MAX_ITEMS = 1000;
// The server's default CHAT_MAX_MESSAGE_BYTES; a bigger frame would be
// closed with 1009, which ends the session instead of failing one message.
const MAX_MESSAGE_BYTES = 64 * 1024;
const DEFAULT_ROOM = "lobby";
const PAGE_SIZE = 50;
const NEAR_TOP_PX = 40;
const SETTLE_MS = 200;
const ROOM_PATTERN = /^[a-z0-9_-]{1,32}$/;
const CLOSE_TEXT = {
  1003: "The server refused a binary message.",
  1008: "The server refused the connection.",
  1009: "That message was too big for the server.",
  4401: "Sign in to chat.",
  4403: "You may not join that room.",
};
const STATUS_TEXT = {
  connecting: "connecting",
  connected: "connected",
  reconnecting: "reconnecting…",
  disconnected: "disconnected",
};
const HUES = 8;
// Digests with more joins and leaves than this update the list without a line each.
const FEW_EVENTS = 5;

const $ = (id) => document.getElementById(id);
// The server renders where the page's socket is (under the chat's prefix)
// and, for a signed-in user, the name the chat knows them by.
const SOCKET_PATH = document.body.dataset.socket || "/ws";
const IDENTIFIED = Boolean(document.body.dataset.you);
const USER = document.body.dataset.user || null;
const API = SOCKET_PATH.replace(/\/ws$/, "") + "/api";
const ui = {
  chooser: $("chooser"),
  room: $("room"),
  name: $("name"),
  status: $("status"),
  toggle: $("toggle"),
  problem: $("problem"),
  messages: $("messages"),
  jump: $("jump"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  online: $("online"),
  users: $("users"),
  notice: $("notice"),
};

const state = {
  client: null,
  wanted: true,
  room: DEFAULT_ROOM,
  // The other user of a DM being opened (its room's name comes with the welcome), else null.
  dm: null,
  conversations: null,
  changes: null,
  name: "",
  shown: new Set(),
  // The list item of each message of ours that waits for its ack, by client id,
  // and the id of a broadcast that took an item's place before its ack came.
  items: new Map(),
  adopted: new Map(),
  noticeTimer: null,
  // Scrolling back: a page request in flight, and whether the first message is shown.
  loading: false,
  beginning: false,
  settle: null,
};

function load(key) {
  try {
    return localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // Storage can be disabled (private mode, policy); the chooser still works.
  }
}

function text(value) {
  return typeof value === "string" ? value : "";
}

function make(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

function hue(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return "hue-" + (hash % HUES);
}

function setStatus(status) {
  ui.status.textContent = STATUS_TEXT[status];
  ui.status.dataset.state = status;
  document.body.dataset.state = status;
  // Sending is never disabled: while disconnected a message waits in the outbox.
  ui.toggle.textContent = state.wanted ? "Disconnect" : "Connect";
}

function notify(message) {
  if (!message) return;
  ui.notice.textContent = message;
  ui.notice.hidden = false;
  clearTimeout(state.noticeTimer);
  state.noticeTimer = setTimeout(() => {
    ui.notice.hidden = true;
  }, NOTICE_MS);
}

function showProblem(message) {
  ui.problem.textContent = message;
  ui.problem.hidden = !message;
}

// A client for the chosen room and name; the handlers of a client replaced by another say nothing more.
function open(since) {
  const client = new ChatClient(SOCKET_PATH, {
    room: state.dm ? undefined : state.room,
    dm: state.dm || undefined,
    name: IDENTIFIED ? undefined : state.name,
    since,
    version: 3,
    connect: false,
  });
  state.client = client;
  const mine = (handler) => (...args) => {
    if (client === state.client) handler(...args);
  };
  client.on("state", mine(changed));
  client.on("message", mine(chat));
  client.on("change", mine((frame) => state.changes.change(frame)));
  client.on("presence", mine(presence));
  client.on("notice", mine((frame) => notify(text(frame.message) || text(frame.code))));
  client.on("outbox", mine(pending));
  client.on("ack", mine(acked));
  client.on("refused", mine((error, entry) => fail(entry, error.message)));
  showQueued();
  client.connect();
}

function changed(change) {
  if (change.state === "disconnected") {
    if (change.final) {
      state.wanted = false;
      showProblem(change.reason || CLOSE_TEXT[change.code] || "");
    }
    setUsers([], null);
  } else if (change.state === "reconnecting") {
    notify(change.reason);
  }
  setStatus(change.state);
}

function chat(frame) {
  const item = messageItem(frame);
  if (item === null) return;
  append(item);
  if (item.classList.contains("own") && item.dataset.id) adopt(item);
  state.conversations?.message(frame);
}

// The broadcast of a message of ours that waits for its ack takes the place of its placeholder;
// the ack, when it comes, says whether it was that message (the same text may be sent twice).
function adopt(item) {
  const said = item.querySelector(".text").textContent;
  const entry = state.client.pending().find((candidate) => candidate.sent && state.items.has(candidate.cid)
    && candidate.text === said && !candidate.body.type);
  if (entry === undefined) return;
  state.adopted.set(entry.cid, item.dataset.id);
  // Its clock moves along: the message is sent once the server acks it, not when it is seen.
  const clock = state.items.get(entry.cid).querySelector(".sending");
  if (clock !== null) item.querySelector(".meta").append(clock);
  state.items.get(entry.cid).remove();
  state.items.delete(entry.cid);
}

// Build a chat frame's list item, or return null for another room's or one already shown.
function messageItem(frame) {
  if (typeof frame.room === "string" && frame.room !== state.room) return null;
  const item = make("li", "message");
  item.dataset.testid = "message";
  if (typeof frame.id === "string") {
    if (state.shown.has(frame.id)) return null;
    state.shown.add(frame.id);
    item.dataset.id = frame.id;
  }
  const name = text(frame.name);
  const own = IDENTIFIED ? USER !== null && frame.user === USER : name && name === state.client.you && !frame.user;
  if (own) item.classList.add("own");
  // Only a signed-in sender's frames carry user: a guest's name is whatever it typed.
  if (typeof frame.user !== "string") item.classList.add("guest");
  const meta = make("div", "meta");
  if (name) meta.append(make("span", "who " + hue(name), name));
  const when = Number.isFinite(frame.ts) ? new Date(frame.ts) : new Date();
  const time = make("time", "when", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  time.dateTime = when.toISOString();
  time.title = when.toLocaleString();
  meta.append(time);
  item.append(meta, make("p", "text", text(frame.message)));
  if (item.dataset.id) state.changes.decorate(item, frame);
  return item;
}

function presence(frame) {
  const event = frame.event;
  const name = text(frame.name);
  const client = state.client;
  if (event === "welcome") {
    // A DM's room is named by the server; a room being typed stays in its field.
    if (typeof frame.room === "string") {
      state.room = frame.room;
      if (document.activeElement !== ui.room) ui.room.value = frame.room;
    }
    state.dm = null;
    // Remember only what the server accepted, so a refused name is not
    // tried again on the next visit.
    save("chat.room", state.room);
    if (client.you) {
      state.name = client.you;
      if (!IDENTIFIED) {
        if (document.activeElement !== ui.name) ui.name.value = client.you;
        save("chat.name", client.you);
      }
    }
    setUsers(client.users, client.online);
    state.conversations?.welcomed(client);
  } else if (event === "join" || event === "leave") {
    setUsers(client.users, client.online);
    system(text(frame.message) || name + (event === "join" ? " joined" : " left"), event);
  } else if (event === "presence") {
    setUsers(client.users, client.online);
    const joins = Array.isArray(frame.joins) ? frame.joins.filter((who) => typeof who === "string") : [];
    const leaves = Array.isArray(frame.leaves) ? frame.leaves.filter((who) => typeof who === "string") : [];
    if (joins.length + leaves.length <= FEW_EVENTS) {
      for (const who of joins) system(who + " joined", "join");
      for (const who of leaves) system(who + " left", "leave");
    }
  } else if (event === "gap") {
    const missed = frame.missed;
    const label = Number.isInteger(missed)
      ? missed + (missed === 1 ? " message missed" : " messages missed")
      : "some messages missed";
    const marker = make("li", "marker", label);
    marker.dataset.testid = "gap";
    append(marker);
  } else if (event === "read" || event === "typing") {
    state.conversations?.event(frame);
  } else if (text(frame.message)) {
    system(frame.message, "info");
  }
}

function system(message, kind) {
  const item = make("li", "event event-" + kind, message);
  item.dataset.testid = "event";
  append(item);
}

function setUsers(users, online) {
  const sorted = users.slice().sort((a, b) => a.localeCompare(b));
  ui.users.replaceChildren(
    ...sorted.map((user) => {
      const item = make("li", "user");
      item.append(make("span", "dot " + hue(user)), make("span", "user-name", user));
      return item;
    }),
  );
  const count = Number.isInteger(online) ? online : users.length;
  ui.online.textContent = String(count);
  if (count > sorted.length) ui.users.append(make("li", "user user-more", "and " + (count - sorted.length) + " more"));
}

function nearBottom() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight <= NEAR_BOTTOM_PX;
}

function toBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
}

// Add an item at the end, before the messages still waiting for their ack.
function append(item) {
  const stick = nearBottom();
  const list = ui.messages;
  list.insertBefore(item, list.querySelector(".message.pending"));
  if (list.childElementCount > MAX_ITEMS) {
    keepPlace(stick, () => {
      while (list.childElementCount > MAX_ITEMS) {
        const oldest = list.firstElementChild;
        if (oldest.dataset.id) state.shown.delete(oldest.dataset.id);
        oldest.remove();
      }
    });
    // What was trimmed can be paged back in.
    state.beginning = false;
  }
  if (stick) toBottom();
  else ui.jump.hidden = false;
  clearTimeout(state.settle);
  state.settle = setTimeout(nearTop, SETTLE_MS);
}

// Change the list above what is on screen without moving what is on screen.
function keepPlace(stick, change) {
  const list = ui.messages;
  const height = list.scrollHeight;
  const top = list.scrollTop;
  change();
  if (!stick) list.scrollTop = top + list.scrollHeight - height;
}

function clearRoom() {
  ui.messages.replaceChildren();
  ui.jump.hidden = true;
  state.shown.clear();
  state.items.clear();
  state.adopted.clear();
  state.beginning = false;
  clearTimeout(state.settle);
}

// Scrolling back: at the top of the list, ask for the page before the oldest message shown.
function nearTop() {
  if (state.beginning || state.loading || ui.messages.scrollTop > NEAR_TOP_PX) return;
  const oldest = ui.messages.querySelector(".message[data-id]");
  if (oldest === null) return;
  const client = state.client;
  state.loading = true;
  client.history({ before: oldest.dataset.id, limit: PAGE_SIZE })
    .then((page) => {
      if (client === state.client) older(page);
    })
    .catch(() => {
      // Scrolling to the top again tries again.
    })
    .finally(() => {
      state.loading = false;
    });
}

function older(page) {
  const items = page.messages.map(messageItem).filter((item) => item !== null);
  const list = ui.messages;
  if (items.length) keepPlace(false, () => list.prepend(...items));
  if (page.more === false) {
    state.beginning = true;
    const marker = make("li", "marker", "beginning of the room");
    marker.dataset.testid = "beginning";
    list.prepend(marker);
  }
}

function join(event) {
  event.preventDefault();
  const room = ui.room.value.trim() || DEFAULT_ROOM;
  const name = IDENTIFIED ? state.name : ui.name.value.trim();
  ui.room.value = room;
  if (!IDENTIFIED) ui.name.value = name;
  const changedRoom = room !== state.room;
  if (!changedRoom && name === state.name && state.wanted) return;
  const since = changedRoom ? null : state.client.lastId;
  state.client.close();
  if (changedRoom) clearRoom();
  state.room = room;
  state.name = name;
  state.wanted = true;
  showProblem("");
  setUsers([], null);
  open(since);
}

// Open a conversation the sidebar names: {room} or {dm: the other user's id}.
function openPlace(place) {
  if (place.room === state.room && state.wanted) return;
  state.client.close();
  clearRoom();
  state.room = place.room || null;
  state.dm = place.dm || null;
  state.wanted = true;
  showProblem("");
  setUsers([], null);
  open(null);
}

function send(event) {
  event.preventDefault();
  const message = ui.input.value;
  if (!message.trim()) return;
  const framed = JSON.stringify({ text: message, cid: "0".repeat(32) });
  if (new TextEncoder().encode(framed).length > MAX_MESSAGE_BYTES) {
    notify("That message is too long to send.");
    return;
  }
  // A refusal is shown on the message (the client's "refused" event); an edit's or a reply's in the notice line.
  if (!state.changes.submit(message)) state.client.send(message).catch(() => {});
  ui.input.value = "";
  toBottom();
}

// A message of ours waiting for its ack, shown with a clock.
function pending(entry) {
  if (entry.body.type || state.items.has(entry.cid)) return;
  const item = make("li", "message own pending");
  item.dataset.testid = "message";
  item.dataset.state = "pending";
  const meta = make("div", "meta");
  const name = state.client.you || state.name;
  if (name) meta.append(make("span", "who " + hue(name), name));
  const when = new Date(entry.at || Date.now());
  const time = make("time", "when", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  time.dateTime = when.toISOString();
  const clock = make("span", "sending", "🕓");
  clock.title = "sending…";
  clock.dataset.testid = "sending";
  meta.append(time, clock);
  item.append(meta, make("p", "text", entry.text));
  ui.messages.append(item);
  state.items.set(entry.cid, item);
  return item;
}

function showQueued() {
  for (const entry of state.client.pending()) pending(entry);
}

function acked(ack, entry) {
  const adopted = state.adopted.get(ack.cid);
  state.adopted.delete(ack.cid);
  if (adopted !== undefined) ui.messages.querySelector('.message[data-id="' + adopted + '"] .sending')?.remove();
  if (entry.body.type || adopted === ack.id) return;
  let item = state.items.get(ack.cid);
  state.items.delete(ack.cid);
  if (ui.messages.querySelector('.message[data-id="' + ack.id + '"]') !== null) {
    // Its broadcast came first and is in its place.
    item?.remove();
    return;
  }
  item ??= pending(entry);
  state.shown.add(ack.id);
  item.dataset.id = ack.id;
  item.dataset.state = "sent";
  item.classList.remove("pending");
  item.querySelector(".sending")?.remove();
  state.changes.decorate(item, { user: USER, reply_to: entry.body.reply_to });
}

function fail(entry, reason) {
  notify(reason);
  const item = state.items.get(entry.cid);
  state.items.delete(entry.cid);
  if (!item) return;
  item.classList.remove("pending");
  item.classList.add("failed");
  item.dataset.state = "failed";
  item.querySelector(".sending")?.remove();
  const why = make("p", "why", reason);
  why.dataset.testid = "refused";
  item.append(why);
}

function toggle() {
  if (state.wanted) {
    state.wanted = false;
    state.client.close();
    return;
  }
  state.wanted = true;
  showProblem("");
  state.client.connect();
}

function start() {
  const room = load("chat.room");
  state.room = ROOM_PATTERN.test(room) ? room : DEFAULT_ROOM;
  state.name = IDENTIFIED ? document.body.dataset.you : load("chat.name").trim();
  ui.room.value = state.room;
  if (!IDENTIFIED) ui.name.value = state.name;
  state.changes = new Changes(ui.messages, ui.input, () => state.client, IDENTIFIED ? USER : null, notify);
  ui.chooser.addEventListener("submit", join);
  ui.composer.addEventListener("submit", send);
  if (IDENTIFIED && USER !== null) {
    state.conversations = new Conversations(API, USER, openPlace);
    ui.input.addEventListener("input", () => state.conversations.typed());
  }
  ui.toggle.addEventListener("click", toggle);
  ui.jump.addEventListener("click", toBottom);
  ui.messages.addEventListener("scroll", () => {
    if (nearBottom()) ui.jump.hidden = true;
    nearTop();
  });
  open(null);
}

start();
