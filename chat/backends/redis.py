"""The Redis backend: one stream per room carries its history and its fan-out.

Keys of a room R (the braces keep them in one cluster slot):

``chat:{R}:meta``
    Hash: ``seq``, the last chat id given out, and ``epoch``, where ``seq``
    started.  The room's first message or presence event sets both to Redis's
    clock in milliseconds times 1000 (the scheme of the memory backend), or
    past the stream's last id if the stream outlived the hash, so ids keep
    growing when the key is lost, and a client that resumes with an older id
    is told that an unknown number of messages were missed.
``chat:{R}:log``
    Stream.  Chat message N has stream id ``N-0`` and the fields ``n``
    (name), ``x`` (text) and ``ts``; its payload is built with
    ``protocol.chat`` when it is read.  A presence event (join or leave) made
    while the counter is N gets ``N-k`` (k >= 1) and the fields ``e`` (event),
    ``m`` (member id), ``n`` (name) and ``o`` (online count), in the same script that changes
    the presence, so the counts arrive in the order they changed.  XREAD
    hands out chat and presence in the order they happened, and replay skips
    everything whose sequence part is not 0.  Publishing trims the stream to
    the last ``max(HISTORY_SIZE, RETAIN)`` chat messages with ``MINID ~``:
    RETAIN leaves a lagging reader something to catch up from, and replay
    applies the exact HISTORY_SIZE window, as the memory backend does.
    Presence events after one message are capped at PRESENCE_BACKLOG, so
    joins and leaves in a quiet room cannot grow the stream without end.
``chat:{R}:pids`` and ``chat:{R}:on:<pid>``
    Presence: the set of processes with members in R, and per process a hash
    member -> name with a TTL of PRESENCE_TTL seconds that the reader renews
    every third of it.  Online counts sum the hashes that still exist, so
    the members of a process that died without leaving vanish within the
    TTL.  When a renewal finds its hash gone (Redis lost its data, or was
    unreachable longer than the TTL) the reader writes it again from this
    process's own record of its members.
Expiry: every script that writes a room's meta or log gives both a TTL of
``ROOM_EXPIRY``, and each renewal extends it for the rooms this process has
members in, so a room disappears once it has been empty and silent that long.

``chat:wake:<pid>``
    Stream that watch() appends to, so the reader's blocking XREAD returns at
    once and starts reading the newly watched room.

Each script runs atomically, so a message is either stored with its id or not
at all.  The reader thread owns one connection and XREADs every watched room
from the last id it delivered; when Redis goes away it retries with capped
exponential backoff and resumes from those ids, so nothing Redis accepted is
lost or delivered twice.  Commands time out after TIMEOUT seconds and are
never retried (a retried publish could store a message twice); a command that
cannot reach Redis raises Unavailable.  A publish whose reply is lost after
Redis ran it raises Unavailable although the message was stored.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.retry import Retry

from .. import protocol
from . import Deliver, Item, Replay, Unavailable, resume

log = logging.getLogger(__name__)

#: Seconds a command may take to connect, and then to answer.
TIMEOUT = 1.0
#: Longest time the reader blocks in XREAD, in milliseconds.
BLOCK_MS = 1000
#: Entries the reader takes from one stream per XREAD.
READ_COUNT = 1000
#: Fewest chat messages a stream keeps, whatever HISTORY_SIZE says.
RETAIN = 1000
#: Most presence events kept after one chat message.
PRESENCE_BACKLOG = 1000
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError)

_COUNTER = """
local function fmt(n) return string.format('%d', n) end
local function counter(meta, log)
  local seq = redis.call('HGET', meta, 'seq')
  if seq then return tonumber(seq) end
  local now = redis.call('TIME')
  local n = tonumber(now[1]) * 1000000 + math.floor(tonumber(now[2]) / 1000) * 1000
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if last then
    local ms = tonumber(string.match(last[1], '^%d+'))
    if ms > n then n = ms end
  end
  redis.call('HSET', meta, 'seq', fmt(n), 'epoch', fmt(n))
  return n
end
"""

PUBLISH = _COUNTER + """
local n = counter(KEYS[1], KEYS[2]) + 1
redis.call('HSET', KEYS[1], 'seq', fmt(n))
redis.call('XADD', KEYS[2], 'MINID', '~', fmt(n - tonumber(ARGV[4]) + 1), fmt(n) .. '-0',
           'n', ARGV[1], 'x', ARGV[2], 'ts', ARGV[3], 'u', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return fmt(n)
"""

_ANNOUNCE = """
local function announce(meta, log, cap, event, member, name, total, expiry)
  local n = counter(meta, log)
  local k = 1
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if last then
    local ms, seq = string.match(last[1], '^(%d+)-(%d+)$')
    if ms == fmt(n) then k = tonumber(seq) + 1 end
  end
  redis.call('XADD', log, fmt(n) .. '-' .. fmt(k), 'e', event, 'm', member, 'n', name, 'o', fmt(total))
  if k > cap then redis.call('XDEL', log, fmt(n) .. '-' .. fmt(k - cap)) end
  redis.call('PEXPIRE', meta, expiry)
  redis.call('PEXPIRE', log, expiry)
  return total
end
"""

REPLAY = """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return {false, redis.call('TIME')} end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or '0'
local n = tonumber(seq)
local window = n - tonumber(ARGV[3]) + 1
local first = redis.call('XRANGE', KEYS[2], string.format('%d', window), '+', 'COUNT', 1)
local from
if ARGV[1] == '' then from = n - tonumber(ARGV[2]) + 1 else from = tonumber(ARGV[1]) + 1 end
if from < window then from = window end
local entries = {}
if from <= n then
  entries = redis.call('XRANGE', KEYS[2], string.format('%d', from), string.format('%d-0', n))
end
return {seq, epoch, first, entries}
"""

_ONLINE = """
local function live(pids, prefix)
  local alive = {}
  for _, pid in ipairs(redis.call('SMEMBERS', pids)) do
    if redis.call('EXISTS', prefix .. pid) == 1 then
      alive[#alive + 1] = prefix .. pid
    else
      redis.call('SREM', pids, pid)
    end
  end
  return alive
end
local function online(pids, prefix)
  local total = 0
  for _, key in ipairs(live(pids, prefix)) do total = total + redis.call('HLEN', key) end
  return total
end
"""

JOIN = _COUNTER + _ONLINE + _ANNOUNCE + """
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return announce(KEYS[3], KEYS[4], tonumber(ARGV[6]), 'join', ARGV[2], ARGV[3], online(KEYS[1], ARGV[5]), ARGV[7])
"""

LEAVE = _COUNTER + _ONLINE + _ANNOUNCE + """
local name = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local total = online(KEYS[1], ARGV[2])
if not name then return total end
return announce(KEYS[3], KEYS[4], tonumber(ARGV[3]), 'leave', ARGV[1], name, total, ARGV[4])
"""

USERS = _ONLINE + """
local names = {}
for _, key in ipairs(live(KEYS[1], ARGV[1])) do
  for _, name in ipairs(redis.call('HVALS', key)) do names[#names + 1] = name end
end
return names
"""

RENEW = """
-- An occupied room does not expire, however quiet it is.
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 1 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RESTORE = """
redis.call('DEL', KEYS[2])
if #ARGV < 3 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 0
end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

StreamId = tuple[int, int]


def _sid(raw: bytes) -> StreamId:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


class RedisBackend:
    """Share rooms between processes and hosts through one Redis server."""

    def __init__(self, url: str, settings: dict[str, Any]) -> None:
        self._url = url
        self._size: int = settings["HISTORY_SIZE"]
        self._keep = max(self._size, RETAIN)
        ttl = float(settings.get("PRESENCE_TTL", 30))
        self._ttl_ms = max(1, int(ttl * 1000))
        self._expiry_ms = max(1, int(settings["ROOM_EXPIRY"] * 1000))
        self._beat_every = ttl / 3
        self._block_ms = max(10, min(BLOCK_MS, int(self._beat_every * 1000)))
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._reader: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._pid = ""
        self._deliver: Deliver | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._up = True
        self._next_check = 0.0
        self._positions: dict[str, StreamId] = {}
        self._watchers: dict[str, int] = {}
        self._wake_position = b"0-0"
        self._members: dict[str, dict[str, str]] = {}
        self._stamps: dict[str, int] = {}
        self._stamp = 0
        self._dirty: set[str] = set()

    # Connections, made on first use so that nothing happens before gunicorn forks.

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._closed:
                raise Unavailable("the redis backend is closed")
            if self._client is None:
                self._pid = secrets.token_hex(8)
                options: dict[str, Any] = {
                    "socket_connect_timeout": TIMEOUT,
                    "retry": Retry(NoBackoff(), 0),
                    "client_name": f"chat-{self._pid}",
                }
                client = redis.Redis.from_url(self._url, socket_timeout=TIMEOUT, **options)
                self._reader = redis.Redis.from_url(
                    self._url, socket_timeout=self._block_ms / 1000 + TIMEOUT, **options
                )
                sources = {
                    "publish": PUBLISH, "replay": REPLAY, "join": JOIN,
                    "leave": LEAVE, "users": USERS, "renew": RENEW, "restore": RESTORE,
                }
                self._scripts = {name: client.register_script(src) for name, src in sources.items()}
                self._client = client
            return self._client

    @contextmanager
    def _reach(self) -> Iterator[None]:
        try:
            yield
        except UNREACHABLE as exc:
            self._up = False
            # A command that timed out waiting for its answer may have run.
            raise Unavailable(f"redis is unreachable: {exc}", isinstance(exc, redis.TimeoutError)) from exc

    def _keys(self, room: str) -> tuple[str, str]:
        return f"chat:{{{room}}}:meta", f"chat:{{{room}}}:log"

    def _presence_keys(self, room: str) -> tuple[str, str, str]:
        prefix = f"chat:{{{room}}}:on:"
        return f"chat:{{{room}}}:pids", prefix + self._pid, prefix

    @property
    def _wake_key(self) -> str:
        return f"chat:wake:{self._pid}"

    # The interface.

    def start(self, deliver: Deliver) -> None:
        """Start the reader thread that delivers every watched room's events."""
        self._redis()
        with self._lock:
            self._deliver = deliver
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="chat-redis-reader", daemon=True)
            self._thread.start()

    def publish(self, room: str, name: str, text: str, user: str | None = None) -> int:
        """Store a chat message under the room's next id and return the id."""
        client = self._redis()
        ts = time.time_ns() // 1_000_000
        with self._reach():
            raw = self._scripts["publish"](
                keys=self._keys(room), args=[name, text, ts, self._keep, self._expiry_ms, user or ""], client=client
            )
        return int(raw)

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""
        client = self._redis()
        with self._reach():
            reply = self._scripts["replay"](
                keys=self._keys(room),
                args=["" if since is None else since, limit, self._size],
                client=client,
            )
        if reply[0] is None:
            if since is None:
                return Replay()
            seconds, micros = reply[1]
            now = int(seconds) * 1_000_000 + int(micros) // 1000 * 1000
            return Replay() if since >= now else Replay(gap=True, missed=None)
        last, epoch, first, entries = int(reply[0]), int(reply[1]), reply[2], reply[3]
        messages = [
            self._item(room, sid, dict(zip(fields[::2], fields[1::2], strict=True)))
            for raw, fields in entries
            if (sid := _sid(raw))[1] == 0
        ]
        if since is None:
            return Replay(messages, last=last)
        if first:
            ms, seq = _sid(first[0][0])
            oldest = ms + (1 if seq else 0)
        else:
            oldest = last + 1
        return resume(messages, since, last, epoch, oldest)

    def join(self, room: str, member: str, name: str) -> int:
        """Add a member to the room's presence, append its join event, and return the online count."""
        client = self._redis()
        pids, mine, prefix = self._presence_keys(room)
        with self._lock:
            self._members.setdefault(room, {})[member] = name
            self._touch_locked(room)
        try:
            with self._reach():
                return int(self._scripts["join"](
                    keys=[pids, mine, *self._keys(room)],
                    args=[self._pid, member, name, self._ttl_ms, prefix, PRESENCE_BACKLOG, self._expiry_ms],
                    client=client,
                ))
        except Unavailable:
            with self._lock:
                self._forget_locked(room, member)
                self._dirty.add(room)
            raise

    def leave(self, room: str, member: str) -> int:
        """Remove a member from the room's presence, append its leave event, and return the count."""
        client = self._redis()
        pids, mine, prefix = self._presence_keys(room)
        with self._lock:
            self._forget_locked(room, member)
        try:
            with self._reach():
                return int(self._scripts["leave"](
                    keys=[pids, mine, *self._keys(room)],
                    args=[member, prefix, PRESENCE_BACKLOG, self._expiry_ms],
                    client=client,
                ))
        except Unavailable:
            with self._lock:
                self._dirty.add(room)
            raise

    def users(self, room: str) -> list[str]:
        """Return the names of the members online in the room, from every process."""
        client = self._redis()
        pids, _, prefix = self._presence_keys(room)
        with self._reach():
            names = self._scripts["users"](keys=[pids], args=[prefix], client=client)
        return sorted(name.decode() for name in names)

    def watch(self, room: str) -> None:
        """Have the reader deliver every entry of room added from now on."""
        client = self._redis()
        with self._lock:
            if room in self._positions:
                self._watchers[room] += 1
                return
        with self._reach():
            newest = client.xrevrange(self._keys(room)[1], count=1)
        position = _sid(newest[0][0]) if newest else (0, 0)
        with self._lock:
            fresh = room not in self._positions
            if fresh:
                self._positions[room] = position
                self._watchers[room] = 0
            self._watchers[room] += 1
        if fresh:
            self._wake(client)

    def unwatch(self, room: str) -> None:
        """Stop reading room once no local client is in it."""
        with self._lock:
            left = self._watchers.get(room, 0) - 1
            if left > 0:
                self._watchers[room] = left
            else:
                self._watchers.pop(room, None)
                self._positions.pop(room, None)

    def healthy(self) -> bool:
        """Tell whether the reader is running and Redis answers it (before start: a ping, once a second)."""
        if self._closed:
            return False
        thread = self._thread
        if thread is not None:
            return self._up and thread.is_alive()
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 1.0
            try:
                self._up = bool(self._redis().ping())
            except (Unavailable, *UNREACHABLE):
                self._up = False
        return self._up

    def close(self) -> None:
        """Stop and join the reader, remove this process's members and disconnect; later calls raise Unavailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, client, reader = self._thread, self._client, self._reader
            rooms = list(self._members)
            self._members.clear()
            self._deliver = None
        self._stop.set()
        if client is None or reader is None:
            return
        if thread is not None:
            self._wake(client)
            thread.join()
        try:
            with client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pids, mine, _ = self._presence_keys(room)
                    pipe.delete(mine)
                    pipe.srem(pids, self._pid)
                pipe.delete(self._wake_key)
                pipe.execute()
        except UNREACHABLE as exc:
            log.warning("could not remove this process's presence from redis: %s", exc)
        reader.close()
        # Connection threads may still be inside a call: close only idle connections.
        client.connection_pool.disconnect(inuse_connections=False)

    # Presence bookkeeping, under the lock.

    def _touch_locked(self, room: str) -> None:
        self._stamp += 1
        self._stamps[room] = self._stamp

    def _forget_locked(self, room: str, member: str) -> None:
        members = self._members.get(room)
        if members is None:
            return
        members.pop(member, None)
        self._touch_locked(room)
        if not members:
            del self._members[room]
            del self._stamps[room]

    # The reader thread.

    def _wake(self, client: redis.Redis) -> None:
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": 1}, maxlen=1, approximate=False)
                pipe.pexpire(self._wake_key, self._ttl_ms)
                pipe.execute()
        except UNREACHABLE as exc:
            log.debug("could not wake the reader: %s", exc)

    def _run(self) -> None:
        delay = BACKOFF_MIN
        beat_due = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= beat_due:
                    self._renew()
                    beat_due = time.monotonic() + self._beat_every
                self._read()
            except redis.RedisError as exc:
                if self._stop.is_set():
                    break
                if self._up:
                    log.warning("redis reader lost its connection: %s", exc)
                self._up = False
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                if not self._up:
                    log.info("redis reader is back")
                self._up = True
                delay = BACKOFF_MIN

    def _read(self) -> None:
        assert self._reader is not None
        with self._lock:
            watched = dict(self._positions)
        streams: dict[str, Any] = {self._wake_key: self._wake_position}
        rooms: dict[bytes, str] = {}
        for room, (ms, seq) in watched.items():
            key = self._keys(room)[1]
            streams[key] = f"{ms}-{seq}"
            rooms[key.encode()] = room
        reply = self._reader.xread(streams, count=READ_COUNT, block=self._block_ms)
        batches: list[tuple[str, StreamId, list[tuple[StreamId, dict[bytes, bytes]]]]] = []
        with self._lock:
            for key, entries in reply:
                room = rooms.get(key)
                if room is None:
                    self._wake_position = entries[-1][0]
                    continue
                position = self._positions.get(room)
                if position is None:
                    continue
                fresh = [(sid, fields) for raw, fields in entries if (sid := _sid(raw)) > position]
                if fresh:
                    self._positions[room] = fresh[-1][0]
                    batches.append((room, position, fresh))
            deliver = self._deliver
        if deliver is None:
            return
        for room, position, fresh in batches:
            self._check_continuity(room, position, fresh)
            items = []
            for sid, fields in fresh:
                try:
                    items.append(self._item(room, sid, fields))
                except (KeyError, ValueError) as exc:
                    log.warning("room %s: skipping malformed stream entry %s: %r", room, sid, exc)
            try:
                deliver(room, items)
            except Exception:
                log.exception("delivering %d events of room %s failed", len(items), room)

    def _check_continuity(
        self, room: str, position: StreamId, fresh: list[tuple[StreamId, dict[bytes, bytes]]]
    ) -> None:
        for (ms, seq), _ in fresh:
            if seq == 0:
                if position[0] and ms > position[0] + 1:
                    log.warning(
                        "room %s: ids jumped from %d to %d (trimmed before this process read them, "
                        "or redis lost its data)", room, position[0], ms,
                    )
                return

    def _item(self, room: str, sid: StreamId, fields: dict[bytes, bytes]) -> Item:
        ms, seq = sid
        if seq:
            event, name, online = fields[b"e"].decode(), fields[b"n"].decode(), int(fields[b"o"])
            member = fields.get(b"m")
            joiner = member.decode() if member is not None and event == "join" else None
            return Item(None, protocol.presence(event, room, name, online), joiner)
        user = fields.get(b"u") or None
        return Item(ms, protocol.chat(
            ms, room, fields[b"n"].decode(), fields[b"x"].decode(), int(fields[b"ts"]), user and user.decode(),
        ))

    def _renew(self) -> None:
        """Renew this process's presence keys, and write again those Redis lost."""
        client = self._client
        assert client is not None
        with self._lock:
            rooms = list(self._members)
            lost = set(self._dirty)
            self._dirty.clear()
        try:
            if rooms:
                with client.pipeline(transaction=False) as pipe:
                    for room in rooms:
                        pids, mine, _ = self._presence_keys(room)
                        self._scripts["renew"](
                            keys=[pids, mine, *self._keys(room)],
                            args=[self._pid, self._ttl_ms, self._expiry_ms],
                            client=pipe,
                        )
                    renewed = pipe.execute()
                lost.update(room for room, ok in zip(rooms, renewed, strict=True) if not ok)
            for _ in range(3):
                if not lost:
                    return
                lost = self._restore(lost)
        except redis.RedisError:
            with self._lock:
                self._dirty.update(lost)
            raise
        with self._lock:
            self._dirty.update(lost)

    def _restore(self, rooms: set[str]) -> set[str]:
        """Write the members of rooms as this process knows them; return the rooms changed meanwhile."""
        client = self._client
        assert client is not None
        with self._lock:
            snapshot = {
                room: (self._stamps.get(room, 0), dict(self._members.get(room, {}))) for room in rooms
            }
        with client.pipeline(transaction=False) as pipe:
            for room, (_, members) in snapshot.items():
                pids, mine, _ = self._presence_keys(room)
                args: list[Any] = [self._pid, self._ttl_ms]
                for member, name in members.items():
                    args += [member, name]
                self._scripts["restore"](keys=[pids, mine], args=args, client=pipe)
            pipe.execute()
        log.info("restored this process's presence in %d rooms", len(snapshot))
        with self._lock:
            return {room for room, (stamp, _) in snapshot.items() if self._stamps.get(room, 0) != stamp}
