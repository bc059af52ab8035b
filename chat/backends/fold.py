"""Changes applied to a message's state: the rules of who may, and what an edit, delete or reaction leaves.

A message's state is its state-2 frame as a dict (``folded`` encodes
it): ``message`` is its current text, ``edited`` the ts of its last
edit, ``deleted`` true once deleted (with an empty ``message``),
``reactions`` ``{emoji: [user ids]}``.  The memory backend applies changes
here; the Redis backend's ``change.lua`` applies the same rules in one script.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from collections.abc import MutableSequence
from json.encoder import encode_basestring as _quote

from .. import protocol
from . import Change, Item, Missing, Refused


def state_of(payload: bytes | str) -> dict:
    """Return the state of a message from its state-2 frame."""
    return json.loads(payload)


def apply(state: dict, change: Change, ts: int) -> bool | None:
    """Apply change to state in place, or raise Refused; return whether a reaction is now on (None otherwise)."""
    if state.get("deleted"):
        raise Refused("not_found")
    if change.kind != "react":
        if change.user is not None and state.get("user") != change.user:
            raise Refused("forbidden")
        if change.kind == "edit":
            state["message"] = change.text
            state["edited"] = ts
        else:
            state["message"] = ""
            state["deleted"] = True
            state.pop("edited", None)
            state.pop("reactions", None)
        return None
    reactions = state.setdefault("reactions", {})
    users = reactions.setdefault(change.emoji, [])
    on = change.user not in users
    if on:
        users.append(change.user)
    else:
        users.remove(change.user)
        if not users:
            del reactions[change.emoji]
    if not reactions:
        del state["reactions"]
    return on


def find(window: MutableSequence[Item], item_id: int) -> int | None:
    """Return where the item with item_id is in a window of items in id order, or None."""
    at = bisect.bisect_left(window, item_id, key=lambda item: item.id)
    return at if at < len(window) and window[at].id == item_id else None


def into(window: MutableSequence[Item], edits: dict[int, int], change: Change, folded: bytes, change_id: int) -> None:
    """Fold a change into a window: its message as it stands, and no edit it supersedes (edits: target -> edit id).

    The window then keeps no copy of a text edited away or deleted.
    """
    at = find(window, change.target)
    if at is not None:
        window[at] = window[at]._replace(payload=folded)
    if change.kind == "react":
        return
    superseded = edits.pop(change.target, None)
    gone = None if superseded is None else find(window, superseded)
    if gone is not None:
        del window[gone]
    if change.kind == "edit":
        edits[change.target] = change_id


def folded(state: dict) -> bytes:
    """Build the state-2 frame of a message as it stands, from its state."""
    return json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode()


def event(
    kind: str, room: str, target: int, change_id: int, user: str | None, name: str, ts: int,
    text: str | None = None, emoji: str | None = None, on: bool | None = None,
) -> bytes:
    """Build the state-6 frame of a change (edit, delete or react) to message target, at its own position."""
    head = '{"state":6,"message":"","kind":"%s","room":"%s","target":"%d","id":"%d","user":%s,"name":%s,"ts":%d' % (
        kind, room, target, change_id, "null" if user is None else _quote(user), _quote(name), ts,
    )
    if kind == "edit":
        head += ',"text":' + _quote(text or "")
    elif kind == "react":
        head += ',"emoji":%s,"on":%s' % (_quote(emoji or ""), "true" if on else "false")
    return (head + "}").encode()


def message(
    message_id: int, room: str, name: str, text: str, ts: int, user: str | None = None, reply_to: int | None = None,
) -> bytes:
    """Build the state-2 frame of a chat message (protocol.chat's), with the message it replies to, if any."""
    payload = protocol.chat(message_id, room, name, text, ts, user)
    return payload if reply_to is None else payload[:-1] + b',"reply_to":"%d"}' % reply_to


class Folds:
    """What a backend in this process keeps of its rooms' changed messages; its owner's lock guards it.

    Per room: the state of each message changed lately (the newest size of
    them), the id of the edit that carries each one's current text while that
    edit is in the window (about the window's size of them), and the id of
    the newest change.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.states: dict[str, OrderedDict[int, dict]] = {}
        self.edits: dict[str, dict[int, int]] = {}
        self.changed: dict[str, int] = {}

    def state(self, room: str, window: MutableSequence[Item], target: int, seed: str | None) -> dict:
        """Return the state of message target, from what is kept, the window or seed; raise Missing.

        A kept state is returned as it is: apply() refuses before it changes anything.
        """
        state = self.states.get(room, {}).get(target)
        if state is not None:
            return state
        at = find(window, target)
        if at is not None and window[at].target is None:
            return state_of(window[at].payload)
        if seed is not None:
            return json.loads(seed)
        raise Missing(target)

    def keep(self, room: str, window: MutableSequence[Item], change: Change, state: dict, change_id: int) -> bytes:
        """Keep a message's state after change (made at change_id), fold it into window, and return its frame."""
        states = self.states.setdefault(room, OrderedDict())
        states[change.target] = state
        states.move_to_end(change.target)
        while len(states) > self.size:
            states.popitem(last=False)
        self.changed[room] = change_id
        frame = folded(state)
        edits = self.edits.setdefault(room, {})
        into(window, edits, change, frame, change_id)
        if len(edits) > 2 * self.size and window:
            # An edit that has left the window carries no text there any more: forget it, so the map stays bounded.
            oldest = window[0].id
            for target in [target for target, edit in edits.items() if edit < oldest]:
                del edits[target]
        return frame

    def look(self, room: str, window: MutableSequence[Item], message_id: int) -> str | None:
        """Return the state of a message held here (kept, or in window), else None."""
        state = self.states.get(room, {}).get(message_id)
        if state is not None:
            return folded(state).decode()
        at = find(window, message_id)
        if at is None or window[at].target is not None:
            return None
        return window[at].payload.decode()

    def forget(self, room: str) -> None:
        """Drop what is kept of room."""
        for table in (self.states, self.edits, self.changed):
            table.pop(room, None)
