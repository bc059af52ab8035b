"""What one process tells every other (a user signed out, a control message), on a plain pub/sub channel.

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
#: Seconds start() waits for the first subscription: what is told meanwhile would not reach this process.
SUBSCRIBE_WAIT = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


class Teller:
    """The backend's side that tells: sign-outs and control messages out, and once() across processes."""

    _redis: Callable[[], Any]
    _run: Callable[[Callable[[], Any]], Any]

    def sign_out(self, user: str) -> None:
        """Tell every process sharing this Redis to close the connections of user."""
        self.tell({"signout": user})

    def tell(self, message: dict[str, Any]) -> None:
        """Publish a control message to every process sharing this Redis (this one too)."""
        client = self._redis()
        self._run(lambda: client.publish(keys.CONTROL, json.dumps(message)))

    def once(self, key: str, seconds: float) -> bool:
        """Tell whether this is the first call with key, in any process, within seconds."""
        client = self._redis()
        return bool(self._run(lambda: client.set(keys.once(key), 1, nx=True, px=max(1, int(seconds * 1000)))))


class ControlReader(threading.Thread):
    """Receive the control channel: sign-outs to on_signout, every other message to on_control."""

    def __init__(
        self, connect: Callable[[], Any], on_signout: Callable[[str], None], stopping: threading.Event,
        on_control: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(name="chat-redis-control", daemon=True)
        self.connect, self.on_signout, self.stopping, self.on_control = connect, on_signout, stopping, on_control
        #: Set once Redis has confirmed the first subscription.
        self.subscribed = threading.Event()

    def start(self) -> None:
        """Start reading, and wait (SUBSCRIBE_WAIT at most) until the channel is subscribed."""
        super().start()
        self.subscribed.wait(SUBSCRIBE_WAIT)

    def run(self) -> None:
        delay = BACKOFF_MIN
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = self.connect().pubsub()
                pubsub.subscribe(keys.CONTROL)
                delay = BACKOFF_MIN
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=POLL)
                    kind = None if message is None else message.get("type")
                    if kind == "message":
                        self._arrived(message["data"])
                    elif kind == "subscribe":
                        self.subscribed.set()
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
            body = json.loads(data)
            user = body.get("signout")
        except (ValueError, AttributeError):
            log.warning("skipping a malformed control message")
            return
        if user is None:
            if self.on_control is not None:
                try:
                    self.on_control(body)
                except Exception:
                    log.exception("a control message failed: %.200s", data)
            return
        try:
            self.on_signout(str(user))
        except Exception:
            log.exception("signing out %r failed", user)
