// The page's conversations, for a signed-in user: the sidebar of their rooms and DMs with unread
// badges, "… is typing", read positions sent as messages are seen, and "seen" under the last
// message of ours a DM's other side has read. The page (chat.js) calls it; it owns its own DOM.

// The sidebar asks for the user's rooms this often while the page is visible (other rooms' messages do not come
// over the page's socket), and at once on a welcome and after a read.
const REFRESH_MS = 10000;
const TYPING_SHOWN_MS = 3500;
const READ_AFTER_MS = 300;

function make(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

export class Conversations {
  /**
   * api: the chat's API base (e.g. /chat/api); user: the signed-in user's id;
   * open(place): called with {room} or {dm} when the user picks a conversation.
   */
  constructor(api, user, open) {
    this.api = api;
    this.user = user;
    this.open = open;
    this.list = document.getElementById("rooms");
    this.typingLine = document.getElementById("typing");
    this.dmForm = document.getElementById("dm-form");
    this.client = null;
    this.room = null;
    this.other = null;
    this.typists = new Map();
    this.readTimer = null;
    this.lastOthers = null;
    this.refreshTimer = setInterval(() => {
      if (document.visibilityState !== "hidden") this.refresh();
    }, REFRESH_MS);
    this.dmForm?.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = this.dmForm.querySelector("input");
      const other = input.value.trim();
      if (!other || other === this.user) return;
      input.value = "";
      this.open({ dm: other });
    });
  }

  /** A client was welcomed into a room: remember which, show no stale typing, read what it shows. */
  welcomed(client) {
    this.client = client;
    const welcome = client.welcome || {};
    this.room = typeof welcome.room === "string" ? welcome.room : null;
    this.other = typeof welcome.dm === "string" ? welcome.dm : null;
    this.typists.clear();
    this.showTyping();
    for (const seen of document.querySelectorAll("[data-testid=seen]")) seen.remove();
    if (this.lastOthers) this.readSoon();
    this.refresh();
  }

  /** A chat message was shown (item: its list item): someone else's is read once the page shows it. */
  message(frame) {
    if (!frame.user || frame.user === this.user || typeof frame.id !== "string") return;
    this.typists.delete(frame.user);
    this.showTyping();
    this.lastOthers = frame.id;
    this.readSoon();
  }

  /** The user typed in the composer. */
  typed() {
    if (this.client && this.client.version >= 3) this.client.typing();
  }

  /** A state-3 event the page does not show itself: typing and read receipts. */
  event(frame) {
    if (frame.room !== this.room || typeof frame.user !== "string") return;
    if (frame.event === "typing" && frame.user !== this.user) {
      const name = typeof frame.name === "string" && frame.name ? frame.name : frame.user;
      clearTimeout(this.typists.get(frame.user)?.timer);
      const timer = setTimeout(() => {
        this.typists.delete(frame.user);
        this.showTyping();
      }, TYPING_SHOWN_MS);
      this.typists.set(frame.user, { name, timer });
      this.showTyping();
    } else if (frame.event === "read" && this.other !== null && frame.user === this.other) {
      this.seen(frame.id);
    }
  }

  // "seen" under the last message of ours at or before the id the other side has read.
  seen(id) {
    let last = null;
    for (const item of document.querySelectorAll(".message.own[data-id]")) {
      if (BigInt(item.dataset.id) <= BigInt(id)) last = item;
    }
    if (last === null || last.querySelector("[data-testid=seen]")) return;
    for (const seen of document.querySelectorAll("[data-testid=seen]")) seen.remove();
    const mark = make("p", "seen", "seen");
    mark.dataset.testid = "seen";
    last.append(mark);
  }

  showTyping() {
    if (!this.typingLine) return;
    const names = [...this.typists.values()].map((typist) => typist.name);
    this.typingLine.hidden = names.length === 0;
    this.typingLine.textContent = names.length === 0 ? ""
      : names.length === 1 ? names[0] + " is typing…" : names.join(", ") + " are typing…";
  }

  readSoon() {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => {
      if (document.visibilityState === "hidden" || !this.client || !this.lastOthers) return;
      if (this.client.read(this.lastOthers)) this.refresh();
    }, READ_AFTER_MS);
  }

  /** Fetch the user's rooms and show them, each with its unread count (none for the room on screen). */
  async refresh() {
    if (!this.list) return;
    let body;
    try {
      const response = await fetch(this.api + "/me/rooms", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      body = await response.json();
    } catch {
      return;
    }
    const rooms = Array.isArray(body.rooms) ? body.rooms : [];
    this.list.replaceChildren(...rooms.map((room) => this.entry(room)));
  }

  entry(room) {
    const item = make("li", "conversation");
    item.dataset.testid = "conversation";
    item.dataset.room = room.room;
    if (room.room === this.room) item.classList.add("current");
    const button = make("button", "conversation-open", room.dm ? "@ " + room.dm : "# " + room.room);
    button.type = "button";
    button.addEventListener("click", () => this.open(room.dm ? { dm: room.dm } : { room: room.room }));
    item.append(button);
    if (room.unread > 0 && room.room !== this.room) {
      const badge = make("span", "badge", String(room.unread));
      badge.dataset.testid = "unread";
      item.append(badge);
    }
    return item;
  }
}
