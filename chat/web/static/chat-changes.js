// The page's messages that change (protocol v3): each message shows how it stands (edited, deleted,
// its reactions, the message it replies to), a signed-in user can reply, react, and edit or delete
// their own, and state-6 changes from any tab apply live. The page (chat.js) calls it; it owns the
// parts of a message's item it adds.

const EMOJI = "👍";
const QUOTE_CHARS = 80;

function make(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

export class Changes {
  /**
   * list: the messages' <ul>; input: the composer's input; client(): the current ChatClient;
   * user: the signed-in user's id (null for a guest: no actions); notify(text): the notice line.
   */
  constructor(list, input, client, user, notify) {
    this.list = list;
    this.input = input;
    this.client = client;
    this.user = user;
    this.notify = notify;
    // What the composer does with its next text: a reply to a message, or an edit of one of ours.
    this.replying = null;
    this.editing = null;
    this.banner = make("p", "composing");
    this.banner.dataset.testid = "composing";
    this.banner.hidden = true;
    input.form?.before(this.banner);
  }

  item(id) {
    return this.list.querySelector('.message[data-id="' + id + '"]');
  }

  /** Show a message's frame as it stands on its list item, and its actions. */
  decorate(item, frame) {
    item.reactions = frame.reactions && typeof frame.reactions === "object" ? frame.reactions : {};
    if (typeof frame.reply_to === "string") {
      const target = this.item(frame.reply_to);
      const quoted = target?.querySelector(".text")?.textContent;
      const quote = make("p", "quote", "↪ " + (quoted !== undefined ? quoted.slice(0, QUOTE_CHARS) : "an earlier message"));
      quote.dataset.testid = "quote";
      quote.dataset.target = frame.reply_to;
      item.querySelector(".meta").after(quote);
    }
    if (frame.deleted === true) this.deleted(item);
    else if (Number.isFinite(frame.edited)) this.edited(item);
    this.showReactions(item);
    if (this.user !== null && !item.classList.contains("deleted")) this.actions(item, frame.user === this.user);
  }

  actions(item, own) {
    const bar = make("span", "actions");
    const button = (label, testid, handler) => {
      const node = make("button", "action", label);
      node.type = "button";
      node.dataset.testid = testid;
      node.addEventListener("click", () => handler(item.dataset.id));
      bar.append(node);
    };
    button("reply", "reply", (id) => this.compose("replying", id, "Replying to: "));
    button(EMOJI, "react", (id) => this.react(id, EMOJI));
    if (own) {
      button("edit", "edit", (id) => {
        this.compose("editing", id, "Editing: ");
        this.input.value = this.item(id)?.querySelector(".text")?.textContent || "";
      });
      button("delete", "delete", (id) => this.run(this.client().delete(id)));
    }
    item.querySelector(".meta").append(bar);
  }

  compose(mode, id, label) {
    this.replying = mode === "replying" ? id : null;
    this.editing = mode === "editing" ? id : null;
    const quoted = this.item(id)?.querySelector(".text")?.textContent || "";
    this.banner.textContent = label + quoted.slice(0, QUOTE_CHARS);
    this.banner.hidden = false;
    this.input.focus();
  }

  /** Send the composer's text as an edit or a reply when one is under way; tell whether it did. */
  submit(text) {
    const editing = this.editing;
    const replying = this.replying;
    this.editing = this.replying = null;
    this.banner.hidden = true;
    if (editing !== null) {
      this.run(this.client().edit(editing, text));
      return true;
    }
    if (replying !== null) {
      this.run(this.client().send(text, { replyTo: replying }));
      return true;
    }
    return false;
  }

  react(id, emoji) {
    this.run(this.client().react(id, emoji));
  }

  run(promise) {
    promise.catch((error) => this.notify(error.message || String(error)));
  }

  /** Apply a state-6 change to the message it targets, if it is shown (again is harmless). */
  change(frame) {
    const item = this.item(frame.target);
    if (item === null) return;
    if (frame.kind === "edit" && !item.classList.contains("deleted")) {
      item.querySelector(".text").textContent = frame.text;
      this.edited(item);
    } else if (frame.kind === "delete") {
      this.deleted(item);
    } else if (frame.kind === "react") {
      const users = (item.reactions[frame.emoji] ||= []);
      const at = users.indexOf(frame.user);
      if (frame.on && at < 0) users.push(frame.user);
      if (!frame.on && at >= 0) users.splice(at, 1);
      if (!users.length) delete item.reactions[frame.emoji];
      this.showReactions(item);
    }
  }

  edited(item) {
    if (item.querySelector(".edited")) return;
    const mark = make("span", "edited", "(edited)");
    mark.dataset.testid = "edited";
    item.querySelector(".meta").append(mark);
  }

  deleted(item) {
    item.classList.add("deleted");
    item.dataset.state = "deleted";
    item.querySelector(".text").textContent = "message deleted";
    item.querySelector(".actions")?.remove();
    item.querySelector(".edited")?.remove();
    item.reactions = {};
    this.showReactions(item);
  }

  showReactions(item) {
    item.querySelector(".reactions")?.remove();
    const entries = Object.entries(item.reactions || {});
    if (!entries.length) return;
    const row = make("p", "reactions");
    for (const [emoji, users] of entries) {
      const chip = make("button", "reaction" + (users.includes(this.user) ? " mine" : ""), emoji + " " + users.length);
      chip.type = "button";
      chip.dataset.testid = "reaction";
      chip.title = users.join(", ");
      chip.disabled = this.user === null;
      chip.addEventListener("click", () => this.react(item.dataset.id, emoji));
      row.append(chip);
    }
    item.append(row);
  }
}
