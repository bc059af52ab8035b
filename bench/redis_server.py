"""Run a throwaway redis-server for one measured run: a free port, no persistence, pinned like the server."""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import proc


class NoRedis(RuntimeError):
    """redis-server is not installed or did not start."""


@dataclass
class Redis:
    """A running redis-server: its process and URL."""

    process: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        """Return redis-server's pid."""
        return self.process.pid

    @property
    def url(self) -> str:
        """Return the redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"


def answers(port: int) -> bool:
    """Tell whether a redis-server on port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def start(cpu: int | None, log: Path | None = None, timeout: float = 10.0) -> Iterator[Redis]:
    """Run redis-server (on cpu, when given) until the block ends."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise NoRedis("redis-server is not on PATH (apt-get install redis-server)")
    port = proc.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        cmd = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", directory, "--daemonize", "no", "--loglevel", "warning",
        ]
        with open(log, "w") if log else open(Path(directory) / "redis.log", "w") as out:
            process = subprocess.Popen(
                proc.pinned(cmd, cpu) if cpu is not None else cmd,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while not answers(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise NoRedis(f"redis-server did not start (see {log})")
                time.sleep(0.02)
            yield Redis(process, port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
