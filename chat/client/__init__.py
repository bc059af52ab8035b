"""The chat's Python client, for bots, scripts and tests: ``with Client(url, room=...) as c: c.send(text)``.

It owns a connection (reconnects with jittered backoff, resumes with since), an
outbox of client ids resent until acked (exactly once), presence and history.
May import protocol and config only: it talks to any chat server over the wire.
"""

from .connection import Client
from .outbox import Refused
from .wire import Closed

__all__ = ["Client", "Closed", "Refused"]
