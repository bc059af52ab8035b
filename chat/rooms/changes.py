"""Messages that change: edits, deletes and reactions, from a v3 client or the API key, on their way to the log.

A change is checked here (who may, what it says), applied by the backend as
one atomic step that fans it out as an event at the room's next id, and
queued for the store, which folds it into its message.  A change to a
message the backend no longer holds is applied to the store's copy of it.
A change with a client id is acked once stored, as a message is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..backends import Backend, Change, Changed, Missing, Refused, Unavailable
from ..socket.connection import Connection
from ..store import NoStore, Revision, Store
from . import publisher

#: The name a change made with the API key goes out under when none is given.
MODERATOR = "moderator"
#: Messages read from the store at a time while erasing a user's.
ERASE_PAGE = 500
KINDS = ("edit", "delete", "react")
REFUSALS = {
    "forbidden": "you may not change this message",
    "not_found": "no such message in this room",
    "empty": "an edit must have text",
    "rejected": "your edit was not accepted",
}


def state(backend: Backend, record: Store | NoStore, room: str, message_id: int) -> str | None:
    """Return the state of message_id in room, from the backend or else the store; None if neither has it."""
    held = backend.look(room, message_id)
    if held is not None:
        return held
    found = [row for row in record.oldest(room, 1, after=message_id - 1) if row.id == message_id]
    return found[0].item().payload.decode() if found else None


def apply(
    backend: Backend, record: Store | NoStore, room: str, change: Change,
    on_stored: Callable[[Revision], None] | None = None,
) -> Changed:
    """Apply change through the backend and queue it for record; raise Refused (not_found, forbidden)."""
    record.ready()
    try:
        changed = backend.change(room, change)
    except Missing:
        seed = state(backend, record, room, change.target)
        if seed is None:
            raise Refused("not_found") from None
        changed = backend.change(room, change, seed)
    record.append(Revision(
        room, changed.id, change.target, changed.ts, change.kind, change.user, change.name, change.emoji,
        changed.on, changed.state,
    ), on_stored)
    return changed


def check(settings: dict[str, Any], kind: str, text: Any) -> str:
    """Return an edit's text (the empty string for other kinds), or raise ProtocolError (TooBig)."""
    if kind not in ("edit", "delete"):
        raise protocol.ProtocolError("kind must be edit or delete")
    return "" if kind == "delete" else publisher.checked_text(settings, text)


class Changer:
    """Apply connections' change frames, answering each refusal and acking each change with a client id."""

    def __init__(
        self, backend: Backend, store: Store | NoStore, moderate: Callable[[Connection, str], str | None] | None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._moderate = moderate

    def frame(self, conn: Connection, frame: protocol.Frame) -> None:
        """Apply an edit, delete or react frame from conn to a message of its room."""
        cid = frame.cid
        if conn.user is None:
            self._refuse(conn, "forbidden", cid)
            return
        text = frame.text
        if frame.type == "edit":
            if protocol.is_blank(text):
                self._refuse(conn, "empty", cid)
                return
            vetted = text if self._moderate is None else self._moderate(conn, text)
            if vetted is None:
                self._refuse(conn, "rejected", cid)
                return
            text = vetted
        assert frame.id is not None, "client_frame gives every change an id"
        change = Change(frame.type, frame.id, conn.user, conn.name, text, frame.emoji or "")
        on_stored = None if cid is None else lambda stored: conn.send(protocol.ack(cid, stored.id))
        try:
            apply(self._backend, self._store, conn.room, change, on_stored)
        except Refused as refused:
            self._refuse(conn, refused.code, cid)
        except Unavailable as exc:
            conn.send(protocol.notice("unavailable", exc.notice.replace("message", "change"), cid))

    @staticmethod
    def _refuse(conn: Connection, code: str, cid: str | None) -> None:
        conn.send(protocol.notice(code, REFUSALS[code], cid))


def moderate(
    backend: Backend, record: Store | NoStore, settings: dict[str, Any], room: str, message_id: Any, kind: str,
    text: Any = None, name: Any = None,
) -> dict[str, Any]:
    """Edit or delete any message as the API key's holder; return {"id", "room", "target", "ts"}.

    Raises ProtocolError for bad input (TooBig for an edit too long) and
    Refused("not_found") for a message not in room, or deleted.
    """
    room = protocol.room(room)
    target = protocol.message_id(message_id)
    text = check(settings, kind, text)
    if name is not None and not isinstance(name, str):
        raise protocol.ProtocolError("name must be a string")
    sender = protocol.name(name) if name is not None and name.strip() else MODERATOR
    changed = apply(backend, record, room, Change(kind, target, None, sender, text))
    return {"id": str(changed.id), "room": room, "target": str(target), "ts": changed.ts}


def export(record: Store | NoStore, user: str, before: int | None, limit: int) -> dict[str, Any]:
    """Return a page of what user wrote in any room, newest first: {"messages": [...], "more"}; deleted ones marked."""
    record.flush()
    rows = record.by_user(protocol.user(user), limit + 1, before)
    return {"messages": [json.loads(row.item().payload) for row in rows[:limit]], "more": len(rows) > limit}


def erase(backend: Backend, record: Store | NoStore, user: str, name: str = MODERATOR) -> int:
    """Delete every message user wrote, in every room (connected clients get the delete events); return how many."""
    user = protocol.user(user)
    record.flush()
    erased, before, seen = 0, None, set()
    while True:
        # Ids of different rooms can be equal: each page starts at the last one's smallest id, seen ones skipped.
        rows = [row for row in record.by_user(user, ERASE_PAGE, before) if (row.room, row.id) not in seen]
        for row in rows:
            seen.add((row.room, row.id))
            if row.state is not None and json.loads(row.state).get("deleted"):
                continue
            try:
                apply(backend, record, row.room, Change("delete", row.id, None, name))
                erased += 1
            except Refused:
                continue
        if not rows:
            break
        before = rows[-1].id + 1
    record.flush()
    return erased
