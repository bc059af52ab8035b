"""Replays and pages drawn from both the backend's recent window and the store's record.

The backend holds a room's last ``CHAT_HISTORY_SIZE`` messages (none after a
restart of the memory backend, or once Redis expired the room); the store
holds everything retention keeps, except what another process has not
committed yet, which is among the newest and so in the backend's window.
Their union is complete.  The hub calls ``joined`` with the replay of a
join; the mount calls ``page`` for the HTTP API.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..backends import Backend, Item, Replay, Unavailable
from .records import Stored

if TYPE_CHECKING:
    from .off import NoStore
    from .store import Store

log = logging.getLogger(__name__)


def joined(
    store: Store | NoStore, room: str, replay: Replay, since: int | None, upto: int, limit: int, cap: int,
) -> Replay:
    """Complete a join's replay with what only the store still has, up to the join's position upto.

    Without since the client gets the last limit messages; with since, at
    most cap messages after it (the newest), and a gap event counting the
    rest, or of unknown size when retention removed some.  A store that cannot
    answer leaves the backend's replay as it is.
    """
    try:
        if since is None:
            return _last(store, room, replay, upto, limit)
        if not replay.gap:
            return replay
        return _resume(store, room, replay, since, upto, cap)
    except Unavailable as exc:
        log.warning("replaying %s from the backend alone: %s", room, exc)
        return replay


def _last(store: Store | NoStore, room: str, replay: Replay, upto: int, limit: int) -> Replay:
    have = replay.messages
    if len(have) >= limit:
        return replay
    older = store.newest(room, limit - len(have), before=have[0].id if have else upto + 1)
    if not older:
        return replay
    return Replay([row.item() for row in older] + have, last=replay.last)


def _resume(store: Store | NoStore, room: str, replay: Replay, since: int, upto: int, cap: int) -> Replay:
    floor = store.floor(room)
    if floor is None:
        # The store knows nothing of the room: the backend's verdict stands.
        return replay
    messages = union(store.newest(room, cap, after=since, before=upto + 1), replay.messages)[-cap:] if cap else []
    if since < floor:
        return Replay(messages, gap=True, missed=None, last=replay.last)
    missed = store.count(room, since, messages[0].id if messages else upto + 1)
    return Replay(messages, gap=missed > 0, missed=missed if missed else None, last=replay.last)


def page(
    store: Store | NoStore, backend: Backend, room: str, since: int | None, before: int | None, limit: int, size: int,
) -> tuple[list[Item], bool, Replay | None]:
    """Return a page of room for the API: its messages in id order, whether more lie beyond it, and any gap.

    With before: the last limit messages before it; with since: the first
    limit after it; with neither: the last limit.  "Beyond" is older, or
    newer for since.
    """
    want = limit + 1
    if since is not None:
        replay = backend.replay(room, since, size)
        items = union(store.oldest(room, want, after=since), replay.messages)[:want]
        floor = store.floor(room)
        gap = replay if floor is None else Replay(gap=since < floor)
        return items[:limit], len(items) > limit, gap
    stored = store.newest(room, want, before=before)
    if len(stored) >= want and before is not None:
        # Far enough back that whatever the backend's window holds is in the store too.
        recent: list[Item] = []
    else:
        window = backend.replay(room, None, want if before is None else size).messages
        recent = [item for item in window if before is None or item.id < before]
    items = union(stored, recent)[-want:]
    return items[-limit:] if limit else [], len(items) > limit, None


def union(stored: list[Stored], recent: list[Item]) -> list[Item]:
    """Return the messages of both lists once each, in id order."""
    items = {item.id: item for item in recent}
    for row in stored:
        items.setdefault(row.id, row.item())
    return [items[key] for key in sorted(items)]
