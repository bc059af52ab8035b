// The chat's JavaScript client: one ES module, no dependencies, for browsers and Node.
// It owns the connection (jittered reconnect, resume with since, a heartbeat watchdog),
// the outbox (client ids, acks, resends: localStorage in a browser, memory elsewhere),
// presence (welcome, joins, leaves, digests), history paging and protocol v3's frames.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
const STABLE_AFTER_MS = 10000;
const MIN_SILENCE_MS = 2000;
const TYPING_EVERY_MS = 2000;
// A handshake the server has not answered with a frame by then is given up and tried again
// (a server that is shutting down can accept a connection it never answers).
const CONNECT_TIMEOUT_MS = 10000;
// The server lists at most this many names (CHAT_PRESENCE_LIST_LIMIT's default).
const MAX_LISTED = 200;
// Refused for now (rate limit, chat unavailable): sent again after this long.
const RESEND_MS = { rate_limited: 1000, unavailable: 2000 };
// Retrying cannot help these: a binary frame, a policy refusal (bad parameters,
// flooding, signed out), a message too big, no identity, a room not allowed.
export const NO_RETRY = new Set([1003, 1008, 1009, 4401, 4403]);
const OPEN = 1;
// The protocol version spoken unless the options say otherwise.
export const VERSION = 3;

/** A message or change the server refused for good (state 4 with its cid, or a 1009 close). */
export class Refused extends Error {
  constructor(code, message, entry) {
    super(message || code);
    this.name = "Refused";
    this.code = code;
    this.entry = entry;
  }
}

function parseId(value) {
  if (typeof value === "string" && /^\d{1,20}$/.test(value)) return BigInt(value);
  if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  return null;
}

function newCid() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// A guest's sender key: its client ids are its own, and it is kept beside the outbox so that a resend after a
// reload is still recognised.
function senderKey(storage, name) {
  let key = "";
  try {
    key = (storage && storage.getItem(name)) || "";
  } catch {
    // Storage can be disabled: a key of this client's own life still keeps its ids apart from others'.
  }
  if (!/^[0-9a-f]{32}$/.test(key)) {
    key = newCid();
    try {
      if (storage) storage.setItem(name, key);
    } catch {
      // As above.
    }
  }
  return key;
}

function names(list) {
  return Array.isArray(list) ? list.filter((name) => typeof name === "string") : [];
}

// localStorage where there is a window, memory elsewhere (a Node process has no page to reload).
function defaultStorage() {
  try {
    if (typeof window !== "undefined" && window.localStorage) return window.localStorage;
  } catch {
    // Storage can be disabled (private mode, policy): keep the outbox in memory.
  }
  return null;
}

function socketUrl(url) {
  if (/^wss?:/.test(url)) return url;
  if (/^https?:/.test(url)) return url.replace(/^http/, "ws");
  const page = globalThis.location;
  if (!page) throw new TypeError("a relative chat URL needs a page: give ws://host/ws");
  return (page.protocol === "https:" ? "wss:" : "ws:") + "//" + page.host + url;
}

export class ChatClient {
  /**
   * Connect to the chat socket at url (ws://host/ws, or /ws on a page) and keep connected until close().
   * Options: room, dm, name, token, key (a guest's sender key), since, version, WebSocket, storage, storageKey,
   * fetch, connect (true),
   * connectTimeout (ms).
   */
  constructor(url, options = {}) {
    this.url = socketUrl(url);
    this.api = this.url.replace(/^ws/, "http").replace(/\/ws$/, "") + "/api";
    this.dm = options.dm || null;
    this.room = this.dm ? null : options.room || "lobby";
    // The outbox's entries are kept per place: a room, or a DM by the other user's id (its room is told by the welcome).
    this.place = this.dm ? "@" + this.dm : this.room;
    this.name = options.name || "";
    this.token = options.token || null;
    this.version = options.version || VERSION;
    if (this.version < 2) throw new RangeError("the client speaks protocol v2 or v3 (v1 has no client ids)");
    this.lastId = options.since === undefined || options.since === null ? null : String(options.since);
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket here: pass one, e.g. {WebSocket} from the ws package");
    this.fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    this.storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.storageKey = options.storageKey || "chat.queue";
    this.key = options.key || senderKey(this.storage, this.storageKey + ".sender");
    this.connectTimeout = options.connectTimeout || CONNECT_TIMEOUT_MS;
    this.state = "disconnected";
    this.welcome = null;
    this.you = null;
    this.users = [];
    this.online = 0;
    this.outbox = [];
    this._handlers = new Map();
    this._waiting = new Map();
    this._socket = null;
    this._wanted = false;
    this._welcomed = false;
    this._attempt = 0;
    this._timers = { retry: null, stable: null, watchdog: null, resend: null };
    this._beatAt = 0;
    this._beatGap = 0;
    this._typedAt = 0;
    this._load();
    this._wake = () => this._revive();
    if (options.connect !== false) this.connect();
  }

  /** Call handler for every event of that name; return a function that stops it. */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  /** Stop calling handler for event. */
  off(event, handler) {
    this._handlers.get(event)?.delete(handler);
  }

  /** Open the connection (again, after close()), resuming after the last id seen. */
  connect() {
    if (this._wanted && this._socket !== null) return;
    this._wanted = true;
    this._attempt = 0;
    this._listenToPage(true);
    this._open();
  }

  /** Close the connection and stay closed; what waits in the outbox is kept. */
  close() {
    this._wanted = false;
    this._listenToPage(false);
    this._detach();
    this.users = [];
    this.online = 0;
    this._setState("disconnected", {});
  }

  /** Send a chat message once; resolve to the ack {id, cid} (reject with Refused when refused for good). */
  send(text, { replyTo } = {}) {
    const body = { text };
    if (replyTo !== undefined && replyTo !== null) {
      this._needs(3, "replyTo");
      body.reply_to = String(replyTo);
    }
    return this._queue(body, text);
  }

  /** Edit one of your messages; resolve to the ack of the change. */
  edit(id, text) {
    this._needs(3, "edit");
    return this._queue({ type: "edit", id: String(id), text }, text);
  }

  /** Delete one of your messages; resolve to the ack of the change. */
  delete(id) {
    this._needs(3, "delete");
    return this._queue({ type: "delete", id: String(id) }, "");
  }

  /** React to a message with emoji (again to take it back); resolve to the ack of the change. */
  react(id, emoji) {
    this._needs(3, "react");
    return this._queue({ type: "react", id: String(id), emoji }, emoji);
  }

  /** Tell the room you read up to message id (best effort: not queued while offline). */
  read(id) {
    this._needs(3, "read");
    return this._sendNow({ type: "read", id: String(id) });
  }

  /** Tell the room you are typing, at most once every 2 s (best effort). */
  typing() {
    this._needs(3, "typing");
    const now = Date.now();
    if (now - this._typedAt < TYPING_EVERY_MS) return false;
    const sent = this._sendNow({ type: "typing" });
    if (sent) this._typedAt = now;
    return sent;
  }

  /** Fetch a page of the room's history: {messages, more}; give before (older) or since (newer), and limit. */
  async history({ before, since, limit } = {}) {
    if (!this.fetch) throw new TypeError("no fetch here: pass one in the options");
    if (this.room === null) throw new Error("a DM's room is known from its welcome: wait for it");
    const query = [];
    if (limit !== undefined) query.push("limit=" + Number(limit));
    if (before !== undefined && before !== null) query.push("before=" + encodeURIComponent(String(before)));
    if (since !== undefined && since !== null) query.push("since=" + encodeURIComponent(String(since)));
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = "Bearer " + this.token;
    const url = this.api + "/rooms/" + encodeURIComponent(this.room) + "/messages" + (query.length ? "?" + query.join("&") : "");
    const response = await this.fetch(url, { headers });
    if (!response.ok) throw new Error("history: HTTP " + response.status);
    const page = await response.json();
    return { ...page, messages: Array.isArray(page.messages) ? page.messages : [] };
  }

  /** Return what waits for its ack in this room, oldest first. */
  pending() {
    return this.outbox.slice();
  }

  _needs(version, what) {
    if (this.version < version) throw new Error(what + " needs protocol v" + version + " (this client speaks v" + this.version + ")");
  }

  _emit(event, ...args) {
    for (const handler of [...(this._handlers.get(event) || [])]) {
      try {
        handler(...args);
      } catch (error) {
        // One handler's failure must not stop the others or the client.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  _setState(state, detail) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  _query() {
    const params = [["v", String(this.version)]];
    if (this.dm) params.push(["dm", this.dm]);
    else params.push(["room", this.room]);
    if (this.name && !this.token) params.push(["name", this.name]);
    if (this.token) params.push(["token", this.token]);
    else params.push(["key", this.key]);
    if (this.lastId !== null) params.push(["since", this.lastId]);
    return params.map(([key, value]) => key + "=" + encodeURIComponent(value)).join("&");
  }

  _open() {
    clearTimeout(this._timers.retry);
    this._timers.retry = null;
    this._beatAt = 0;
    this._beatGap = 0;
    this._welcomed = false;
    const socket = new this.WebSocket(this.url + "?" + this._query());
    this._socket = socket;
    this._setState(this._attempt === 0 ? "connecting" : "reconnecting", {});
    this._timers.watchdog = setTimeout(() => this._stalled(), this.connectTimeout);
    socket.onopen = () => {
      if (socket !== this._socket) return;
      this._setState("connected", {});
      this._timers.stable = setTimeout(() => {
        this._attempt = 0;
      }, STABLE_AFTER_MS);
    };
    socket.onmessage = (event) => {
      if (socket === this._socket) this._receive(event.data);
    };
    socket.onerror = () => {
      // The close event that follows says what happened.
    };
    socket.onclose = (event) => {
      if (socket === this._socket) this._closed(socket, event.code, event.reason || "");
    };
  }

  _detach() {
    const socket = this._socket;
    this._socket = null;
    this._welcomed = false;
    for (const name of ["stable", "watchdog", "retry", "resend"]) clearTimeout(this._timers[name]);
    this._timers.retry = null;
    for (const entry of this.outbox) entry.sent = false;
    // The old socket's handlers check that it is still the current one, so
    // nothing it says after this point reaches the client.
    if (socket !== null) {
      try {
        socket.close(1000);
      } catch {
        // A socket still connecting may refuse close() in some implementations; it is dropped all the same.
      }
    }
  }

  _closed(socket, code, reason) {
    if (code === 1009) this._refuseBiggest(reason || "That message was too big for the server.");
    this._socket = null;
    this._detach();
    if (NO_RETRY.has(code) || !this._wanted) {
      this._wanted = false;
      this._listenToPage(false);
      this.users = [];
      this.online = 0;
      this._setState("disconnected", { code, reason, final: NO_RETRY.has(code) });
      return;
    }
    this._reconnectLater(code, reason);
  }

  _reconnectLater(code, reason) {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this._attempt);
    this._attempt += 1;
    this._timers.retry = setTimeout(() => this._open(), Math.random() * ceiling);
    this._setState("reconnecting", { code, reason });
  }

  // Back online or back on screen: a pending retry goes now, and a socket gone silent is replaced.
  _revive() {
    if (!this._wanted) return;
    if (typeof document !== "undefined" && document.visibilityState === "hidden") return;
    if (this._timers.retry !== null) {
      this._open();
      return;
    }
    const silent = this._beatGap > 0 && Date.now() - this._beatAt > Math.max(3 * this._beatGap, MIN_SILENCE_MS);
    if (this._socket !== null && silent) {
      this._detach();
      this._open();
    }
  }

  _listenToPage(listen) {
    const page = typeof window !== "undefined" && typeof window.addEventListener === "function" ? window : null;
    if (page === null) return;
    const change = listen ? "addEventListener" : "removeEventListener";
    page[change]("online", this._wake);
    if (typeof document !== "undefined") document[change]("visibilitychange", this._wake);
  }

  _watch() {
    clearTimeout(this._timers.watchdog);
    if (this._beatGap === 0) return;
    this._timers.watchdog = setTimeout(() => {
      if (!this._wanted || this._socket === null) return;
      // Heartbeats stopped, so the connection is most likely dead without
      // the runtime knowing it (sleep, network change): start afresh.
      this._stalled();
    }, Math.max(3 * this._beatGap, MIN_SILENCE_MS));
  }

  _stalled() {
    if (!this._wanted || this._socket === null) return;
    this._detach();
    this._reconnectLater(1006, "");
  }

  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.state === 1) {
      const now = Date.now();
      // The longest gap seen, so that two heartbeats delivered together
      // after a stall do not make the watchdog impatient.
      if (this._beatAt) this._beatGap = Math.max(this._beatGap, now - this._beatAt);
      this._beatAt = now;
    }
    this._watch();
    if (frame.state === 2 && this._advance(frame)) this._emit("message", frame);
    else if (frame.state === 3) this._presence(frame);
    else if (frame.state === 4) this._notice(frame);
    else if (frame.state === 5) this._acked(frame);
    else if (frame.state === 6 && this._advance(frame)) this._emit("change", frame);
  }

  // Move the resume position past a message or change; false for one already seen.
  _advance(frame) {
    if (typeof frame.room === "string" && this.room !== null && frame.room !== this.room) return false;
    const id = parseId(frame.id);
    if (id === null) return true;
    if (this.lastId !== null && id <= BigInt(this.lastId)) return false;
    this.lastId = id.toString();
    return true;
  }

  _presence(frame) {
    const event = frame.event;
    const name = typeof frame.name === "string" ? frame.name : "";
    const counted = Number.isInteger(frame.online);
    if (event === "welcome") {
      this.welcome = frame;
      if (typeof frame.room === "string") this.room = frame.room;
      if (typeof frame.you === "string" && frame.you) this.you = frame.you;
      this.users = names(frame.users);
      this.online = counted ? frame.online : this.users.length;
      this._welcomed = true;
      this._emit("presence", frame);
      this._flush();
      return;
    }
    if (event === "join") {
      // The count is the truth: a join the welcome's list already holds is not added twice.
      if (!counted || this.users.length < frame.online) this.users.push(name);
      this.online = counted ? frame.online : this.users.length;
    } else if (event === "leave") {
      const index = this.users.indexOf(name);
      if (index >= 0 && (!counted || this.users.length > frame.online)) this.users.splice(index, 1);
      this.online = counted ? frame.online : this.users.length;
    } else if (event === "presence") {
      this._digest(frame);
    }
    this._emit("presence", frame);
  }

  // A digest of joins and leaves since the last one, and the room's count.
  _digest(frame) {
    const joins = names(frame.joins);
    const users = this.users.filter((user) => !names(frame.leaves).includes(user));
    const room = Number.isInteger(frame.online) ? frame.online : users.length + joins.length;
    for (const user of joins) {
      if (!users.includes(user) && users.length < Math.min(room, MAX_LISTED)) users.push(user);
    }
    this.users = users;
    this.online = room;
  }

  _notice(frame) {
    this._emit("notice", frame);
    if (typeof frame.cid !== "string") return;
    const entry = this.outbox.find((candidate) => candidate.cid === frame.cid);
    if (entry === undefined) return;
    const code = typeof frame.code === "string" ? frame.code : "";
    if (code in RESEND_MS) {
      entry.sent = false;
      clearTimeout(this._timers.resend);
      this._timers.resend = setTimeout(() => this._flush(), RESEND_MS[code]);
      return;
    }
    this._refuse(entry, code, typeof frame.message === "string" && frame.message ? frame.message : "");
  }

  _acked(frame) {
    const entry = this._take(typeof frame.ack === "string" ? frame.ack : "");
    if (entry === null) return;
    const ack = { id: typeof frame.id === "string" ? frame.id : String(frame.id), cid: entry.cid };
    this._emit("ack", ack, entry);
    this._waiting.get(entry.cid)?.resolve(ack);
    this._waiting.delete(entry.cid);
  }

  _refuse(entry, code, reason) {
    this._take(entry.cid);
    const refused = new Refused(code, reason || "The server did not accept this message.", entry);
    this._emit("refused", refused, entry);
    this._waiting.get(entry.cid)?.reject(refused);
    this._waiting.delete(entry.cid);
  }

  _refuseBiggest(reason) {
    const sent = this.outbox.filter((entry) => entry.sent);
    if (!sent.length) return;
    const biggest = sent.reduce((a, b) => (JSON.stringify(b.body).length > JSON.stringify(a.body).length ? b : a));
    this._refuse(biggest, "too_big", reason);
  }

  // Sending: every message and change has a client id and waits in the outbox until
  // acked, sent again with the same id on every new connection, so it counts once.
  _queue(body, text) {
    const entry = { room: this.place, cid: newCid(), text, at: Date.now(), body, sent: false };
    const promise = new Promise((resolve, reject) => this._waiting.set(entry.cid, { resolve, reject }));
    // Nobody may await a send (a fire-and-forget bot); its refusal is still told through "refused".
    promise.catch(() => {});
    this.outbox.push(entry);
    this._save();
    this._emit("outbox", entry);
    this._flush();
    return promise;
  }

  _sendNow(body) {
    const socket = this._socket;
    if (socket === null || socket.readyState !== OPEN || !this._welcomed) return false;
    socket.send(JSON.stringify(body));
    return true;
  }

  _flush() {
    clearTimeout(this._timers.resend);
    const socket = this._socket;
    if (socket === null || socket.readyState !== OPEN || !this._welcomed) return;
    for (const entry of this.outbox) {
      if (entry.room !== this.place || entry.sent) continue;
      entry.sent = true;
      socket.send(JSON.stringify({ ...entry.body, cid: entry.cid }));
    }
  }

  _take(cid) {
    const index = this.outbox.findIndex((entry) => entry.cid === cid);
    if (index < 0) return null;
    const [entry] = this.outbox.splice(index, 1);
    this._save();
    return entry;
  }

  _stored() {
    if (this.storage === null) return [];
    try {
      const stored = JSON.parse(this.storage.getItem(this.storageKey) || "[]");
      return Array.isArray(stored) ? stored : [];
    } catch {
      return [];
    }
  }

  _load() {
    const valid = (entry) => entry && typeof entry.cid === "string" && typeof entry.text === "string"
      && typeof entry.room === "string";
    this.outbox = this._stored().filter(valid).filter((entry) => entry.room === this.place).map((entry) => ({
      room: entry.room,
      cid: entry.cid,
      text: entry.text,
      at: entry.at,
      body: entry.body && typeof entry.body === "object" ? entry.body : { text: entry.text },
      sent: false,
    }));
  }

  // The stored outbox is shared by the clients of every room: keep the other rooms' entries.
  _save() {
    if (this.storage === null) return;
    const others = this._stored().filter((entry) => entry && entry.room !== this.place);
    const mine = this.outbox.map(({ room, cid, text, at, body }) => ({ room, cid, text, at, body }));
    try {
      this.storage.setItem(this.storageKey, JSON.stringify([...others, ...mine]));
    } catch {
      // Storage can be full or disabled: the outbox still lives in memory.
    }
  }
}
