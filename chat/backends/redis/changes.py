"""Changes on Redis: one script (``change.lua``) per change, and the decoding of changes and folded messages.

Keys of a room R besides those in ``keys.py``:

``chat:{R}:states``
    Hash: the state of each message changed lately (its state-2 frame as it
    stands, JSON) by id, and under ``e<id>`` the stream id of the edit that
    carries its current text.
``chat:{R}:changed``
    Sorted set: each changed message by the id of its last change, so that a
    message whose last change left the window leaves the hash too.

A change is a stream entry ``N-0`` at the room's next id with the fields
``k`` (kind), ``t`` (target), ``u`` (user, or empty for the API key), ``n``,
``ts``, and ``x`` (an edit's text) or ``j`` (emoji) and ``on`` (0 or 1).  An
edit or delete removes the message's own entry and the edit it supersedes,
so the stream keeps no copy of a text edited away or deleted; replays fold
the messages from the states hash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .. import Change, Changed, Item, Missing, Refused, fold
from .keys import changed, channel, log, meta, states

Script = Callable[[str, list[str], list[Any]], Any]
#: A stream entry: its id and its fields.
Entry = tuple[tuple[int, int], dict[bytes, bytes]]


def apply(script: Script, room: str, change: Change, seed: str | None, keep: int, expiry_ms: int) -> Changed:
    """Run change.lua for change and return what it made; raise Missing or Refused."""
    ts = _now()
    keys = [meta(room), log(room), channel(room), states(room), changed(room)]
    reply = script("change", keys, [
        keep, expiry_ms, room, change.kind, change.target, change.user or "", change.name, ts, change.text,
        change.emoji, seed or "",
    ])
    code = _text(reply[0])
    if code == "missing":
        raise Missing(change.target)
    if code != "ok":
        raise Refused(code)
    on = _text(reply[3])
    return Changed(int(reply[1]), ts, folded(reply[2]).decode(), None if on == "" else on == "1")


def look(script: Script, room: str, message_id: int) -> str | None:
    """Return a message's state if Redis holds it."""
    found = script("look", [log(room), states(room)], [room, message_id])
    return None if not found else folded(found).decode()


def folded(raw: bytes | str) -> bytes:
    """Return a state as Lua's cjson wrote it, as the frame protocol v3 sends."""
    return fold.folded(json.loads(raw))


def item(room: str, entry: tuple[int, int], fields: dict[bytes, bytes]) -> Item:
    """Return the delivery a change's stream entry makes: its state-6 event."""
    kind = fields[b"k"].decode()
    user = fields.get(b"u") or None
    on = fields.get(b"on")
    payload = fold.event(
        kind, room, int(fields[b"t"]), entry[0], user and user.decode(), fields[b"n"].decode(), int(fields[b"ts"]),
        fields.get(b"x", b"").decode(), fields.get(b"j", b"").decode(), None if on is None else on == b"1",
    )
    return Item(entry[0], payload, None, entry, int(fields[b"t"]))


def folds(items: list[Item], flat: list[Any], start: int, since: int | None) -> list[Item]:
    """Return items with the changed messages as they stand: their states (flat: id, state, ...) folded in.

    A changed message whose entry the stream no longer holds (edited,
    deleted) comes back at its place when it is at or after start; with no
    since, the changes themselves are left out.
    """
    found = {int(flat[at]): flat[at + 1] for at in range(0, len(flat), 2)}
    out = []
    for each in items:
        if each.target is None and each.id in found:
            out.append(each._replace(payload=folded(found.pop(each.id))))
        elif each.target is None or since is not None:
            out.append(each)
    for target, raw in found.items():
        if target >= start:
            out.append(Item(target, folded(raw), None, (target, 0)))
    out.sort(key=lambda each: each.at)
    return out


def restore(client: Any, room: str, position: tuple[int, int], entries: list[Entry]) -> list[Entry]:
    """Return stream entries read after position with the messages that changes among them took out of the stream
    (edited, deleted) put back at their places, as entries holding their states (``s``).

    A reader that missed a message and catches up from the stream finds only
    the change; the message comes back from the states hash, as it stands.
    """
    present = {entry for entry, _ in entries}
    wanted = sorted({
        int(fields[b"t"]) for _, fields in entries
        if b"k" in fields and (int(fields[b"t"]), 0) > position and (int(fields[b"t"]), 0) not in present
    })
    if not wanted:
        return entries
    found = client.hmget(states(room), wanted)
    back = [((target, 0), {b"s": raw}) for target, raw in zip(wanted, found, strict=True) if raw]
    return sorted([*entries, *back], key=lambda pair: pair[0])


def _now() -> int:
    return time.time_ns() // 1_000_000


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
