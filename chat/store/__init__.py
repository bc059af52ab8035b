"""The message store: the durable record of every room, chosen by CHAT_STORE_URL.

The fan-out backend (memory or Redis) gives out ids and carries messages
between processes; the store keeps them: SQLite by default (``chat.db`` in
the app's instance folder), PostgreSQL for a ``postgresql://`` URL, nothing
for ``none``.  The hub writes through it and completes joins' replays from
it (``history``); the mount reads it for the HTTP API.  Only ``create``
and the names below are for other modules.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import ConfigError
from .conversations import Access, Summary
from .off import NoStore
from .records import Claim, Retention, Revision, Stored
from .store import Store

__all__ = ["Access", "Claim", "NoStore", "Retention", "Revision", "Store", "Stored", "Summary", "create"]

DEFAULT_FILE = "chat.db"


def create(url: str, settings: dict[str, Any], instance_path: str) -> Store | NoStore:
    """Return the store a CHAT_STORE_URL names ("" for the default file under instance_path); open nothing yet."""
    if url == "none":
        return NoStore()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import Postgres
        except ImportError as exc:
            raise ConfigError(f"CHAT_STORE_URL is a PostgreSQL URL, which needs psycopg 3 ({exc}): "
                              "pip install 'psycopg[binary]'") from None
        return Store(Postgres(url), settings)
    from .sqlite import SQLite, path_of

    path = path_of(url, instance_path) if url else os.path.join(instance_path, DEFAULT_FILE)
    return Store(SQLite(path), settings)
