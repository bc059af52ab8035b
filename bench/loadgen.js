'use strict';
// Load generator for the chat benchmark.
//
// Usage: node loadgen.js '<json config>'
//
// Opens `clients` connections to `url`, then drives one of three loads:
//   flat  - `senders` clients each keep `window` messages in flight (sent but not
//           yet echoed back to the sender) for `duration` seconds;
//   rate  - `senders` clients send `rate` messages per second between them, in
//           turn (one sender: client 0), for `duration` seconds;
//   idle  - nobody sends; heartbeats are counted for `duration` seconds.
// With `rooms` > 0, client i joins room `b<run>-<i mod rooms>` (so sender i sends
// into its own room), expects only its room's messages and counts any other
// sender's as misrouted; `query` (e.g. `v=2`) is added to every connection's URL.
// Every message text is `r<run>|<sender>|<seq>|<send time, µs>|` padded to `size`
// bytes; every client checks loss, duplicates and per-sender order and records
// latency. Frames of other runs (history replay), heartbeats and presence events
// are counted and otherwise ignored.
//
// `protocol` is `ws` (plain WebSocket through wsclient.js; every text frame is
// a message) or `socketio` (Node's socket.io-client through sioclient.js; every
// "message" event is a message, and `url` is the server's http:// address). Both
// feed the same checks, so the two modes measure the same things.
//
// While the clients connect (`connectConcurrency` handshakes in flight), each
// one counts the presence frames it receives (state 3 other than its welcome);
// with `welcome: true` (a server that greets every joiner with a state-3
// `welcome`) the generator waits for every welcome, and `connected` reports
// when the last one came and the presence frames per client: the join storm.
//
// Progress is reported as JSON lines on stdout: `ready` (after a warm-up
// connection), `connected` (all clients open, presence traffic settled), `done`
// (measured phase over) and `end` (stalled and extra clients checked). After each
// of the first three the generator waits for a line on stdin, so the caller can
// sample the server in between; with `auto: true` it does not wait.

const readline = require('readline');
const { performance } = require('perf_hooks');
const { WsClient, OPEN } = require('./wsclient');

const config = {
  url: 'ws://127.0.0.1:8080/ws',
  protocol: 'ws',
  run: Math.random().toString(36).slice(2, 10),
  clients: 10,
  senders: 1,
  mode: 'flat',
  duration: 5,
  rate: 100,
  window: 20,
  size: 100,
  stall: false,
  extra: false,
  connectConcurrency: 100,
  connectTimeout: 15,
  settleQuiet: 0.3,
  settleMax: 30,
  drainIdle: 2,
  drainMax: 10,
  probeTimeout: 5,
  rooms: 0,
  query: '',
  // Every `changes`-th message a sender also sends a change to its latest message (v3: a reaction or an edit).
  changes: 0,
  welcome: false,
  welcomeWait: 60,
  auto: false,
  ...JSON.parse(process.argv[2] || '{}'),
};

const PIPE = 124;
const ZERO = 48;
const prefixText = `r${config.run}|`;
const prefix = Buffer.from(prefixText);
const now = () => performance.now();

const stats = {
  delivered: 0,
  changes: 0,
  duplicates: 0,
  outOfOrder: 0,
  heartbeats: 0,
  heartbeatGaps: [],
  presence: 0,
  foreign: 0,
  windowTimeouts: 0,
  misrouted: 0,
  lastDelivery: 0,
  closeCodes: {},
  errors: {},
};
let latencies = new Float64Array(1 << 16);
let measuring = false;
let closing = false;

function recordLatency(ms) {
  if (stats.delivered >= latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[stats.delivered] = ms;
}

let cursor = 0;

// Read the decimal number at `cursor` up to the next '|'; -1 if there is none.
function field(data) {
  let value = 0;
  while (cursor < data.length) {
    const b = data[cursor++];
    if (b === PIPE) return value;
    if (b < ZERO || b > ZERO + 9) return -1;
    value = value * 10 + b - ZERO;
  }
  return -1;
}

// Read a decimal number from a string field; -1 if it is not one.
function number(text) {
  return /^\d+$/.test(text) ? Number(text) : -1;
}

// Return the `state` of a server frame that is not a message of this run.
function stateOf(data) {
  const head = data.toString('utf8', 0, Math.min(data.length, 40));
  const match = /"state"\s*:\s*(\d+)/.exec(head) || /"state"\s*:\s*(\d+)/.exec(data.toString());
  return match ? Number(match[1]) : 0;
}

// Tell whether a state-3 frame is a welcome.
function isWelcome(data) {
  return data.indexOf('"event":"welcome"') >= 0 || /"event"\s*:\s*"welcome"/.test(data.toString());
}

// Return the room of client (or sender) index, or 0 when there are no rooms.
function roomOf(index) {
  return config.rooms > 0 && index >= 0 ? index % config.rooms : 0;
}

// Return the URL client index connects to: the query, and its room when there are rooms.
function urlOf(index) {
  const params = [];
  if (config.query) params.push(config.query);
  if (config.rooms > 0 && index >= 0) params.push(`room=b${config.run}-${roomOf(index)}`);
  if (params.length === 0 || config.protocol === 'socketio') return config.url;
  return `${config.url}${config.url.includes('?') ? '&' : '?'}${params.join('&')}`;
}

function countKey(table, key) {
  table[key] = (table[key] || 0) + 1;
}

// Socket.IO is only loaded in its mode, so the WebSocket mode needs no npm package.
function connection(url, handlers) {
  if (config.protocol === 'socketio') {
    const { SioClient } = require('./sioclient');
    return new SioClient(url, handlers, { timeout: config.connectTimeout });
  }
  return new WsClient(url, handlers, { timeout: config.connectTimeout });
}

class Sender {
  constructor(client, id) {
    this.client = client;
    this.id = id;
    this.sent = 0;
    this.acked = 0;
    this.lastAck = 0;
    this.padding = '';
    // The id of this sender's latest message, as its own client saw it (changes are made to it).
    this.lastId = null;
    this.changes = 0;
  }

  send() {
    if (config.changes && this.lastId !== null && this.sent % config.changes === config.changes - 1) {
      const kind = this.changes % 2 ? 'edit' : 'react';
      this.client.conn.send(JSON.stringify(
        kind === 'edit' ? { type: 'edit', id: this.lastId, text: 'edited' } : { type: 'react', id: this.lastId, emoji: '👍' }));
      this.changes += 1;
      stats.changes += 1;
    }
    const head = `r${config.run}|${this.id}|${this.sent}|${Math.round(now() * 1000)}|`;
    if (this.padding.length !== Math.max(0, config.size - head.length)) {
      this.padding = 'x'.repeat(Math.max(0, config.size - head.length));
    }
    this.client.conn.send(head + this.padding);
    this.sent += 1;
  }

  pump(until) {
    const conn = this.client.conn;
    while (
      now() < until &&
      conn.state === OPEN &&
      this.sent - this.acked < config.window &&
      conn.buffered < 65536
    ) {
      this.send();
    }
  }

  ack(seq) {
    if (seq + 1 > this.acked) {
      this.acked = seq + 1;
      this.lastAck = now();
    }
  }
}

class Client {
  constructor(index, { stalled = false } = {}) {
    this.index = index;
    this.room = roomOf(index);
    this.stalled = stalled;
    this.sender = null;
    this.next = [];
    this.missing = new Map();
    this.closeCode = null;
    this.closedAt = 0;
    this.lastHeartbeat = 0;
    this.httpStatus = null;
    this.refused = false;
    this.conn = null;
    this.listeners = [];
    this.openedAt = 0;
    this.welcomeAt = 0;
    this.welcomeBytes = 0;
    this.presence = 0;
    this.presenceBytes = 0;
  }

  open() {
    return new Promise((resolve) => {
      this.conn = connection(urlOf(this.index), {
        open: () => {
          this.openedAt = now();
          if (this.stalled) this.conn.pause();
          resolve(true);
        },
        message: (data) => {
          this.onMessage(data);
          for (const listener of this.listeners) listener();
        },
        refused: (status) => {
          this.httpStatus = status;
          this.refused = true;
          this.closedAt = now();
          countKey(stats.errors, status === null ? 'connect failed' : `http ${status}`);
          resolve(false);
        },
        error: (reason) => countKey(stats.errors, reason),
        close: (code) => {
          this.closeCode = code;
          this.closedAt = now();
          if (!closing && !this.stalled) countKey(stats.closeCodes, code);
        },
      });
      this.conn.connect();
    });
  }

  get isOpen() {
    return this.conn !== null && this.conn.state === OPEN;
  }

  onMessage(data) {
    if (config.protocol === 'socketio') this.onEvent(data);
    else this.onFrame(data);
  }

  // A WebSocket text frame, as bytes: found and read without parsing the JSON.
  onFrame(data) {
    if (this.stalled) return;
    const at = data.indexOf(prefix);
    if (at < 0) {
      const state = stateOf(data);
      this.onOther(state, data.length, state === 3 && isWelcome(data));
      return;
    }
    if (!measuring) return;
    cursor = at + prefix.length;
    const sender = field(data);
    if (config.changes && this.sender !== null && sender === this.sender.id) {
      const found = /"id":"(\d+)"/.exec(data.toString('latin1'));
      if (found) this.sender.lastId = found[1];
    }
    const seq = field(data);
    this.onChat(sender, seq, field(data));
  }

  // A Socket.IO "message" event, already parsed by socket.io-client.
  onEvent(payload) {
    if (this.stalled) return;
    const text = payload !== null && typeof payload === 'object' ? payload.message : undefined;
    const at = typeof text === 'string' ? text.indexOf(prefixText) : -1;
    if (at < 0) {
      const body = payload !== null && typeof payload === 'object' ? payload : {};
      this.onOther(Number(body.state) || 0, JSON.stringify(body).length, body.event === 'welcome');
      return;
    }
    if (!measuring) return;
    const parts = text.slice(at + prefixText.length).split('|', 3);
    this.onChat(number(parts[0]), number(parts[1]), number(parts[2]));
  }

  // One message of this run: check it against its sender's sequence, record its latency.
  onChat(sender, seq, sentAt) {
    if (sender < 0 || seq < 0 || sentAt < 0) {
      countKey(stats.errors, 'malformed message');
      return;
    }
    if (roomOf(sender) !== this.room) {
      stats.misrouted += 1;
      return;
    }
    const t = now();
    const expected = this.next[sender] || 0;
    if (seq === expected) {
      this.next[sender] = seq + 1;
    } else if (seq > expected) {
      let gaps = this.missing.get(sender);
      if (!gaps) {
        gaps = new Set();
        this.missing.set(sender, gaps);
      }
      for (let s = expected; s < seq; s++) gaps.add(s);
      this.next[sender] = seq + 1;
    } else {
      const gaps = this.missing.get(sender);
      if (gaps && gaps.delete(seq)) {
        stats.outOfOrder += 1;
      } else {
        stats.duplicates += 1;
        return;
      }
    }
    recordLatency(t - sentAt / 1000);
    stats.delivered += 1;
    stats.lastDelivery = t;
    if (this.sender !== null && sender === this.sender.id) this.sender.ack(seq);
  }

  onOther(state, size, welcome) {
    if (welcome) {
      if (this.welcomeAt === 0) this.welcomeAt = now();
      this.welcomeBytes = Math.max(this.welcomeBytes, size);
      stats.presence += 1;
      return;
    }
    if (state === 1) {
      if (!measuring) return;
      const t = now();
      stats.heartbeats += 1;
      if (this.lastHeartbeat > 0) stats.heartbeatGaps.push(t - this.lastHeartbeat);
      this.lastHeartbeat = t;
    } else if (state === 2) {
      stats.foreign += 1;
    } else {
      stats.presence += 1;
      if (state === 3) {
        this.presence += 1;
        this.presenceBytes += size;
      }
    }
  }
}

// Return the CPU time (user + system) this process has used so far.
function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', () => {
  const resolve = waiting.shift();
  if (resolve) resolve();
});
lines.on('close', () => {
  if (!config.auto) process.exit(1);
});

async function step(event) {
  emit(event);
  if (!config.auto) await new Promise((resolve) => waiting.push(resolve));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function openAll(clients) {
  let next = 0;
  let failed = 0;
  async function worker() {
    while (next < clients.length) {
      const client = clients[next++];
      if (!(await client.open())) failed += 1;
    }
  }
  const workers = [];
  for (let i = 0; i < Math.min(config.connectConcurrency, clients.length); i++) workers.push(worker());
  await Promise.all(workers);
  return failed;
}

// Wait until every open client has its welcome, or welcomeWait seconds pass.
async function welcomed(clients) {
  const start = now();
  while (now() - start < config.welcomeWait * 1000) {
    if (clients.every((c) => !c.isOpen || c.welcomeAt > 0)) return;
    await sleep(10);
  }
}

function most(values) {
  return values.reduce((a, b) => (b > a ? b : a), 0);
}

// Describe the join storm: when the last client joined, and the presence frames each received.
function storm(clients, start) {
  const opened = clients.filter((c) => c.openedAt > 0);
  const joinedAt = opened.map((c) => (config.welcome ? c.welcomeAt : c.openedAt)).filter((t) => t > 0);
  const frames = Float64Array.from(opened.map((c) => c.presence)).sort();
  const total = frames.reduce((a, b) => a + b, 0);
  return {
    joined_s: joinedAt.length ? (most(joinedAt) - start) / 1000 : null,
    joined: joinedAt.length,
    welcomed: clients.filter((c) => c.welcomeAt > 0).length,
    welcome_bytes_max: most(opened.map((c) => c.welcomeBytes)),
    presence_per_client: {
      mean: opened.length ? total / opened.length : 0,
      p50: percentile(frames, 0.5),
      max: percentile(frames, 1),
    },
    presence_bytes_max: most(opened.map((c) => c.presenceBytes)),
  };
}

async function settle() {
  const start = now();
  let seen = stats.presence + stats.foreign;
  while (now() - start < config.settleMax * 1000) {
    await sleep(config.settleQuiet * 1000);
    const count = stats.presence + stats.foreign;
    if (count === seen) break;
    seen = count;
  }
  return (now() - start) / 1000;
}

async function runFlat(senders, until) {
  const timer = setInterval(() => {
    const t = now();
    for (const s of senders) {
      if (s.sent - s.acked >= config.window && t - s.lastAck > 1000) {
        stats.windowTimeouts += 1;
        s.acked = s.sent;
        s.lastAck = t;
      }
      s.pump(until);
    }
  }, 5);
  for (const s of senders) {
    s.lastAck = now();
    s.client.listeners.push(() => s.pump(until));
    s.pump(until);
  }
  while (now() < until) await sleep(Math.min(50, Math.max(1, until - now())));
  clearInterval(timer);
}

// Send rate messages per second in all, the senders in turn; a closed sender's turn is skipped.
async function runRate(senders, start, until) {
  const total = Math.round(config.rate * config.duration);
  let turn = 0;
  while (turn < total && now() < until + 1000) {
    const due = Math.min(total, Math.floor(((now() - start) * config.rate) / 1000) + 1);
    while (turn < due) {
      const sender = senders[turn % senders.length];
      turn += 1;
      if (sender.client.isOpen) sender.send();
    }
    await sleep(Math.max(1, Math.min(10, (turn * 1000) / config.rate - (now() - start))));
  }
}

async function drain(expected) {
  const start = now();
  let last = stats.delivered;
  let lastChange = now();
  while (stats.delivered < expected && now() - start < config.drainMax * 1000) {
    await sleep(20);
    if (stats.delivered !== last) {
      last = stats.delivered;
      lastChange = now();
    } else if (now() - lastChange > config.drainIdle * 1000) {
      break;
    }
  }
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return Math.round(sorted[i] * 1000) / 1000;
}

async function probeStalled(client) {
  const before = client.conn.bytesRead;
  const start = now();
  client.conn.resume();
  while (client.closeCode === null && now() - start < config.probeTimeout * 1000) await sleep(20);
  return {
    close_code: client.closeCode,
    bytes_buffered: client.conn.bytesRead - before,
  };
}

async function probeExtra(index) {
  const client = new Client(index);
  client.onMessage = () => {};
  const start = now();
  let openedAt = 0;
  const opened = client.open().then((ok) => {
    if (ok) openedAt = now();
  });
  const ended = () => client.closeCode !== null || client.refused;
  while (!ended() && now() - start < config.probeTimeout * 1000) await sleep(10);
  await Promise.race([opened, sleep(0)]);
  const result = {
    opened: openedAt > 0,
    open_ms: openedAt > 0 ? Math.round(openedAt - start) : null,
    close_code: client.closeCode,
    http_status: client.httpStatus,
    end_ms: ended() ? Math.round(client.closedAt - start) : null,
    outcome: 'hung',
  };
  if (client.httpStatus !== null) result.outcome = `http ${client.httpStatus}`;
  else if (client.refused) result.outcome = 'reset before upgrade';
  else if (client.closeCode !== null) result.outcome = `close ${client.closeCode}`;
  else if (openedAt > 0) result.outcome = 'open';
  client.conn.terminate();
  return result;
}

async function main() {
  const warm = new Client(-1);
  warm.onMessage = () => {};
  const warmOk = await warm.open();
  await sleep(200);
  closing = true;
  warm.conn.terminate();
  await sleep(200);
  closing = false;
  stats.presence = 0;
  stats.foreign = 0;
  stats.errors = {};
  await step({ event: 'ready', warm: warmOk, gen_cpu_s: cpuSeconds() });

  const clients = [];
  for (let i = 0; i < config.clients; i++) clients.push(new Client(i));
  const senderCount = config.mode === 'flat' ? config.senders : config.mode === 'rate' ? Math.max(1, config.senders) : 0;
  const senders = [];
  for (let i = 0; i < Math.min(senderCount, clients.length); i++) {
    clients[i].sender = new Sender(clients[i], i);
    senders.push(clients[i].sender);
  }
  const stalled = config.stall ? new Client(config.clients, { stalled: true }) : null;

  const connectStart = now();
  const failed = await openAll(clients);
  const connectSeconds = (now() - connectStart) / 1000;
  if (config.welcome) await welcomed(clients);
  if (stalled) await stalled.open();
  const settleSeconds = await settle();
  const open = clients.filter((c) => c.isOpen).length;
  const openIn = new Map();
  for (const c of clients) if (c.isOpen) openIn.set(c.room, (openIn.get(c.room) || 0) + 1);
  await step({
    event: 'connected',
    clients: config.clients,
    open,
    failed,
    connect_s: connectSeconds,
    settle_s: settleSeconds,
    storm: storm(clients, connectStart),
    gen_cpu_s: cpuSeconds(),
    presence_frames: stats.presence,
    foreign_frames: stats.foreign,
    errors: stats.errors,
  });

  stats.closeCodes = {};
  const cpu0 = process.cpuUsage();
  const start = now();
  const until = start + config.duration * 1000;
  measuring = true;
  if (config.mode === 'flat') await runFlat(senders, until);
  else if (config.mode === 'rate') await runRate(senders, start, until);
  else await sleep(config.duration * 1000);
  const sendEnd = now();
  const sendCpu = process.cpuUsage(cpu0);
  const sent = senders.reduce((n, s) => n + s.sent, 0);
  // Each message is owed to every client open in its sender's room.
  const expected = senders.reduce((n, s) => n + s.sent * (openIn.get(s.client.room) || 0), 0);
  await drain(expected);
  measuring = false;
  const end = config.mode === 'idle' ? now() : Math.max(sendEnd, stats.lastDelivery);
  const cpu = process.cpuUsage(cpu0);
  const wall = (now() - start) / 1000;
  const genCpu = (cpu.user + cpu.system) / 1e6;

  const sorted = latencies.subarray(0, stats.delivered).sort();
  const gaps = Float64Array.from(stats.heartbeatGaps).sort();
  const window = (end - start) / 1000;
  await step({
    event: 'done',
    run: config.run,
    mode: config.mode,
    protocol: config.protocol,
    clients: config.clients,
    open,
    senders: senders.length,
    sent,
    changes: stats.changes,
    expected,
    received: stats.delivered,
    lost: expected - stats.delivered,
    duplicates: stats.duplicates,
    out_of_order: stats.outOfOrder,
    misrouted: stats.misrouted,
    window_timeouts: stats.windowTimeouts,
    send_s: (sendEnd - start) / 1000,
    window_s: window,
    deliveries_per_s: window > 0 ? stats.delivered / window : 0,
    latency_ms: {
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      max: percentile(sorted, 1),
    },
    heartbeats: stats.heartbeats,
    heartbeat_clients: clients.filter((c) => c.lastHeartbeat > 0).length,
    heartbeat_gap_ms: { p50: percentile(gaps, 0.5), max: percentile(gaps, 1) },
    presence_frames: stats.presence,
    foreign_frames: stats.foreign,
    close_codes: stats.closeCodes,
    errors: stats.errors,
    gen_cpu_s: genCpu,
    gen_wall_s: wall,
    gen_send_cpu_s: (sendCpu.user + sendCpu.system) / 1e6,
    gen_saturated: (sendCpu.user + sendCpu.system) / 1e6 >= 0.9 * ((sendEnd - start) / 1000),
  });

  const end_ = { event: 'end' };
  if (stalled) end_.stalled = await probeStalled(stalled);
  if (config.extra) end_.extra = await probeExtra(config.clients + 1);
  closing = true;
  for (const c of clients) c.conn.terminate();
  if (stalled) stalled.conn.terminate();
  emit(end_);
  await sleep(100);
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(2);
});
