// Types of chat-client.js, the chat server's client for browsers and Node.

/** Every frame the server sends has a state and a message ("" where there is no text). */
export interface Frame {
  state: number;
  message: string;
  [field: string]: unknown;
}

/** A chat message (state 2); in history, replay and fresh joins folded with its changes (v3). */
export interface MessageFrame extends Frame {
  state: 2;
  id: string;
  room: string;
  name: string;
  ts: number;
  user?: string;
  reply_to?: string;
  edited?: number;
  deleted?: boolean;
  reactions?: Record<string, string[]>;
}

/** A change to a message (state 6, v3): an edit, a delete or a reaction, with its own position id. */
export interface ChangeFrame extends Frame {
  state: 6;
  kind: "edit" | "delete" | "react";
  room: string;
  target: string;
  id: string;
  user: string | null;
  name: string;
  ts: number;
  text?: string;
  emoji?: string;
  on?: boolean;
}

/** Presence and room events (state 3): welcome, join, leave, presence (a digest), gap, read, typing. */
export interface PresenceFrame extends Frame {
  state: 3;
  event: "welcome" | "join" | "leave" | "presence" | "gap" | "read" | "typing" | string;
  room: string;
  name?: string;
  online?: number;
  you?: string;
  users?: string[];
  joins?: string[];
  leaves?: string[];
  missed?: number | null;
  user?: string;
  id?: string;
  read?: string | null;
  unread?: number;
  private?: boolean;
  dm?: string | null;
}

/** A notice to this client (state 4): a refusal carries the cid of what it refuses. */
export interface NoticeFrame extends Frame {
  state: 4;
  code: string;
  cid?: string;
}

/** The client's connection: connecting, connected, reconnecting or disconnected (final when it will not retry). */
export interface StateChange {
  state: "connecting" | "connected" | "reconnecting" | "disconnected";
  code?: number;
  reason?: string;
  final?: boolean;
}

/** What the server acknowledged: the message's (or change's) id and the client id it was sent with. */
export interface Ack {
  id: string;
  cid: string;
}

/** A message or change waiting in the outbox for its ack. */
export interface OutboxEntry {
  room: string;
  cid: string;
  text: string;
  at: number;
  body: Record<string, string>;
  sent: boolean;
}

/** A page of history from the HTTP API. */
export interface HistoryPage {
  messages: MessageFrame[];
  more: boolean;
  gap?: boolean;
  missed?: number | null;
}

/** The minimal Web Storage the outbox is kept in. */
export interface OutboxStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ChatClientOptions {
  room?: string;
  /** Talk to one user (v3): their user id; the welcome names the DM's room. */
  dm?: string;
  name?: string;
  token?: string;
  /** A guest's sender key (16-64 of A-Z a-z 0-9 _ -): its client ids are its own. Default: one kept in storage. */
  key?: string;
  /** Resume after this message id. */
  since?: string | null;
  version?: 1 | 2 | 3;
  /** A WebSocket class, where the runtime has none (the ws package on Node 20). */
  WebSocket?: unknown;
  /** Where the outbox is kept: localStorage in a browser, memory (null) elsewhere. */
  storage?: OutboxStorage | null;
  storageKey?: string;
  fetch?: typeof globalThis.fetch;
  /** Connect at once (true) or wait for connect(). */
  connect?: boolean;
  /** Give up a handshake unanswered after this many ms and try again. */
  connectTimeout?: number;
}

export interface ChatEvents {
  message: (frame: MessageFrame) => void;
  change: (frame: ChangeFrame) => void;
  presence: (frame: PresenceFrame) => void;
  notice: (frame: NoticeFrame) => void;
  state: (change: StateChange) => void;
  ack: (ack: Ack, entry: OutboxEntry) => void;
  refused: (error: Refused, entry: OutboxEntry) => void;
  outbox: (entry: OutboxEntry) => void;
}

/** Close codes after which the client does not reconnect. */
export const NO_RETRY: ReadonlySet<number>;
/** The protocol version spoken unless the options say otherwise. */
export const VERSION: number;

/** A message or change the server refused for good. */
export class Refused extends Error {
  code: string;
  entry: OutboxEntry;
}

export class ChatClient {
  constructor(url: string, options?: ChatClientOptions);
  readonly url: string;
  readonly api: string;
  /** The room (for a DM, known from the welcome on). */
  readonly room: string | null;
  readonly dm: string | null;
  readonly version: number;
  readonly state: StateChange["state"];
  /** The last welcome, null before the first. */
  readonly welcome: PresenceFrame | null;
  /** The name the server knows this client by. */
  readonly you: string | null;
  /** Who is online (at most the server's list limit) and how many. */
  readonly users: string[];
  readonly online: number;
  /** The id of the last message or change seen: where the next connection resumes. */
  readonly lastId: string | null;
  on<E extends keyof ChatEvents>(event: E, handler: ChatEvents[E]): () => void;
  off<E extends keyof ChatEvents>(event: E, handler: ChatEvents[E]): void;
  connect(): void;
  close(): void;
  send(text: string, options?: { replyTo?: string }): Promise<Ack>;
  edit(id: string, text: string): Promise<Ack>;
  delete(id: string): Promise<Ack>;
  react(id: string, emoji: string): Promise<Ack>;
  read(id: string): boolean;
  typing(): boolean;
  history(options?: { before?: string; since?: string; limit?: number }): Promise<HistoryPage>;
  pending(): OutboxEntry[];
}
