"""What a joining client is sent: its replay cut to a byte budget, and payloads shared between joiners.

A joiner's replay counts against its outbox limit like any data, so a
replay must fit in a budget below it: the newest messages that fit are
sent, after a ``gap`` that counts the rest.  A message's payload is kept once
in this process however many joiners are sent it: the memory backend's window
holds it already, and ``Shared`` keeps the copies other backends read afresh
for each join (Redis) so that every joiner's outbox points at one of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..backends import Item, Replay

#: Bytes of payloads kept for sharing, the least recently sent forgotten first.
SHARED_BYTES = 4 * 1024 * 1024
#: What the frame of a deleted message holds (a text cannot: its quotes are escaped).
DELETED = b'"deleted":true'


def visible(replay: Replay, version: int) -> Replay:
    """Return replay with only what a client of protocol version gets.

    Changes are protocol v3's, and so is a deleted message; before v3 the
    others come as they stand.
    """
    if version >= 3:
        return replay
    messages = [item for item in replay.messages if item.target is None and DELETED not in item.payload]
    return Replay(messages, gap=replay.gap, missed=replay.missed, last=replay.last, changed=replay.changed)


def cut(replay: Replay, budget: int) -> Replay:
    """Return replay with only its newest messages whose payloads fit in budget bytes, and a gap counting the rest."""
    messages = replay.messages
    total = 0
    keep = len(messages)
    while keep and total + len(messages[keep - 1].payload) <= budget:
        keep -= 1
        total += len(messages[keep].payload)
    if not keep:
        return replay
    missed = None if replay.gap and replay.missed is None else (replay.missed or 0) + keep
    return Replay(messages[keep:], gap=True, missed=missed, last=replay.last)


class Shared:
    """Keep one copy of each recently replayed payload, by room and id, for every joiner to share."""

    def __init__(self, size: int = SHARED_BYTES) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._payloads: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0

    def items(self, room: str, messages: list[Item]) -> list[bytes]:
        """Return the payloads of messages, each the copy kept for it when one is."""
        payloads = []
        with self._lock:
            kept = self._payloads
            for item in messages:
                key = (room, item.id or 0)
                payload = kept.get(key)
                if payload is None or payload != item.payload:
                    payload = self._keep_locked(key, item.payload)
                else:
                    kept.move_to_end(key)
                payloads.append(payload)
        return payloads

    def _keep_locked(self, key: tuple[str, int], payload: bytes) -> bytes:
        old = self._payloads.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        if len(payload) > self.size:
            return payload
        self._payloads[key] = payload
        self._bytes += len(payload)
        while self._bytes > self.size:
            _, dropped = self._payloads.popitem(last=False)
            self._bytes -= len(dropped)
        return payload
