'use strict';
// The original Node.js example: broadcast every message to all clients,
// and send each connection a heartbeat every 5 s.

const WebSocket = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8080);
const wss = new WebSocket.Server({ host: '127.0.0.1', port });

wss.on('connection', (ws) => {
  const heartbeat = setInterval(() => {
    ws.send(JSON.stringify({ state: 1, message: '心跳' }));
  }, 5000);

  ws.on('message', (data) => {
    const payload = JSON.stringify({ state: 2, message: data.toString() });
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(payload);
      }
    });
  });

  ws.on('error', () => ws.terminate());
  ws.on('close', () => clearInterval(heartbeat));
});

process.on('SIGTERM', () => process.exit(0));
