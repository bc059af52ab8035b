"""The standalone app's log writer: every line a thread logs reaches stderr, at exit and in a forked child too."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from served import ROOT

THREADS = """
    import logging, threading
    from chat import configure_logging

    configure_logging()
    log = logging.getLogger("chat.test")

    def lines(thread):
        for number in range(500):
            log.info("thread %d line %d", thread, number)

    threads = [threading.Thread(target=lines, args=(thread,), name=f"logger-{thread}") for thread in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""

FORK = """
    import logging, os
    from chat import configure_logging

    configure_logging()
    log = logging.getLogger("chat.test")
    log.info("before the fork")
    child = os.fork()
    if child == 0:
        log.info("from the child %d", os.getpid())
    else:
        os.waitpid(child, 0)
        log.info("from the parent")
"""


def stderr_of(script: str) -> str:
    """Run script in a fresh interpreter from the project's folder and return what it wrote to stderr."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stderr


def test_every_line_logged_is_written_by_exit_in_each_threads_order():
    """Lines logged from four threads all reach stderr, formatted, each thread's in the order it logged them."""
    written = [line for line in stderr_of(THREADS).splitlines() if " INFO chat.test: thread " in line]
    assert len(written) == 2000
    for thread in range(4):
        numbers = [int(line.rsplit(" ", 1)[1]) for line in written if f"thread {thread} line" in line]
        assert numbers == list(range(500))


def test_a_forked_child_writes_its_own_lines():
    """After a fork (gunicorn's workers of a preloaded app) the child's lines are written by a writer of its own."""
    err = stderr_of(FORK)
    assert err.count("before the fork") == 1
    assert "from the child" in err and "from the parent" in err
