"""Database calls that must not stall gevent's event loop, run in gevent's threadpool.

Under ``gunicorn -k gevent`` threading is monkey-patched: the store's writer
thread is a greenlet, and a call into a driver that knows nothing of gevent
(sqlite3) holds up every greenlet of the worker until it returns, which for
a commit waiting on another process's write lock is up to the busy timeout.
``call`` runs such a call in one of the hub's threadpool threads (real OS
threads, where sqlite3 lets go of the GIL) and makes only the calling
greenlet wait.  Without gevent, or before it patched threading, it calls in
place, so gthread workers are unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def patched() -> bool:
    """Tell whether gevent has monkey-patched threading in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def call(work: Callable[..., T], *args: Any) -> T:
    """Return work(*args), run in gevent's threadpool when threading is patched, else here."""
    if patched():
        from gevent import get_hub

        return get_hub().threadpool.apply(work, args)
    return work(*args)
