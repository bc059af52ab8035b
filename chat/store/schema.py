"""The store's tables and the statements of its hot paths, in SQL that SQLite and PostgreSQL both run.

``chat_messages`` holds every message by (room, id); ``chat_claims`` the
client ids of v2 sends, (room, cid) -> id, where a NULL id means "being
sent since ``at``"; ``chat_rooms`` each room's ``floor`` (the store holds
every message of the room after it), ``top`` (its largest id) and an
approximate ``count``.  Statements use ``?`` placeholders; a dialect with
another style rewrites them.  Read by ``sql`` and ``retention`` only.
"""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chat_messages (room TEXT NOT NULL, id BIGINT NOT NULL, ts BIGINT NOT NULL,"
    " name TEXT NOT NULL, body TEXT NOT NULL, user_id TEXT, cid TEXT, PRIMARY KEY (room, id))",
    "CREATE INDEX IF NOT EXISTS chat_messages_ts ON chat_messages (ts)",
    "CREATE TABLE IF NOT EXISTS chat_claims (room TEXT NOT NULL, cid TEXT NOT NULL, id BIGINT,"
    " at DOUBLE PRECISION NOT NULL, PRIMARY KEY (room, cid))",
    "CREATE TABLE IF NOT EXISTS chat_rooms (room TEXT PRIMARY KEY, floor BIGINT NOT NULL, top BIGINT NOT NULL,"
    " count BIGINT NOT NULL)",
)
COLUMNS = "room, id, ts, name, body, user_id, cid"
#: Messages per INSERT statement: one statement per hundred rows costs a third less than one per row,
#: and 700 placeholders stay under the 999 of SQLite before 3.32.
INSERT_ROWS = 100


def insert(rows: int) -> str:
    """Return the statement that inserts rows messages at once (7 placeholders each)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
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
RELEASE = "DELETE FROM chat_claims WHERE room = ? AND cid = ? AND id IS NULL"
NEWEST = f"SELECT {COLUMNS} FROM chat_messages WHERE room = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?"
OLDEST = f"SELECT {COLUMNS} FROM chat_messages WHERE room = ? AND id > ? AND id < ? ORDER BY id LIMIT ?"
