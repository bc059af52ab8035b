"""Many raw WebSocket clients on one thread, for shutdown, soak and capacity tests; every event is kept."""

from __future__ import annotations

import json
import selectors
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

import wsclient
from wsclient import CLOSE, PING, PONG, TEXT, close_code, masked, parse

__all__ = ["Crowd", "Member", "handshake", "masked"]


class Member:
    """One raw client socket and what it has read."""

    def __init__(self, sock: socket.socket, buffer: bytearray) -> None:
        self.sock = sock
        self.buffer = buffer
        #: How many text frames arrived, how many of each state, and the events the crowd was asked to keep.
        self.texts = 0
        self.states: Counter[int] = Counter()
        self.frames: list[dict] = []
        self.close_code: int | None = None


def handshake(port: int, path: str, rcvbuf: int | None = None, headers: str = "") -> Member:
    """Open a WebSocket to 127.0.0.1:port (receiving into rcvbuf bytes, if given) and return it after the 101."""
    sock, _, rest = wsclient.handshake(port, path, headers, rcvbuf=rcvbuf)
    sock.setblocking(False)
    return Member(sock, rest)


#: Handshakes in flight at once while a crowd connects.
BATCH = 200


def opened(port: int, paths: list[str], headers: list[str], timeout: float = 60) -> list[Member]:
    """Open a client for each path (with its extra header lines) with all their handshakes in flight at once;
    return them in order."""
    waiting: dict[socket.socket, tuple[int, bytearray]] = {}
    done: dict[int, Member] = {}
    with selectors.DefaultSelector() as selector:
        for index, path in enumerate(paths):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(wsclient.upgrade_request(port, path, headers[index]))
            sock.setblocking(False)
            waiting[sock] = (index, bytearray())
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise ConnectionError(f"{len(waiting)} handshakes unanswered after {timeout} s")
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                index, response = waiting[sock]
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError(f"closed during the handshake: {bytes(response)!r}")
                response += chunk
                head, found, rest = response.partition(b"\r\n\r\n")
                if not found:
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    raise ConnectionError(head.decode(errors="replace"))
                selector.unregister(sock)
                del waiting[sock]
                done[index] = Member(sock, bytearray(rest))
    return [done[index] for index in range(len(paths))]


class Crowd:
    """Open many clients, read them all from one selector, and tally frames and close codes."""

    def __init__(self, port: int, path: str = "/ws", count: int = 100, keep: Callable[[dict], bool] | None = None,
                 headers: Callable[[int], str] | None = None) -> None:
        """Open count clients; {n} in path becomes each client's number, {group} that number modulo 100.

        Each member counts its frames by state; the events keep accepts are kept in its frames.  headers(n)
        gives client n's extra header lines, if given.
        """
        self.keep = keep
        paths = [path.format(n=number, group=number % 100) for number in range(count)]
        extra = [headers(number) if headers else "" for number in range(count)]
        self.members = [each for start in range(0, count, BATCH)
                        for each in opened(port, paths[start:start + BATCH], extra[start:start + BATCH])]
        self.selector = selectors.DefaultSelector()
        for member in self.members:
            self.selector.register(member.sock, selectors.EVENT_READ, member)
            # What came with the 101 (a refusal's close frame) is read before the socket's end is.
            self._parse(member)

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
        while (parsed := parse(member.buffer)) is not None:
            opcode, payload = parsed.opcode, parsed.payload
            if opcode == TEXT:
                member.texts += 1
                event = json.loads(payload)
                member.states[event.get("state")] += 1
                if self.keep is not None and self.keep(event):
                    member.frames.append(event)
            elif opcode == CLOSE and member.close_code is None:
                member.close_code = close_code(payload)
                try:
                    member.sock.send(masked(CLOSE, payload[:2]))
                except OSError:
                    pass
            elif opcode == PING:
                try:
                    member.sock.send(masked(PONG, payload))
                except OSError:
                    pass

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
