"""Many raw WebSocket clients on one thread, for shutdown, soak and capacity tests."""

from __future__ import annotations

import base64
import os
import selectors
import socket
import struct
import time


class Member:
    """One raw client socket and what it has read."""

    def __init__(self, sock: socket.socket, buffer: bytes) -> None:
        self.sock = sock
        self.buffer = buffer
        self.texts = 0
        self.close_code: int | None = None


def handshake(port: int, path: str, rcvbuf: int | None = None, headers: str = "") -> Member:
    """Open a WebSocket to 127.0.0.1:port (receiving into rcvbuf bytes, if given) and return it after the 101."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {response!r}")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    sock.setblocking(False)
    return Member(sock, rest)


def masked(opcode: int, payload: bytes) -> bytes:
    """Encode a client frame (clients must mask)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Crowd:
    """Open many clients, read them all from one selector, and tally frames and close codes."""

    def __init__(self, port: int, path: str = "/ws", count: int = 100) -> None:
        """Open count clients; {n} in path becomes each client's number, {group} that number modulo 100."""
        self.members = [handshake(port, path.format(n=number, group=number % 100)) for number in range(count)]
        self.selector = selectors.DefaultSelector()
        for member in self.members:
            self.selector.register(member.sock, selectors.EVENT_READ, member)

    def pump(self, seconds: float, until=None) -> None:
        """Read for up to seconds, or until until() is true."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if until is not None and until():
                return
            for key, _ in self.selector.select(min(left, 0.2)):
                self._read(key.data)

    def _read(self, member: Member) -> None:
        try:
            chunk = member.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(member.sock)
            if member.close_code is None:
                member.close_code = 1006
            return
        member.buffer += chunk
        self._parse(member)

    def _parse(self, member: Member) -> None:
        buffer = member.buffer
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            offset = 2
            if size == 126:
                if len(buffer) < 4:
                    break
                size, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif size == 127:
                if len(buffer) < 10:
                    break
                size, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + size:
                break
            payload = buffer[offset:offset + size]
            buffer = buffer[offset + size:]
            if opcode == 0x1:
                member.texts += 1
            elif opcode == 0x8 and member.close_code is None:
                member.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                try:
                    member.sock.send(masked(0x8, payload[:2]))
                except OSError:
                    pass
            elif opcode == 0x9:
                try:
                    member.sock.send(masked(0xA, payload))
                except OSError:
                    pass
        member.buffer = buffer

    def codes(self) -> dict[int | None, int]:
        """Return how many members saw each close code (None: still open)."""
        tally: dict[int | None, int] = {}
        for member in self.members:
            tally[member.close_code] = tally.get(member.close_code, 0) + 1
        return tally

    def all_closed(self) -> bool:
        return all(member.close_code is not None for member in self.members)

    def close(self, clean: bool = True) -> None:
        """Close every member, with a close frame or by dropping the socket."""
        for member in self.members:
            try:
                if clean and member.close_code is None:
                    member.sock.send(masked(0x8, struct.pack("!H", 1000)))
                member.sock.close()
            except OSError:
                pass
        self.selector.close()
