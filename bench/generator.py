"""Drive bench/loadgen.js one step at a time over its stdin and stdout."""

import json
import os
import select
import subprocess
import time
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Self

from bench import proc

BENCH = Path(__file__).resolve().parent
GENERATOR_CPU = 0


class GeneratorError(RuntimeError):
    """The load generator failed, stopped early or said something unexpected."""


class Generator:
    """A running load generator that reports events and waits to be told to go on."""

    def __init__(self, config: dict, log: Path | None = None):
        with open(log, "w") if log else nullcontext(subprocess.DEVNULL) as err:
            self.process = subprocess.Popen(
                proc.pinned(["node", str(BENCH / "loadgen.js"), json.dumps(config)], GENERATOR_CPU),
                cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )
        self.buffer = b""

    def expect(self, event: str, timeout: float) -> dict:
        """Wait for the next event, which must be the named one, and return it."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GeneratorError(f"no {event!r} from the load generator in {timeout:.0f} s")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise GeneratorError(f"load generator exited ({self.process.wait()}) before {event!r}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if message.get("event") != event:
            raise GeneratorError(f"expected {event!r} from the load generator, got {message}")
        return message

    def proceed(self) -> None:
        """Let the generator go on to its next phase."""
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def close(self) -> None:
        """Wait briefly for the generator to exit, then kill it."""
        with suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
