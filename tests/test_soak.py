"""Soak and churn: repeated waves of clients leave no memory, thread or registry growth.

`make soak` runs the long version (20 waves of 500 clients); `make test` a short one.
glibc's per-thread malloc caches keep growing in long-lived pool threads for many
waves (about 2 KB per thread per wave here, slowly levelling off); they are turned
off in the server under test so that what is measured is this code's memory.
A connection's thread ends with it, and gunicorn's pool of POOL threads serves only
handshakes: once a wave has left, the worker has at most POOL - 1 threads more than it
had after the first one (which also started the fan-out's and store's threads), and
any other is one that something left behind.
"""

from __future__ import annotations

import os

import pytest
from conftest import Server, crowded, proc_status, wait_for
from crowd import Crowd, Member, masked

LONG = os.environ.get("CHAT_SOAK") == "long"
WAVES, CLIENTS = (20, 500) if LONG else (7, 200)
#: The first waves start the pool's threads and fill the allocator's pools; growth is measured after them.
WARMUP = 3
POOL = 2

pytestmark = crowded


def this_wave(member: Member, wave: int) -> list[str]:
    """Return the chat messages of this wave that member got, in order (its replay holds earlier waves' too)."""
    prefix = f"wave {wave} "
    return [e["message"] for e in member.frames if e["message"].startswith(prefix)]


@pytest.mark.slow
def test_waves_of_clients_leave_nothing_behind():
    """RSS after the last wave is within 10% of after the warm-up; threads and registry do not grow."""
    server = Server(
        "gthread", threads=POOL, CHAT_MAX_CONNECTIONS=str(CLIENTS), CHAT_RATE_LIMIT="off",
        CHAT_HEARTBEAT_INTERVAL="0.5", GLIBC_TUNABLES="glibc.malloc.tcache_count=0",
    )
    server.start()
    try:
        (worker,) = server.worker_pids()
        after: list[tuple[int, int]] = []
        for wave in range(WAVES):
            crowd = Crowd(server.port, "/ws?room=soak", CLIENTS, keep=lambda event: event.get("state") == 2)
            for number, member in enumerate(crowd.members[:20]):
                member.sock.send(masked(0x1, f"wave {wave} message {number}".encode()))
            sent = sorted(f"wave {wave} message {number}" for number in range(20))
            done = lambda crowd=crowd, got=sent, at=wave: all(sorted(this_wave(m, at)) == got for m in crowd.members)  # noqa: E731
            crowd.pump(30, until=done)
            # The room's order is the order the server took them in, one and the same for every client.
            timelines = {tuple(this_wave(m, wave)) for m in crowd.members}
            assert len(timelines) == 1, f"clients saw {len(timelines)} different timelines of this wave"
            assert sorted(timelines.pop()) == sent, "a client missed or repeated a message of this wave"
            crowd.close(clean=wave % 2 == 0)
            wait_for(lambda: server.health()["connections"] == 0, 30, f"wave {wave} to leave")
            after.append((proc_status(worker, "VmRSS"), server.threads_of(worker)))
        first_rss = after[WARMUP - 1][0]
        last_rss = after[-1][0]
        assert last_rss <= first_rss * 1.10, f"RSS grew from {first_rss} KB to {last_rss} KB: {after}"
        # A connection's thread may still be returning when the registry is empty: wait for it to end.
        bound = after[0][1] + POOL - 1
        wait_for(lambda: server.threads_of(worker) <= bound, 10, f"at most {bound} threads: {after}")
        print(f"\nsoak: {WAVES} waves of {CLIENTS}: (RSS KB, threads) after each wave: {after}")
    finally:
        server.stop()
