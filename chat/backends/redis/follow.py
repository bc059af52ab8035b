"""Run a script on a Redis Cluster while its topology changes: follow it for a bounded time, then give up.

redis-py follows MOVED and ASK and retries TRYAGAIN by itself, within a few
tries; a slot being migrated, a failover under way (CLUSTERDOWN, a primary
that refuses connections until its replica is promoted) or a slot map that
is not yet right make it raise.  ``run`` tries again, with a growing pause,
for at most ``FOLLOW`` seconds, and only when the script cannot have run (the
cluster refused it, or no connection could be made): a command whose answer
was lost may have run, and is never sent twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from .. import Unavailable

#: Seconds a script is retried while the cluster moves, from its first failure.
FOLLOW = 3.0
PAUSE_MIN, PAUSE_MAX = 0.05, 0.5
#: Raised by a cluster that could not serve the command now, before running it.
NOT_RUN = (ClusterDownError, TryAgainError, SlotNotCoveredError, MovedError, AskError)
#: Whatever a command raises when Redis (or a cluster's node) cannot serve it.
UNREACHABLE = (
    redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError, ClusterDownError,
    RedisClusterException, TryAgainError, MovedError,
)


def never_sent(exc: Exception) -> bool:
    """Tell whether a connection error happened while connecting, before any command went out."""
    text = str(exc)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and (
        "connecting to" in text or text.startswith("Timeout connecting")
    )


def run(call: Callable[[], Any], cluster: bool, clock: Callable[[], float] = time.monotonic) -> Any:
    """Return what call returns; on a cluster, retry it for up to FOLLOW s while it surely did not run.

    Raise Unavailable (maybe_done when the command may have run) once it
    cannot be served.
    """
    deadline: float | None = None
    pause = PAUSE_MIN
    while True:
        try:
            return call()
        except UNREACHABLE as exc:
            retry = cluster and (isinstance(exc, NOT_RUN) or never_sent(exc))
            now = clock()
            if deadline is None:
                deadline = now + FOLLOW
            if not retry or now + pause > deadline:
                # A command that timed out waiting for its answer may have run.
                maybe_done = isinstance(exc, redis.TimeoutError) and not never_sent(exc)
                raise Unavailable(f"redis is unreachable: {exc}", maybe_done) from exc
        time.sleep(pause)
        pause = min(pause * 2, PAUSE_MAX)
