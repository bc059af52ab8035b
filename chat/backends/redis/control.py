"""What one process tells every other (a user signed out), on a plain pub/sub channel.

Plain pub/sub reaches every subscriber in a cluster whichever node they
listen on; these messages are rare and need no history.  Each connection is
made afresh to the node ``connect`` names then, so a node that went away is
left for another.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from . import keys

log = logging.getLogger(__name__)

#: Seconds the reader waits for a message before it looks whether it must stop.
POLL = 0.5
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


class ControlReader(threading.Thread):
    """Receive sign-outs on the control channel and hand each to on_signout."""

    def __init__(
        self, connect: Callable[[], Any], on_signout: Callable[[str], None], stopping: threading.Event,
    ) -> None:
        super().__init__(name="chat-redis-control", daemon=True)
        self.connect, self.on_signout, self.stopping = connect, on_signout, stopping

    def run(self) -> None:
        delay = BACKOFF_MIN
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = self.connect().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.CONTROL)
                delay = BACKOFF_MIN
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=POLL)
                    if message is not None and message.get("type") == "message":
                        self._arrived(message["data"])
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                log.debug("control channel: %s", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (redis.RedisError, OSError):
                        pass

    def _arrived(self, data: bytes) -> None:
        try:
            user = json.loads(data)["signout"]
        except (ValueError, KeyError, TypeError):
            log.warning("skipping a malformed control message")
            return
        try:
            self.on_signout(str(user))
        except Exception:
            log.exception("signing out %s failed", user)
