'use strict';
// A broadcast server that gets things wrong on purpose, for the load generator's self-test.
//
// Usage: node faulty.js '<json config>'
//
// It relays every message to every client as {"state": 2, "message": text}, like
// the Node peer, except for what it is told to break. A message whose sequence
// number (the third `|` field of the generator's text) modulo `period` is in
//   drop      - is sent to nobody;
//   duplicate - is sent twice;
//   swap      - is held back and sent right after the next message;
//   misroute  - is also sent to the clients of another room;
// and every message waits `delay_ms` before any of that (in order: timers of one
// length fire in the order they were set). So the generator must report exactly
// the injected loss, duplicates, reordering and misrouting, and latencies of at
// least the delay. Clients are in rooms by their `room` query parameter (none:
// one room), and a message goes to its sender's room. With `presence` > 0 every
// joiner gets that many state-3 join frames and then a welcome, as a storm would.
//
// `protocol` is `ws` (a WebSocket at /ws) or `socketio`: the Engine.IO 4 /
// Socket.IO 5 framing over a WebSocket at /socket.io/, written here by hand (the
// handshake, the namespace connect and "message" events) so that the self-test
// does not depend on a Socket.IO server library. Any other HTTP request gets 200.

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const config = {
  port: 8080,
  protocol: 'ws',
  period: 50,
  drop: [],
  duplicate: [],
  swap: [],
  misroute: [],
  presence: 0,
  delay_ms: 0,
  ...JSON.parse(process.argv[2] || '{}'),
};

const socketio = config.protocol === 'socketio';
const path = socketio ? '/socket.io/' : '/ws';
const clients = new Set();
let held = null;

function encode(payload) {
  return socketio ? `42${JSON.stringify(['message', payload])}` : JSON.stringify(payload);
}

function broadcast(text, room) {
  const frame = encode({ state: 2, message: text });
  for (const ws of clients) if (ws.room === room) ws.send(frame);
}

function misroute(text, room) {
  const other = [...clients].find((ws) => ws.room !== room);
  if (other) broadcast(text, other.room);
}

function relay(text, room) {
  const seq = Number(text.split('|')[2]);
  const key = Number.isInteger(seq) ? seq % config.period : -1;
  if (config.drop.includes(key)) return;
  if (config.misroute.includes(key)) misroute(text, room);
  if (config.swap.includes(key)) {
    held = [text, room];
    return;
  }
  broadcast(text, room);
  if (config.duplicate.includes(key)) broadcast(text, room);
  if (held !== null) {
    const late = held;
    held = null;
    broadcast(...late);
  }
}

function receive(text, room) {
  if (config.delay_ms > 0) setTimeout(() => relay(text, room), config.delay_ms);
  else relay(text, room);
}

function greet(ws) {
  for (let i = 0; i < config.presence; i++) {
    ws.send(encode({ state: 3, message: 'someone joined', event: 'join', room: ws.room, name: `p${i}`, online: i + 1 }));
  }
  ws.send(encode({ state: 3, message: 'welcome', event: 'welcome', room: ws.room, name: 'you', online: 1, users: [] }));
}

function join(ws, req) {
  ws.room = new URL(req.url, 'http://localhost').searchParams.get('room') || 'lobby';
  const heartbeat = setInterval(() => ws.send(encode({ state: 1, message: '心跳' })), 5000);
  ws.on('close', () => {
    clearInterval(heartbeat);
    clients.delete(ws);
  });
  ws.on('error', () => ws.terminate());
  if (!socketio) {
    clients.add(ws);
    ws.on('message', (data) => receive(data.toString(), ws.room));
    if (config.presence > 0) greet(ws);
    return;
  }
  const sid = () => crypto.randomBytes(8).toString('hex');
  ws.send(`0${JSON.stringify({ sid: sid(), upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1e6 })}`);
  ws.on('message', (data) => {
    const packet = data.toString();
    if (packet.startsWith('40')) {
      ws.send(`40${JSON.stringify({ sid: sid() })}`);
      clients.add(ws);
    } else if (packet.startsWith('42')) {
      const [event, text] = JSON.parse(packet.slice(2));
      if (event === 'message' && typeof text === 'string') receive(text, ws.room);
    } else if (packet.startsWith('41') || packet === '1') {
      ws.close();
    }
  });
}

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('OK\n');
});
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  if (new URL(req.url, 'http://localhost').pathname !== path) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => join(ws, req));
});
server.listen(config.port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
