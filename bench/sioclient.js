'use strict';
// A Socket.IO connection for the load generator, with the interface of WsClient.
//
// It is Node's socket.io-client, websocket transport only, so that a Socket.IO
// server is measured through the client its users run. Each connection is its
// own Manager (no multiplexing), never reconnects (a lost connection must show
// as a close, not be hidden by a retry), and offers no permessage-deflate, as
// WsClient does not either. The chat frames arrive as parsed "message" events;
// the close "code" is socket.io-client's disconnect reason.

const { io } = require('socket.io-client');

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

class SioClient {
  constructor(url, handlers, { timeout = 15 } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.timeout = timeout;
    this.state = CONNECTING;
    this.socket = null;
  }

  connect() {
    const socket = io(this.url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      perMessageDeflate: false,
      timeout: this.timeout * 1000,
    });
    this.socket = socket;
    socket.on('connect', () => {
      this.state = OPEN;
      this.handlers.open();
    });
    socket.on('connect_error', (err) => {
      if (this.state !== CONNECTING) return;
      this.state = CLOSED;
      const detail = (err.description && err.description.message) || '';
      const status = /server response: (\d+)/.exec(detail);
      this.handlers.refused(status ? Number(status[1]) : null);
    });
    socket.on('disconnect', (reason) => {
      if (this.state === CLOSED) return;
      this.state = CLOSED;
      this.handlers.close(reason);
    });
    socket.on('message', (payload) => this.handlers.message(payload));
  }

  // The transport's `ws` WebSocket, once the connection is open.
  get ws() {
    const engine = this.socket && this.socket.io.engine;
    return engine && engine.transport ? engine.transport.ws : null;
  }

  get buffered() {
    const engine = this.socket.io.engine;
    let bytes = this.ws ? this.ws.bufferedAmount : 0;
    for (const packet of engine.writeBuffer) bytes += packet.data ? packet.data.length : 0;
    return bytes;
  }

  // Bytes read from the TCP socket so far (ws keeps it as _socket).
  get bytesRead() {
    return this.ws && this.ws._socket ? this.ws._socket.bytesRead : 0;
  }

  send(text) {
    this.socket.send(text);
  }

  pause() {
    this.ws.pause();
  }

  resume() {
    this.ws.resume();
  }

  terminate() {
    if (this.ws) this.ws.terminate();
    this.socket.disconnect();
  }
}

module.exports = { SioClient, CONNECTING, OPEN, CLOSED };
