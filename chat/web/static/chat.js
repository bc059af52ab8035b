"use strict";

(() => {
  const BASE_DELAY_MS = 500;
  const MAX_DELAY_MS = 30000;
  const STABLE_AFTER_MS = 10000;
  const MIN_SILENCE_MS = 2000;
  const NOTICE_MS = 4000;
  const NEAR_BOTTOM_PX = 80;
  const MAX_ITEMS = 1000;
  // The server's default CHAT_MAX_MESSAGE_BYTES; a bigger frame would be
  // closed with 1009, which ends the session instead of failing one message.
  const MAX_MESSAGE_BYTES = 64 * 1024;
  const DEFAULT_ROOM = "lobby";
  // Messages not yet acknowledged, kept across reloads: [{room, cid, text, at}].
  const QUEUE_KEY = "chat.queue";
  // Refused for now (rate limit, chat unavailable): sent again after this long.
  const RESEND_MS = { rate_limited: 1000, unavailable: 2000 };
  // Refused for good: shown under the message and not sent again.
  const REFUSED = new Set(["rejected", "empty"]);
  const PAGE_SIZE = 50;
  const NEAR_TOP_PX = 40;
  const SETTLE_MS = 200;
  const ROOM_PATTERN = /^[a-z0-9_-]{1,32}$/;
  // Retrying cannot help these: a binary frame, a policy refusal (bad
  // parameters, flooding, signed out), a message too big, no identity, a room
  // not allowed. Everything else (1001 restart, 1006 lost, 1011 liveness,
  // 1013 try again) is retried with backoff.
  const NO_RETRY = new Set([1003, 1008, 1009, 4401, 4403]);
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
  // The server lists at most this many names (CHAT_PRESENCE_LIST_LIMIT's default).
  const MAX_LISTED = 200;
  // Digests with more joins and leaves than this update the list without a line each.
  const FEW_EVENTS = 5;

  const $ = (id) => document.getElementById(id);
  // The server renders where the page's socket is (under the chat's prefix)
  // and, for a signed-in user, the name the chat knows them by.
  const SOCKET_PATH = document.body.dataset.socket || "/ws";
  // The HTTP API sits beside the socket, under the same prefix.
  const API_PATH = SOCKET_PATH.replace(/\/ws$/, "") + "/api";
  const IDENTIFIED = Boolean(document.body.dataset.you);
  const USER = document.body.dataset.user || null;
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
    socket: null,
    wanted: true,
    attempt: 0,
    retry: null,
    stable: null,
    watchdog: null,
    beatAt: 0,
    beatGap: 0,
    room: DEFAULT_ROOM,
    name: "",
    you: null,
    lastId: null,
    shown: new Set(),
    users: [],
    noticeTimer: null,
    // Sending: what waits for an ack, and whether this socket was welcomed.
    queue: [],
    welcomed: false,
    resend: null,
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

  function parseId(value) {
    if (typeof value === "string" && /^\d{1,20}$/.test(value)) return BigInt(value);
    if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
    return null;
  }

  function hue(name) {
    let hash = 0;
    for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return "hue-" + (hash % HUES);
  }

  function socketUrl() {
    // Protocol v2: presence arrives as one digest per room per interval.
    const params = [["v", "2"], ["room", state.room]];
    if (state.name && !IDENTIFIED) params.push(["name", state.name]);
    if (state.lastId !== null) params.push(["since", state.lastId.toString()]);
    const query = params.map(([key, value]) => key + "=" + encodeURIComponent(value)).join("&");
    return (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + SOCKET_PATH + "?" + query;
  }

  function setStatus(status) {
    ui.status.textContent = STATUS_TEXT[status];
    ui.status.dataset.state = status;
    document.body.dataset.state = status;
    // Sending is never disabled: while disconnected a message waits in the queue.
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

  function connect() {
    clearTimeout(state.retry);
    state.retry = null;
    state.beatAt = 0;
    state.beatGap = 0;
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    state.welcomed = false;
    setStatus(state.attempt === 0 ? "connecting" : "reconnecting");
    socket.onopen = () => {
      if (socket !== state.socket) return;
      setStatus("connected");
      state.stable = setTimeout(() => {
        state.attempt = 0;
      }, STABLE_AFTER_MS);
    };
    socket.onmessage = (event) => {
      if (socket === state.socket) receive(event.data);
    };
    socket.onclose = (event) => {
      if (socket !== state.socket) return;
      if (event.code === 1009) refuseBiggest(socket, event.reason || CLOSE_TEXT[1009]);
      closed(event);
    };
  }

  function detach() {
    const socket = state.socket;
    state.socket = null;
    clearTimeout(state.stable);
    clearTimeout(state.watchdog);
    clearTimeout(state.retry);
    state.retry = null;
    // The old socket's handlers check that it is still the current one, so
    // nothing it says after this point reaches the page.
    if (socket !== null) socket.close(1000);
  }

  function reconnectLater() {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** state.attempt);
    state.attempt += 1;
    setStatus("reconnecting");
    state.retry = setTimeout(connect, Math.random() * ceiling);
  }

  function stop() {
    state.wanted = false;
    detach();
    setUsers([], null);
    setStatus("disconnected");
  }

  function closed(event) {
    state.socket = null;
    clearTimeout(state.stable);
    clearTimeout(state.watchdog);
    if (NO_RETRY.has(event.code)) {
      showProblem(event.reason || CLOSE_TEXT[event.code]);
      stop();
      return;
    }
    if (!state.wanted) {
      stop();
      return;
    }
    notify(event.reason);
    reconnectLater();
  }

  function listen() {
    clearTimeout(state.watchdog);
    if (state.beatGap === 0) return;
    state.watchdog = setTimeout(() => {
      if (!state.wanted || state.socket === null) return;
      // Heartbeats stopped, so the connection is most likely dead without
      // the browser knowing it (sleep, network change): start afresh.
      detach();
      reconnectLater();
    }, Math.max(3 * state.beatGap, MIN_SILENCE_MS));
  }

  function receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.state === 1) {
      const now = Date.now();
      // The longest gap seen, so that two heartbeats delivered together
      // after a stall do not make the watchdog impatient.
      if (state.beatAt) state.beatGap = Math.max(state.beatGap, now - state.beatAt);
      state.beatAt = now;
    }
    listen();
    if (frame.state === 2) chat(frame);
    else if (frame.state === 3) presence(frame);
    else if (frame.state === 4 && typeof frame.cid === "string") refused(frame);
    else if (frame.state === 4) notify(text(frame.message) || text(frame.code));
    else if (frame.state === 5) acked(frame);
  }

  function chat(frame) {
    const item = messageItem(frame);
    if (item === null) return;
    append(item);
    if (item.classList.contains("own") && item.dataset.id) adopt(item);
  }

  // The broadcast of a message of ours that waits for its ack takes the place of its placeholder;
  // the ack, when it comes, says whether it was that message (the same text may be sent twice).
  function adopt(item) {
    const said = item.querySelector(".text").textContent;
    const entry = state.queue.find((candidate) => candidate.room === state.room && candidate.item
      && candidate.socket === state.socket && candidate.text === said);
    if (entry === undefined) return;
    entry.adopted = item.dataset.id;
    entry.item.remove();
    entry.item = null;
  }

  // Build a chat frame's list item, or return null for another room's or one already shown.
  function messageItem(frame) {
    if (typeof frame.room === "string" && frame.room !== state.room) return null;
    const id = parseId(frame.id);
    const item = make("li", "message");
    item.dataset.testid = "message";
    if (id !== null) {
      const key = id.toString();
      if (state.lastId === null || id > state.lastId) state.lastId = id;
      if (state.shown.has(key)) return null;
      state.shown.add(key);
      item.dataset.id = key;
    }
    const name = text(frame.name);
    const own = IDENTIFIED ? USER !== null && frame.user === USER : name && name === state.you;
    if (own) item.classList.add("own");
    const meta = make("div", "meta");
    if (name) meta.append(make("span", "who " + hue(name), name));
    const when = Number.isFinite(frame.ts) ? new Date(frame.ts) : new Date();
    const time = make("time", "when", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    meta.append(time);
    item.append(meta, make("p", "text", text(frame.message)));
    return item;
  }

  function presence(frame) {
    const event = frame.event;
    const name = text(frame.name);
    if (event === "welcome") {
      // Remember only what the server accepted, so a refused name is not
      // tried again on the next visit.
      save("chat.room", state.room);
      if (text(frame.you)) {
        state.you = frame.you;
        state.name = frame.you;
        if (!IDENTIFIED) {
          if (document.activeElement !== ui.name) ui.name.value = frame.you;
          save("chat.name", frame.you);
        }
      }
      const users = Array.isArray(frame.users) ? frame.users.filter((user) => typeof user === "string") : [];
      setUsers(users, frame.online);
      state.welcomed = true;
      flush();
    } else if (event === "join") {
      // The count is the truth: a join the welcome's list already holds
      // (this client's own, or one that raced with it) is not added twice.
      if (!Number.isInteger(frame.online) || state.users.length < frame.online) state.users.push(name);
      setUsers(state.users, frame.online);
      system(text(frame.message) || name + " joined", "join");
    } else if (event === "leave") {
      const index = state.users.indexOf(name);
      const extra = !Number.isInteger(frame.online) || state.users.length > frame.online;
      if (index >= 0 && extra) state.users.splice(index, 1);
      setUsers(state.users, frame.online);
      system(text(frame.message) || name + " left", "leave");
    } else if (event === "presence") {
      digest(frame);
    } else if (event === "gap") {
      const missed = frame.missed;
      const label = Number.isInteger(missed)
        ? missed + (missed === 1 ? " message missed" : " messages missed")
        : "some messages missed";
      const marker = make("li", "marker", label);
      marker.dataset.testid = "gap";
      append(marker);
    } else if (text(frame.message)) {
      system(frame.message, "info");
    }
  }

  // A digest of joins and leaves: one update of the list per digest, and a
  // line per name only while there are few of them (a big room just counts).
  function digest(frame) {
    const names = (list) => (Array.isArray(list) ? list.filter((name) => typeof name === "string") : []);
    const joins = names(frame.joins);
    const leaves = names(frame.leaves);
    const users = state.users.slice();
    for (const name of leaves) {
      const index = users.indexOf(name);
      if (index >= 0) users.splice(index, 1);
    }
    const room = Number.isInteger(frame.online) ? frame.online : users.length + joins.length;
    for (const name of joins) {
      if (!users.includes(name) && users.length < Math.min(room, MAX_LISTED)) users.push(name);
    }
    setUsers(users, frame.online);
    if (joins.length + leaves.length <= FEW_EVENTS) {
      for (const name of joins) system(name + " joined", "join");
      for (const name of leaves) system(name + " left", "leave");
    }
  }

  function system(message, kind) {
    const item = make("li", "event event-" + kind, message);
    item.dataset.testid = "event";
    append(item);
  }

  function setUsers(users, online) {
    state.users = users.slice();
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
    state.lastId = null;
    state.shown.clear();
    state.beginning = false;
    clearTimeout(state.settle);
  }

  // Scrolling back: at the top of the list, ask the API for the page before the oldest message shown.
  function nearTop() {
    if (state.beginning || state.loading || ui.messages.scrollTop > NEAR_TOP_PX) return;
    const oldest = ui.messages.querySelector(".message[data-id]");
    if (oldest === null) return;
    const room = state.room;
    const url = API_PATH + "/rooms/" + encodeURIComponent(room) + "/messages?limit=" + PAGE_SIZE
      + "&before=" + oldest.dataset.id;
    state.loading = true;
    fetch(url, { headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))))
      .then((page) => {
        if (room === state.room) older(page);
      })
      .catch(() => {
        // Scrolling to the top again tries again.
      })
      .finally(() => {
        state.loading = false;
      });
  }

  function older(page) {
    const frames = Array.isArray(page.messages) ? page.messages : [];
    const items = frames.map(messageItem).filter((item) => item !== null);
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
    const changed = room !== state.room || name !== state.name;
    if (!changed && state.wanted) return;
    if (room !== state.room) clearRoom();
    state.room = room;
    if (ui.messages.childElementCount === 0) showQueued();
    state.name = name;
    state.you = null;
    state.wanted = true;
    state.attempt = 0;
    showProblem("");
    detach();
    setUsers([], null);
    connect();
  }

  function send(event) {
    event.preventDefault();
    const message = ui.input.value;
    if (!message.trim()) return;
    const entry = { room: state.room, cid: newCid(), text: message, at: Date.now() };
    if (new TextEncoder().encode(wire(entry)).length > MAX_MESSAGE_BYTES) {
      notify("That message is too long to send.");
      return;
    }
    state.queue.push(entry);
    saveQueue();
    pending(entry);
    ui.input.value = "";
    toBottom();
    flush();
  }

  // Sending (protocol v2): every message has a client id, waits in the queue
  // (shown with a clock) until the server acks it, and is sent again with the
  // same id on every new connection until then, so it is delivered once.
  function newCid() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  function wire(entry) {
    return JSON.stringify({ text: entry.text, cid: entry.cid });
  }

  function saveQueue() {
    save(QUEUE_KEY, JSON.stringify(state.queue.map(({ room, cid, text, at }) => ({ room, cid, text, at }))));
  }

  function loadQueue() {
    let stored;
    try {
      stored = JSON.parse(load(QUEUE_KEY) || "[]");
    } catch {
      stored = [];
    }
    const valid = (entry) => entry && typeof entry.cid === "string" && typeof entry.text === "string"
      && typeof entry.room === "string";
    state.queue = Array.isArray(stored) ? stored.filter(valid) : [];
  }

  function pending(entry) {
    const item = make("li", "message own pending");
    item.dataset.testid = "message";
    item.dataset.state = "pending";
    const meta = make("div", "meta");
    const name = state.you || state.name;
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
    entry.item = item;
  }

  function showQueued() {
    for (const entry of state.queue) if (entry.room === state.room) pending(entry);
  }

  function flush() {
    clearTimeout(state.resend);
    const socket = state.socket;
    if (socket === null || socket.readyState !== WebSocket.OPEN || !state.welcomed) return;
    for (const entry of state.queue) {
      if (entry.room !== state.room || entry.socket === socket) continue;
      entry.socket = socket;
      socket.send(wire(entry));
    }
  }

  function take(cid) {
    const index = state.queue.findIndex((entry) => entry.cid === cid);
    if (index < 0) return null;
    const [entry] = state.queue.splice(index, 1);
    saveQueue();
    return entry;
  }

  function acked(frame) {
    const entry = take(text(frame.ack));
    const id = parseId(frame.id);
    if (entry === null || id === null) return;
    const key = id.toString();
    if (entry.adopted === key) return;
    if (ui.messages.querySelector('.message[data-id="' + key + '"]') !== null) {
      // Its broadcast came first and is in its place.
      entry.item?.remove();
      return;
    }
    if (!entry.item) pending(entry);
    const item = entry.item;
    // Only frames move lastId (the since of the next connection): an ack can overtake a message before it.
    state.shown.add(key);
    item.dataset.id = key;
    item.dataset.state = "sent";
    item.classList.remove("pending");
    item.querySelector(".sending")?.remove();
  }

  function refused(frame) {
    const code = text(frame.code);
    const entry = state.queue.find((candidate) => candidate.cid === frame.cid);
    if (entry === undefined) return;
    if (code in RESEND_MS) {
      notify(text(frame.message));
      entry.socket = null;
      clearTimeout(state.resend);
      state.resend = setTimeout(flush, RESEND_MS[code]);
      return;
    }
    if (!REFUSED.has(code)) return;
    const reason = text(frame.message) || "The server did not accept this message.";
    notify(reason);
    take(entry.cid);
    fail(entry, reason);
  }

  function refuseBiggest(socket, reason) {
    const sent = state.queue.filter((entry) => entry.socket === socket);
    if (!sent.length) return;
    const biggest = sent.reduce((a, b) => (b.text.length > a.text.length ? b : a));
    take(biggest.cid);
    fail(biggest, reason);
  }

  function fail(entry, reason) {
    const item = entry.item;
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
      stop();
      return;
    }
    state.wanted = true;
    state.attempt = 0;
    showProblem("");
    connect();
  }

  function start() {
    const room = load("chat.room");
    state.room = ROOM_PATTERN.test(room) ? room : DEFAULT_ROOM;
    state.name = IDENTIFIED ? document.body.dataset.you : load("chat.name").trim();
    ui.room.value = state.room;
    if (!IDENTIFIED) ui.name.value = state.name;
    ui.chooser.addEventListener("submit", join);
    ui.composer.addEventListener("submit", send);
    ui.toggle.addEventListener("click", toggle);
    ui.jump.addEventListener("click", toBottom);
    ui.messages.addEventListener("scroll", () => {
      if (nearBottom()) ui.jump.hidden = true;
      nearTop();
    });
    loadQueue();
    showQueued();
    window.addEventListener("online", () => {
      if (state.retry !== null) connect();
    });
    connect();
  }

  start();
})();
