'use strict';
// A minimal WebSocket client (RFC 6455) for the load generator.
//
// The `ws` client spends several microseconds of JavaScript per received frame,
// which made the generator, not the server, the bottleneck at 200k deliveries/s.
// This client reads into one shared buffer and hands each text frame over as a
// view, without copies or stream machinery. It is strict about what the server
// sends: a masked frame, a reserved bit, an unknown opcode or a bad handshake
// ends the connection and is reported as a protocol error.

const crypto = require('crypto');
const net = require('net');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const readBuffer = Buffer.alloc(1 << 16);

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

class WsClient {
  constructor(url, handlers, { timeout = 15 } = {}) {
    const { hostname, port, pathname, search } = new URL(url);
    this.host = hostname;
    this.port = Number(port);
    this.path = `${pathname}${search}`;
    this.handlers = handlers;
    this.timeout = timeout;
    this.state = CONNECTING;
    this.pending = null;
    this.fragments = null;
    this.closeCode = null;
    this.closeSent = false;
    this.mask = crypto.randomBytes(4);
    this.key = crypto.randomBytes(16).toString('base64');
    this.socket = null;
  }

  connect() {
    const socket = net.connect({
      host: this.host,
      port: this.port,
      onread: { buffer: readBuffer, callback: (n, buf) => this.feed(buf, n) },
    });
    this.socket = socket;
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      if (this.state === CONNECTING) this.fail('handshake timeout');
    }, this.timeout * 1000);
    socket.on('connect', () => {
      socket.write(
        `GET ${this.path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('error', (err) => this.handlers.error(err.code || err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      this.finish(this.closeCode === null ? 1006 : this.closeCode);
    });
  }

  get buffered() {
    return this.socket.writableLength;
  }

  get bytesRead() {
    return this.socket.bytesRead;
  }

  send(text) {
    this.socket.write(this.frame(0x1, Buffer.from(text)));
  }

  pause() {
    this.socket.pause();
  }

  resume() {
    this.socket.resume();
  }

  terminate() {
    this.socket.destroy();
  }

  fail(reason) {
    this.handlers.error(reason);
    this.socket.destroy();
  }

  finish(code) {
    if (this.state === CLOSED) return;
    const wasOpen = this.state === OPEN;
    this.state = CLOSED;
    this.closeCode = code;
    if (wasOpen) this.handlers.close(code);
    else this.handlers.refused(null);
  }

  frame(opcode, payload) {
    const length = payload.length;
    const head = length < 126 ? 2 : length < 65536 ? 4 : 10;
    const out = Buffer.allocUnsafe(head + 4 + length);
    out[0] = 0x80 | opcode;
    if (head === 2) {
      out[1] = 0x80 | length;
    } else if (head === 4) {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(length, 2);
    } else {
      out[1] = 0x80 | 127;
      out.writeBigUInt64BE(BigInt(length), 2);
    }
    this.mask.copy(out, head);
    const m = this.mask;
    for (let i = 0; i < length; i++) out[head + 4 + i] = payload[i] ^ m[i & 3];
    return out;
  }

  feed(chunk, n) {
    let data = chunk;
    let length = n;
    if (this.pending) {
      data = Buffer.concat([this.pending, chunk.subarray(0, n)]);
      length = data.length;
      this.pending = null;
    }
    let offset = 0;
    if (this.state === CONNECTING) {
      offset = this.handshake(data, length);
      if (offset < 0) return;
    }
    while (this.state === OPEN && length - offset >= 2) {
      const b0 = data[offset];
      const b1 = data[offset + 1];
      let size = b1 & 0x7f;
      let head = 2;
      if (size === 126) {
        if (length - offset < 4) break;
        size = data.readUInt16BE(offset + 2);
        head = 4;
      } else if (size === 127) {
        if (length - offset < 10) break;
        size = Number(data.readBigUInt64BE(offset + 2));
        head = 10;
      }
      if (length - offset < head + size) break;
      if (b1 & 0x80 || b0 & 0x70) {
        this.fail('protocol error: masked frame or reserved bit');
        return;
      }
      const start = offset + head;
      offset = start + size;
      this.onFrame(b0 & 0x0f, (b0 & 0x80) !== 0, data, start, offset);
    }
    if (offset < length && this.state !== CLOSED) {
      this.pending = Buffer.from(data.subarray(offset, length));
    }
  }

  handshake(data, length) {
    const end = data.subarray(0, length).indexOf('\r\n\r\n');
    if (end < 0) {
      this.pending = Buffer.from(data.subarray(0, length));
      return -1;
    }
    const head = data.toString('latin1', 0, end);
    const status = Number(head.slice(9, 12));
    if (status !== 101) {
      this.state = CLOSED;
      this.handlers.refused(status);
      this.socket.destroy();
      return -1;
    }
    const accept = crypto.createHash('sha1').update(this.key + GUID).digest('base64');
    if (!new RegExp(`^sec-websocket-accept:\\s*${accept.replace(/[+/=]/g, '\\$&')}\\s*$`, 'im').test(head)) {
      this.fail('protocol error: bad Sec-WebSocket-Accept');
      return -1;
    }
    this.state = OPEN;
    this.handlers.open();
    return end + 4;
  }

  onFrame(opcode, fin, data, start, end) {
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      if (opcode !== 0x0 && this.fragments) {
        this.fail('protocol error: new message inside a fragmented one');
      } else if (opcode === 0x0 && !this.fragments) {
        this.fail('protocol error: continuation without a message');
      } else if (fin && !this.fragments) {
        if (opcode === 0x2) this.handlers.error('binary frame');
        else this.handlers.message(data.subarray(start, end));
      } else {
        this.fragments = this.fragments || [];
        this.fragments.push(Buffer.from(data.subarray(start, end)));
        if (fin) {
          const whole = Buffer.concat(this.fragments);
          this.fragments = null;
          this.handlers.message(whole);
        }
      }
    } else if (opcode === 0x8) {
      this.closeCode = end - start >= 2 ? data.readUInt16BE(start) : 1005;
      if (!this.closeSent) {
        this.closeSent = true;
        const reply = Buffer.alloc(end - start >= 2 ? 2 : 0);
        if (reply.length) reply.writeUInt16BE(this.closeCode, 0);
        this.socket.end(this.frame(0x8, reply));
      }
      this.finish(this.closeCode);
    } else if (opcode === 0x9) {
      this.socket.write(this.frame(0xa, Buffer.from(data.subarray(start, end))));
    } else if (opcode !== 0xa) {
      this.fail(`protocol error: opcode ${opcode}`);
    }
  }
}

module.exports = { WsClient, CONNECTING, OPEN, CLOSED };
