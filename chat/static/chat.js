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
    ui.send.disabled = status !== "connected";
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
      if (socket === state.socket) closed(event);
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
    else if (frame.state === 4) notify(text(frame.message) || text(frame.code));
  }

  function chat(frame) {
    if (typeof frame.room === "string" && frame.room !== state.room) return;
    const id = parseId(frame.id);
    const item = make("li", "message");
    item.dataset.testid = "message";
    if (id !== null) {
      const key = id.toString();
      if (state.shown.has(key)) return;
      state.shown.add(key);
      if (state.lastId === null || id > state.lastId) state.lastId = id;
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
    append(item);
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

  function append(item) {
    const stick = nearBottom();
    ui.messages.append(item);
    while (ui.messages.childElementCount > MAX_ITEMS) {
      const oldest = ui.messages.firstElementChild;
      if (oldest.dataset.id) state.shown.delete(oldest.dataset.id);
      oldest.remove();
    }
    if (stick) toBottom();
    else ui.jump.hidden = false;
  }

  function clearRoom() {
    ui.messages.replaceChildren();
    ui.jump.hidden = true;
    state.lastId = null;
    state.shown.clear();
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
    const socket = state.socket;
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      notify("Not connected: the message was not sent.");
      return;
    }
    if (new TextEncoder().encode(message).length > MAX_MESSAGE_BYTES) {
      notify("That message is too long to send.");
      return;
    }
    socket.send(message);
    ui.input.value = "";
    toBottom();
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
    });
    window.addEventListener("online", () => {
      if (state.retry !== null) connect();
    });
    connect();
  }

  start();
})();
