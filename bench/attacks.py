"""Replay the hostile clients of issue 21 against a gunicorn worker, and print what they cost it.

    python -m bench.attacks replay --kind gthread --joiners 20 [--root DIR]
    python -m bench.attacks flood --kind gevent [--frames 250000]
    python -m bench.attacks reconnect

``--root`` serves the chat from another checkout (an export of an older
commit), so the same attack measures before and after a change.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """One gunicorn worker serving the chat from root."""

    def __init__(self, root: Path, kind: str, **env: str) -> None:
        self.port = free_port()
        self.folder = tempfile.TemporaryDirectory(prefix="chat-attack-")
        environ = {
            **os.environ, "CHAT_STORE_URL": f"sqlite:///{self.folder.name}/chat.db", "CHAT_PING_INTERVAL": "300",
            "CHAT_MAX_CONNECTIONS_PER_IP": "1000", **env,
        }
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        command = [
            str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-k", kind, "-w", "1", "--threads", "300",
            "-b", f"127.0.0.1:{self.port}", "app:app",
        ]
        self.log = open(Path(self.folder.name) / "log", "wb")
        self.process = subprocess.Popen(command, cwd=root, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                if self.worker():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not start")

    def get(self, path: str) -> bytes:
        """Return the body of a GET."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
            return response.read()

    def worker(self) -> int:
        """Return the worker's pid."""
        text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(text[0]) if text else 0

    def rss_mb(self) -> float:
        """Return the worker's resident memory in MB."""
        for line in Path(f"/proc/{self.worker()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def connections(self) -> int:
        """Return how many connections the worker holds."""
        return json.loads(self.get("/healthz"))["connections"]

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


def mask_fast(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """Encode a client frame with a zero mask (legal, and no work to mask)."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


def connect(port: int, path: str, rcvbuf: int | None = None, headers: str = "") -> socket.socket:
    """Open a WebSocket and return its socket after the 101."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed in the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    return sock


class Frames:
    """Read server frames from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _need(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def next(self) -> tuple[int, bytes]:
        """Return the next frame's opcode and payload."""
        self._need(2)
        opcode, size, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if size == 126:
            self._need(4)
            size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif size == 127:
            self._need(10)
            size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        self._need(offset + size)
        payload, self.buffer = self.buffer[offset:offset + size], self.buffer[offset + size:]
        return opcode, payload

    def chat(self) -> dict:
        """Return the next chat message (state 2), raising on a close."""
        while True:
            opcode, payload = self.next()
            if opcode == 0x8:
                raise ConnectionError(f"closed {struct.unpack('!H', payload[:2])[0]}")
            if opcode == 0x1:
                event = json.loads(payload)
                if event.get("state") == 2:
                    return event


def replay(args: argparse.Namespace) -> None:
    """Fill a room with escaped history from three guests, then open joiners that never read."""
    served = Served(args.root, args.kind, **dict(item.split("=", 1) for item in args.env))
    try:
        text = b"\x01" * 65536
        senders = [connect(served.port, "/ws?room=attic") for _ in range(3)]
        drains = [threading.Thread(target=_drain, args=(sock,), name="drain") for sock in senders]
        for drain in drains:
            drain.start()
        for n in range(args.messages):
            senders[n % 3].sendall(mask_fast(0x1, text))
        # Within the senders' bursts every message goes out at once; the store writes them in the background.
        time.sleep(4)
        before = served.rss_mb()
        joiners = [connect(served.port, "/ws?room=attic", rcvbuf=4096) for _ in range(args.joiners)]
        time.sleep(3)
        after = served.rss_mb()
        print(f"{args.kind}: {args.messages} messages of 65,536 \\x01; {args.joiners} joiners that never read:"
              f" worker RSS {before:.0f} -> {after:.0f} MB (+{after - before:.1f} MB,"
              f" {(after - before) / args.joiners:.2f} MB each); connections {served.connections()}")
        before = served.rss_mb()
        body = served.get("/api/rooms/attic/messages?limit=100")
        after = served.rss_mb()
        print(f"{args.kind}: GET /api/rooms/attic/messages?limit=100 answered {len(body) / 1e6:.1f} MB,"
              f" worker RSS {before:.0f} -> {after:.0f} MB")
        for sock in joiners + senders:
            sock.close()
    finally:
        served.stop()


def _drain(sock: socket.socket) -> None:
    """Read and forget whatever the server sends, until the socket ends."""
    buffer = bytearray(1 << 20)
    try:
        while sock.recv_into(buffer):
            pass
    except OSError:
        pass


def latency(served: Served, stop: threading.Event, samples: dict[str, list[float]]) -> None:
    """Time /healthz and a chat round trip in another room until stop is set."""
    sock = connect(served.port, "/ws?room=quiet")
    sock.settimeout(10)
    frames = Frames(sock)
    n = 0
    while not stop.is_set():
        start = time.monotonic()
        served.get("/healthz")
        samples["healthz"].append(time.monotonic() - start)
        n += 1
        start = time.monotonic()
        sock.sendall(mask_fast(0x1, f"ping {n}".encode()))
        while frames.chat()["message"] != f"ping {n}":
            pass
        samples["round trip"].append(time.monotonic() - start)
        stop.wait(0.25)
    sock.close()


def flood(args: argparse.Namespace) -> None:
    """Send empty text frames flat out while another client times /healthz and a round trip."""
    served = Served(args.root, args.kind, **dict(item.split("=", 1) for item in args.env))
    try:
        samples: dict[str, list[float]] = {"healthz": [], "round trip": []}
        stop = threading.Event()
        timer = threading.Thread(target=latency, args=(served, stop, samples), name="latency")
        timer.start()
        time.sleep(1)
        cpu_before = _cpu(served.worker())
        sock = connect(served.port, "/ws?room=flood")
        frame = mask_fast(args.opcode, b"", fin=args.opcode != 0x0)
        if args.opcode == 0x0:
            sock.sendall(mask_fast(0x1, b"", fin=False))
        batch = frame * 10_000
        sent = 0
        try:
            while sent < args.frames:
                sock.sendall(batch)
                sent += 10_000
        except OSError as exc:
            print(f"the flood's socket failed after {sent} frames: {exc}")
        sock.settimeout(2)
        code = None
        deadline = time.monotonic() + 10
        try:
            frames = Frames(sock)
            # Heartbeats keep coming to a connection left open: look for a close until the deadline.
            while code is None and time.monotonic() < deadline:
                opcode, payload = frames.next()
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0]
        except (OSError, ConnectionError):
            pass
        sock.close()
        time.sleep(1)
        stop.set()
        timer.join()
        worst = {key: max(values) * 1000 if values else 0 for key, values in samples.items()}
        print(f"{args.kind}: {sent} frames of opcode {args.opcode} (empty): close code {code};"
              f" worst /healthz {worst['healthz']:.0f} ms, worst round trip {worst['round trip']:.0f} ms;"
              f" worker CPU {_cpu(served.worker()) - cpu_before:.2f} s")
    finally:
        served.stop()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reconnect(args: argparse.Namespace) -> None:
    """Reconnect ten times, sending 25 messages each time; count what a watcher gets in 2.5 s."""
    served = Served(args.root, args.kind, **dict(item.split("=", 1) for item in args.env))
    try:
        watcher = connect(served.port, "/ws?room=burst")
        watcher.settimeout(0.2)
        frames = Frames(watcher)
        start = time.monotonic()
        for round_ in range(10):
            sock = connect(served.port, "/ws?room=burst")
            for n in range(25):
                sock.sendall(mask_fast(0x1, f"{round_}-{n}".encode()))
            sock.sendall(mask_fast(0x8, struct.pack("!H", 1000)))
            sock.close()
        got = 0
        while time.monotonic() - start < 2.5:
            try:
                frames.chat()
                got += 1
            except TimeoutError:
                continue
            except ConnectionError:
                break
        print(f"{args.kind}: 10 reconnects x 25 messages: the watcher got {got} in 2.5 s")
    finally:
        served.stop()


def main() -> None:
    """Run one attack."""
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=["replay", "flood", "reconnect"])
    parser.add_argument("--kind", default="gthread")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--joiners", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--frames", type=int, default=250_000)
    parser.add_argument("--opcode", type=int, default=1, help="1 empty text, 9 ping, 10 pong, 0 continuation")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server, repeatable")
    args = parser.parse_args()
    {"replay": replay, "flood": flood, "reconnect": reconnect}[args.attack](args)


if __name__ == "__main__":
    main()
