"""Free ports for the tests' servers, safe when several pytest processes (xdist workers, other runs) choose at once.

Ports come from 10000-19999, and a cluster node's bus port (+10000) from 20000-29999: below the kernel's
ephemeral range (32768 and up by default), so no client socket and no port-0 bind takes a port between its
choice and its server's bind. Each process holds one slice of that range, by a lock on a file in the temp
folder, and walks it: no two processes choose the same port, and a process comes back to a port only after
walking its whole slice, long after a test could restart a server on it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

__all__ = ["bus_free_port", "free_port"]

FIRST, SLICES, SLICE = 10000, 20, 500
BUS = 10000


class Slice:
    """The ports this process chooses from, claimed on first use and held until it exits."""

    def __init__(self) -> None:
        self.lock: int | None = None
        self.start = 0
        self.turn = 0

    def claim(self) -> bool:
        """Lock the first slice no other process holds; return whether one was free."""
        if self.lock is not None:
            return True
        for number in range(SLICES):
            fd = os.open(Path(tempfile.gettempdir()) / f"chat-test-ports-{number}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.lock, self.start = fd, FIRST + number * SLICE
            return True
        return False

    def take(self, bus: bool) -> int | None:
        """Return the slice's next port free now (its bus port too when bus), or None if no slice was free."""
        if not self.claim():
            return None
        for _ in range(SLICE):
            port = self.start + self.turn % SLICE
            self.turn += 1
            if bindable(port) and (not bus or bindable(port + BUS)):
                return port
        raise RuntimeError(f"no free port in {self.start}-{self.start + SLICE - 1}")


MINE = Slice()


def bindable(port: int) -> bool:
    """Tell whether a socket can be bound to port on 127.0.0.1 now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now (any free port when every slice is held)."""
    port = MINE.take(bus=False)
    if port is not None:
        return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bus_free_port() -> int:
    """Return a free port below 55536 whose cluster bus port (port + 10000) is free too."""
    port = MINE.take(bus=True)
    if port is not None:
        return port
    for _ in range(1000):
        port = free_port()
        if port < 55536 and bindable(port + BUS):
            return port
    raise RuntimeError("no port pair free for a cluster node")
