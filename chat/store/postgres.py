"""The PostgreSQL dialect (psycopg 3): the store for several hosts, chosen by a postgresql:// URL.

Each process holds one writing connection and a few reading ones.  A commit
is durable when it returns (the server's ``synchronous_commit``), and the
writer commits a whole batch at once, so a busy room pays one commit per
batch, not per message.  The tables are created under an advisory lock, so
workers starting together do not race to create them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.waiting

from .records import Claim, Revision, Stored
from .sql import Also, Database

#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT = 5
#: Any fixed number: the key of the advisory lock held while creating the tables.
SCHEMA_LOCK = 0x63686174


class Postgres(Database):
    """Keep the store in a PostgreSQL database."""

    errors = (psycopg.Error,)
    # psycopg waits on its socket through gevent when gevent had patched select before psycopg was
    # imported; its C wait (imported before, or chosen with PSYCOPG_WAIT_FUNC) blocks the loop.
    cooperative = psycopg.waiting.wait is not getattr(psycopg.waiting, "wait_c", None)

    def __init__(self, url: str) -> None:
        super().__init__()
        # Heroku's DATABASE_URL says postgres://, which libpq takes as well.
        self.url = url

    def connect(self, write: bool) -> Any:
        """Open an autocommitting connection."""
        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="chat-store",
        )

    def sql(self, statement: str) -> str:
        """Use psycopg's %s placeholders."""
        return statement.replace("?", "%s")

    def write(
        self, rows: Sequence[Stored | Revision], claims: Sequence[tuple[str, str]], releases: Sequence[tuple[str, str]],
        now: float, also: Also | None = None,
    ) -> list[Claim | int]:
        """Write as every dialect does, with NUL characters (which PostgreSQL text cannot hold) as U+FFFD."""
        clean = [_without_nul(row) if type(row) is Stored and ("\0" in row.text or "\0" in (row.user or "")) else row
                 for row in rows]
        return super().write(clean, claims, releases, now, also)

    def create(self, conn: Any) -> None:
        """Create the tables under an advisory lock held until the transaction ends."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        super().create(conn)


def _without_nul(row: Stored) -> Stored:
    return row._replace(text=row.text.replace("\0", "\ufffd"), user=row.user and row.user.replace("\0", "\ufffd"))
