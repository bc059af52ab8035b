"""The store's tables and the statements of its hot paths, in SQL that SQLite and PostgreSQL both run.

``chat_messages`` holds every message by (room, id), a changed one with
its ``state`` (the folded state-2 frame), an empty ``body`` and the id of
the last change folded in (``changed``); ``chat_changes`` each change's own
row (its text is the message's, so no edited-away text stays); ``chat_claims`` the
client ids of v2 sends, (room, cid) -> id, where a NULL id means "being
sent since ``at``"; ``chat_rooms`` each room's ``floor`` (the store holds
every message of the room after it), ``top`` (its largest id) and an
approximate ``count``.  Statements use ``?`` placeholders; a dialect with
another style rewrites them.  Read by ``sql`` and ``retention`` only.
"""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chat_messages (room TEXT NOT NULL, id BIGINT NOT NULL, ts BIGINT NOT NULL,"
    " name TEXT NOT NULL, body TEXT NOT NULL, user_id TEXT, cid TEXT, reply_to BIGINT, state TEXT, changed BIGINT,"
    " PRIMARY KEY (room, id))",
    "CREATE INDEX IF NOT EXISTS chat_messages_ts ON chat_messages (ts)",
    "CREATE INDEX IF NOT EXISTS chat_messages_user ON chat_messages (user_id, id)",
    "CREATE TABLE IF NOT EXISTS chat_changes (room TEXT NOT NULL, id BIGINT NOT NULL, target BIGINT NOT NULL,"
    " ts BIGINT NOT NULL, kind TEXT NOT NULL, user_id TEXT, name TEXT NOT NULL, emoji TEXT NOT NULL, on_flag INTEGER,"
    " PRIMARY KEY (room, id))",
    "CREATE INDEX IF NOT EXISTS chat_changes_target ON chat_changes (room, target)",
    "CREATE TABLE IF NOT EXISTS chat_claims (room TEXT NOT NULL, cid TEXT NOT NULL, id BIGINT,"
    " at DOUBLE PRECISION NOT NULL, PRIMARY KEY (room, cid))",
    "CREATE TABLE IF NOT EXISTS chat_rooms (room TEXT PRIMARY KEY, floor BIGINT NOT NULL, top BIGINT NOT NULL,"
    " count BIGINT NOT NULL)",
)
COLUMNS = "room, id, ts, name, body, user_id, cid, reply_to, state"
#: Columns a store made before changes lacks, and their types.
ADDED = (("reply_to", "BIGINT"), ("state", "TEXT"), ("changed", "BIGINT"))
#: Messages per INSERT statement: one statement per hundred rows costs a third less than one per row,
#: and 900 placeholders stay under the 999 of SQLite before 3.32.
INSERT_ROWS = 100


def insert(rows: int) -> str:
    """Return the statement that inserts rows messages at once (9 placeholders each)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO chat_messages ({COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING"


COUNT_ROOM = (
    "INSERT INTO chat_rooms (room, floor, top, count) VALUES (?, ?, ?, ?) ON CONFLICT (room) DO UPDATE SET"
    " floor = CASE WHEN excluded.floor < chat_rooms.floor THEN excluded.floor ELSE chat_rooms.floor END,"
    " top = CASE WHEN excluded.top > chat_rooms.top THEN excluded.top ELSE chat_rooms.top END,"
    " count = chat_rooms.count + excluded.count"
)
STORED_CLAIM = (
    "INSERT INTO chat_claims (room, cid, id, at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (room, cid) DO UPDATE SET id = excluded.id"
)
#: A change's row; then its message's state folded in, unless a later change's already is (or the message's own
#: row, from the state, when the change is stored first).
REVISE = (
    "INSERT INTO chat_changes (room, id, target, ts, kind, user_id, name, emoji, on_flag)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
FOLD = (
    f"INSERT INTO chat_messages ({COLUMNS}, changed) VALUES (?, ?, ?, ?, '', ?, NULL, ?, ?, ?)"
    " ON CONFLICT (room, id) DO UPDATE SET body = '', state = excluded.state, changed = excluded.changed"
    " WHERE chat_messages.changed IS NULL OR chat_messages.changed < excluded.changed"
)
CHANGES = (
    "SELECT c.room, c.id, c.target, c.ts, c.kind, c.user_id, c.name, c.emoji, c.on_flag, m.state"
    " FROM chat_changes c LEFT JOIN chat_messages m ON m.room = c.room AND m.id = c.target"
    " WHERE c.room = ? AND c.id > ? AND c.id < ? ORDER BY c.id LIMIT ?"
)
BY_USER = f"SELECT {COLUMNS} FROM chat_messages WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
RELEASE = "DELETE FROM chat_claims WHERE room = ? AND cid = ? AND id IS NULL"
NEWEST = f"SELECT {COLUMNS} FROM chat_messages WHERE room = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?"
OLDEST = f"SELECT {COLUMNS} FROM chat_messages WHERE room = ? AND id > ? AND id < ? ORDER BY id LIMIT ?"
