"""Time GET /api/me/rooms for a user in many rooms, through a gunicorn worker, on SQLite or PostgreSQL.

    python -m bench.rooms [--rooms 500] [--messages 20] [--store postgresql://...] [--requests 50]

The store is filled directly (each room private with the user and another, that many messages each,
half of them the other's, and the user's read position at the middle), then one gthread worker serves
it and the user, with a JWT, asks for its rooms; the figure is the median and 95th percentile of the
requests' wall time, as the client sees it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request

import jwt

from bench.attacks import ROOT, Served
from chat import config
from chat.store import Stored, create
from chat.store import conversations as sql

SECRET = "a-secret-for-the-bench-0123456789abcdef"


def fill(url: str, rooms: int, messages: int) -> None:
    """Make rooms private rooms of "ana" and "bo", each with messages, ana having read half of each."""
    store = create(url, config.load({}), tempfile.gettempdir())
    store.start()
    try:
        names = [f"r{n:04d}" for n in range(rooms)]
        store.change([statement for room in names for statement in sql.put_room(room, True, ["ana", "bo"])])
        base = time.time_ns() // 1_000_000 * 1000
        for n, room in enumerate(names):
            for k in range(messages):
                user = "bo" if k % 2 else "ana"
                store.append(Stored(room, base + 10_000 * n + k + 1, base // 1000, user.title(), f"m{k}", user))
            store.read(room, "ana", base + 10_000 * n + messages // 2)
        store.flush(60)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--store", help="a postgresql:// URL (its chat tables are filled); default a fresh SQLite file")
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory(prefix="bench-rooms-")
    url = args.store or f"sqlite:///{folder.name}/chat.db"
    fill(url, args.rooms, args.messages)
    served = Served(ROOT, "gthread", CHAT_STORE_URL=url, CHAT_JWT_SECRET=SECRET)
    try:
        token = jwt.encode({"sub": "ana", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
        request = urllib.request.Request(f"http://127.0.0.1:{served.port}/api/me/rooms",
                                         headers={"Authorization": f"Bearer {token}"})
        timings, size = [], 0
        for n in range(args.requests + 5):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                size = len(response.read())
            if n >= 5:
                timings.append(time.perf_counter() - started)
    finally:
        served.stop()
    timings.sort()
    median, p95 = statistics.median(timings) * 1000, timings[int(len(timings) * 0.95) - 1] * 1000
    print(f"GET /api/me/rooms, {args.rooms} rooms x {args.messages} messages, {url.split(':')[0]}: "
          f"median {median:.1f} ms, p95 {p95:.1f} ms, {size / 1024:.0f} KiB", file=sys.stdout)


if __name__ == "__main__":
    main()
