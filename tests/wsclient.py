"""The tests' WebSocket clients: one frame codec, a JSON-event client, and a raw client that writes frames by hand.

`Client` (websocket-client underneath) reads the server's JSON events; `RawClient` sends any bytes, checks
every server frame (unmasked, unfragmented, RSV bits only for permessage-deflate) and tells a close frame from
TCP ending. `frame` encodes and `parse` decodes a frame for every test that talks raw WebSocket.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import websocket

__all__ = ["BINARY", "CLOSE", "CONTINUATION", "ENDED", "PING", "PONG", "TEXT", "Client", "Closed", "Frame",
           "RawClient", "cid_frame", "close_code", "close_payload", "frame", "handshake", "masked", "parse",
           "upgrade_request"]

PING, PONG, CLOSE, TEXT, BINARY, CONTINUATION = 0x9, 0xA, 0x8, 0x1, 0x2, 0x0
#: What RawClient.frame returns once the server ended TCP.
ENDED = -1


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
          width: int | None = None) -> bytes:
    """Encode a client frame; width forces a 7-, 16- or 64-bit length even where it is not the shortest."""
    size = len(payload)
    width = width or (7 if size < 126 else 16 if size < 65536 else 64)
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask else 0
    if width == 7:
        header = struct.pack("!BB", first, bit | size)
    elif width == 16:
        header = struct.pack("!BBH", first, bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    mask_bytes = (key * (size // 4 + 1))[:size]
    masked_payload = int.from_bytes(payload, "big") ^ int.from_bytes(mask_bytes, "big")
    return header + key + masked_payload.to_bytes(size, "big")


def masked(opcode: int, payload: bytes) -> bytes:
    """Encode a complete, masked client frame."""
    return frame(opcode, payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """Encode the body of a close frame."""
    return struct.pack("!H", code) + reason


def close_code(data: bytes) -> int:
    """Return the status code of a close frame's payload."""
    return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005


def cid_frame(text: str, cid: str) -> str:
    """Return a protocol v2 client frame: text with its client id."""
    return json.dumps({"text": text, "cid": cid})


class Frame(NamedTuple):
    """One server frame: its first byte (FIN, RSV, opcode) and payload."""

    first: int
    payload: bytes

    @property
    def opcode(self) -> int:
        return self.first & 0x0F


def parse(buffer: bytearray) -> Frame | None:
    """Take one complete server frame off the front of buffer, or return None while it is incomplete."""
    if len(buffer) < 2:
        return None
    first, size, offset = buffer[0], buffer[1] & 0x7F, 2
    assert not buffer[1] & 0x80, "a server frame is masked"
    if size == 126:
        if len(buffer) < 4:
            return None
        size, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    if len(buffer) < offset + size:
        return None
    payload = bytes(buffer[offset:offset + size])
    del buffer[:offset + size]
    return Frame(first, payload)


def upgrade_request(port: int, path: str, headers: str = "") -> bytes:
    """Return a WebSocket handshake request for path on 127.0.0.1:port, with extra header lines (each ending CRLF)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode()


def handshake(port: int, path: str = "/ws", headers: str = "", timeout: float = 30, rcvbuf: int | None = None
              ) -> tuple[socket.socket, bytes, bytearray]:
    """Open a WebSocket to 127.0.0.1:port; return the socket, the 101 head and what followed it.

    headers are extra header lines, each ending in CRLF; rcvbuf, if given, the socket's receive buffer (set
    before connecting, so that the window is small from the start). Anything but a 101 raises ConnectionError.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade_request(port, path, headers))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise ConnectionError(f"closed during the handshake: {response!r}")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(head.decode(errors="replace"))
    return sock, head, bytearray(rest)


class Closed(Exception):
    """The server sent a close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code, self.reason = code, reason


class Client:
    """A WebSocket client that reads JSON events and keeps what it saw."""

    def __init__(self, url: str, timeout: float = 10, **options: object) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        self.events: list[dict] = []

    def send(self, text: str) -> None:
        self.ws.send(text)

    def next(self, skip_heartbeats: bool = True) -> dict:
        """Return the next event, skipping heartbeats unless asked not to."""
        while True:
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise Closed(close_code(data), data[2:].decode(errors="replace"))
            event = json.loads(data)
            self.events.append(event)
            if skip_heartbeats and event.get("state") == 1:
                continue
            return event

    def next_where(self, predicate: Callable[[dict], bool], limit: int = 10_000) -> dict:
        """Return the first event that matches, reading past the others."""
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event")

    def chats(self, count: int) -> list[dict]:
        """Read until count chat messages (state 2) arrived and return them."""
        return [self.next_where(lambda e: e.get("state") == 2) for _ in range(count)]

    def close_code(self, timeout: float = 10) -> int:
        """Read until the server closes, and return its close code."""
        return self.closed(timeout).code

    def closed(self, timeout: float = 10) -> Closed:
        """Read until the server closes, and return its close frame (code and reason); fail after timeout even
        while heartbeats keep coming."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.ws.settimeout(left)
                self.next(skip_heartbeats=False)
        except Closed as closed:
            return closed
        except websocket.WebSocketTimeoutException:
            pass
        raise AssertionError(f"the server did not close the connection within {timeout} s")

    def welcome(self) -> dict:
        """Read until the welcome event and return it."""
        return self.next_where(lambda e: e.get("event") == "welcome")

    def drop(self) -> None:
        """End the connection abruptly, without a close frame."""
        self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.ws.sock.close()

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass


class RawClient:
    """A raw WebSocket client: writes frames built by hand, reads and checks the server's frames.

    offer is a Sec-WebSocket-Extensions value to offer (permessage-deflate); with welcome it reads up to the
    welcome before returning.
    """

    def __init__(self, port: int, path: str = "/ws", offer: str = "", welcome: bool = True,
                 headers: str = "") -> None:
        extensions = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
        self.sock, self.head, self.buffer = handshake(port, path, extensions + headers, timeout=5)
        negotiated = b"permessage-deflate" in self.head.lower()
        assert negotiated is bool(offer), self.head
        self.inflater = zlib.decompressobj(-15) if negotiated else None
        self.deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        # Both sides agreed to start every message with a fresh compression context.
        self.fresh = b"no_context_takeover" in self.head
        self.chats: deque[dict] = deque()
        self.pongs: deque[bytes] = deque()
        self.others: deque[dict] = deque()
        if welcome:
            self.next_where(lambda e: e.get("event") == "welcome")

    def send(self, opcode: int, payload: bytes = b"", **options: object) -> None:
        self.sock.sendall(frame(opcode, payload, **options))

    def say(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def deflate(self, data: bytes) -> bytes:
        """Compress one message's bytes as permessage-deflate does (sync flush, tail removed)."""
        if self.fresh:
            self.deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        return (self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]

    def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """Return the next frame's opcode and payload, or ENDED once the server ended TCP."""
        deadline = time.monotonic() + timeout
        while (parsed := self._parse()) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {timeout:.1f} s waiting for a frame from the server"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return ENDED, b""
            self.buffer += chunk
        return parsed

    def _parse(self) -> tuple[int, bytes] | None:
        parsed = parse(self.buffer)
        if parsed is None:
            return None
        first, payload = parsed
        opcode, rsv = first & 0x0F, first & 0x70
        assert first & 0x80, "the server fragments a frame"
        if rsv:
            assert rsv == 0x40 and self.inflater is not None and opcode == TEXT, f"bad server RSV bits {rsv:#x}"
            if self.fresh:
                self.inflater = zlib.decompressobj(-15)
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return opcode, payload

    def _read_one(self, timeout: float) -> int | tuple[int, str]:
        """Read one frame: keep chats and pongs aside; return a close's (code, reason), ENDED or the opcode."""
        opcode, payload = self.frame(timeout)
        if opcode == TEXT:
            event = json.loads(payload)
            if event["state"] == 2:
                self.chats.append(event)
            elif event["state"] != 1:
                self.others.append(event)
        elif opcode == PONG:
            self.pongs.append(payload)
        elif opcode == CLOSE:
            assert len(payload) != 1, "a close frame with a 1-byte body"
            return close_code(payload), payload[2:].decode()
        else:
            assert opcode in (ENDED, PING), f"unexpected opcode {opcode:#x} from the server"
        return opcode

    def next_where(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Return the first event other than a chat message or a heartbeat that matches."""
        deadline = time.monotonic() + timeout
        while True:
            while self.others:
                event = self.others.popleft()
                if predicate(event):
                    return event
            self._expect_open(self._read_one(deadline - time.monotonic()))

    def chat(self, timeout: float = 5.0) -> str:
        """Return the text of the next chat message (state 2)."""
        deadline = time.monotonic() + timeout
        while not self.chats:
            self._expect_open(self._read_one(deadline - time.monotonic()))
        return self.chats.popleft()["message"]

    def pong(self, timeout: float = 5.0) -> bytes:
        """Return the payload of the next pong."""
        deadline = time.monotonic() + timeout
        while not self.pongs:
            self._expect_open(self._read_one(deadline - time.monotonic()))
        return self.pongs.popleft()

    def closed(self, timeout: float = 5.0) -> int:
        """Read until the server's close frame and return its code."""
        return self.close_frame(timeout)[0]

    def close_frame(self, timeout: float = 5.0) -> tuple[int, str]:
        """Read until the server's close frame and return its code and reason."""
        deadline = time.monotonic() + timeout
        while True:
            result = self._read_one(deadline - time.monotonic())
            assert result != ENDED, "the server ended TCP without a close frame"
            if isinstance(result, tuple):
                return result

    def ended(self, timeout: float) -> float:
        """Read and drop until the server ends TCP; return how long that took."""
        started = time.monotonic()
        while (left := started + timeout - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return time.monotonic() - started
            except TimeoutError:
                break
            except ConnectionResetError:
                return time.monotonic() - started
        raise AssertionError(f"the server did not end TCP within {timeout:.1f} s")

    @staticmethod
    def _expect_open(result: int | tuple[int, str]) -> None:
        assert not isinstance(result, tuple), f"the server closed with {result[0]}: {result[1]}"
        assert result != ENDED, "the server ended TCP"

    def close(self) -> None:
        self.sock.close()
