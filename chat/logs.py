"""The chat's log lines, written to stderr by a thread of their own.

A thread that logs a line formats it and puts it on a queue, and the
writer's thread writes it.  Written on the logging thread instead, each line
is an I/O under the handler's lock, during which another thread takes the
interpreter: in a storm of a thousand handshakes, each logging its connect,
the handshake threads spent most of their time queued on that lock.  After a
fork the child starts a writer of its own; at exit the writer writes what is
queued, then stops.

Imports nothing of the chat.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import threading

#: How long exit waits for the writer to write what is queued.
EXIT_WAIT = 5.0


class Writer:
    """Own the queue of formatted records and the thread that hands them to the handler."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer's thread, in this process."""
        self._thread = threading.Thread(target=self._run, name="chat-log-writer", daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """Start afresh in a forked child, whose parent's writer thread did not come with it."""
        self.queue = queue.SimpleQueue()
        self.start()

    def stop(self) -> None:
        """Write what is queued, then stop the thread and wait for it."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.queue.put(None)
        thread.join(EXIT_WAIT)

    def _run(self) -> None:
        while (record := self.queue.get()) is not None:
            self.handler.handle(record)


class Queued(logging.handlers.QueueHandler):
    """Format a record on the thread that logs it, and hand it to the writer's current queue."""

    def __init__(self, writer: Writer) -> None:
        super().__init__(writer.queue)
        self.writer = writer

    def enqueue(self, record: logging.LogRecord) -> None:
        """Put record on the queue of this process's writer."""
        self.writer.queue.put_nowait(record)


def to_stderr(logger: logging.Logger, formatter: logging.Formatter) -> None:
    """Have logger's lines written to stderr by a writer thread, from now on and in forked children."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    writer = Writer(handler)
    writer.start()
    os.register_at_fork(after_in_child=writer.restart)
    atexit.register(writer.stop)
    logger.addHandler(Queued(writer))
