"""publisher.send and post, the way of every message: a client id's claim, the backend, the store; real ones."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import ROOT
from redis_server import RedisServer

from chat import backends, config, store
from chat.backends import Backend, Unavailable
from chat.rooms import publisher
from chat.store import Store, Stored

SETTINGS = {**config.DEFAULTS, "HISTORY_SIZE": 10, "HISTORY_REPLAY": 3}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Return where the store's SQLite file is."""
    return tmp_path / "chat.db"


@pytest.fixture
def record(path: Path) -> Iterator[Store]:
    """Return a started SQLite store of this test's own."""
    made = store.create(f"sqlite:///{path}", SETTINGS, str(path.parent))
    made.start()
    yield made
    made.close()


@pytest.fixture
def make() -> Iterator[Callable[[str], Backend]]:
    """Build started backends from URLs and close them after the test."""
    made: list[Backend] = []

    def build(url: str) -> Backend:
        backend = backends.create(url, SETTINGS)
        backend.start(lambda room, items: None)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def stored_once(record: Store, send: Callable[..., publisher.Posted | None], *args: object, **kwargs: object):
    """Run send with an on_stored that records the row; return what it answered and the row once stored."""
    rows: list[Stored] = []
    done = threading.Event()
    posted = send(*args, on_stored=lambda row: (rows.append(row), done.set()), **kwargs)
    assert done.wait(10), "the store did not commit the message"
    return posted, rows[0]


def claim_of(path: Path, room: str, cid: str) -> tuple | None:
    """Return the store's claim row (id,) of cid in room, None when there is none."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id FROM chat_claims WHERE room = ? AND cid = ?", (room, cid)).fetchone()


def test_a_known_client_id_answers_with_the_first_id_and_sends_nothing(record, make):
    """A cid sent before is answered with the first message's id (no ts) and nothing is published."""
    backend = make("memory://")
    first, row = stored_once(record, publisher.send, backend, record, "r", "ann", "hello", None, "c1")
    assert (row.id, row.ts, row.cid) == (first.id, first.ts, "c1") and first.ts is not None
    again = publisher.send(backend, record, "r", "ann", "hello", None, "c1")
    assert again == publisher.Posted(first.id, None)
    assert [item.id for item in backend.replay("r", None, 10).messages] == [first.id]


def test_a_dropped_message_gives_its_claim_back(record, make, path):
    """A message vet drops is not sent, and its cid is free again: the resend goes out."""
    backend = make("memory://")
    assert publisher.send(backend, record, "r", "ann", "spam", None, "c2", vet=lambda text: None) is None
    sent, row = stored_once(record, publisher.send, backend, record, "r", "ann", "fine", None, "c2")
    assert sent.ts is not None and row.text == "fine"
    assert claim_of(path, "r", "c2") == (sent.id,)


def test_a_vet_that_raises_gives_the_claim_back(record, make):
    """An exception out of vet reaches the caller, and the cid is free for the resend."""
    backend = make("memory://")

    def broken(text: str) -> str:
        raise RuntimeError("the moderation service is down")

    with pytest.raises(RuntimeError):
        publisher.send(backend, record, "r", "ann", "hello", None, "c3", vet=broken)
    sent, _ = stored_once(record, publisher.send, backend, record, "r", "ann", "hello", None, "c3")
    assert sent.ts is not None


def test_vet_changes_what_is_sent_and_stored(record, make):
    """The text vet returns is the one published and stored."""
    backend = make("memory://")
    sent, row = stored_once(record, publisher.send, backend, record, "r", "ann", "darn", vet=str.upper)
    assert row.text == "DARN"
    assert b"DARN" in backend.replay("r", None, 1).messages[0].payload and sent.ts == row.ts


def test_a_failed_publish_gives_the_claim_back_and_one_that_may_have_gone_through_keeps_it(record, make, path):
    """Redis refusing the publish frees the cid; Redis not answering in time (it may have run it) keeps it."""
    with RedisServer() as server:
        backend = make(server.url)
        admin = redis.Redis.from_url(server.url)
        admin.client_pause(10_000, all=False)
        try:
            with pytest.raises(Unavailable) as late:
                publisher.send(backend, record, "r", "ann", "held", None, "late")
        finally:
            admin.client_unpause()
            admin.close()
        assert late.value.maybe_done
        server.stop()
        with pytest.raises(Unavailable) as refused:
            publisher.send(backend, record, "r", "ann", "refused", None, "refused")
        assert not refused.value.maybe_done
    resent, _ = stored_once(record, publisher.send, make("memory://"), record, "r", "ann", "refused", None, "refused")
    assert resent.ts is not None
    # The resend's claim came after any release queued for "late": still none is.
    assert claim_of(path, "r", "late") == (None,)


def test_a_post_under_a_client_id_sent_before_answers_as_the_first(record, make):
    """post under a known cid gives the first answer, id and ts; with another message it raises Reused."""
    backend = make("memory://")
    first = publisher.post(backend, record, "r", "ci", "deployed", None, "key 1")
    assert publisher.post(backend, record, "r", "ci", "deployed", None, "key 1") == first
    with pytest.raises(publisher.Reused):
        publisher.post(backend, record, "r", "ci", "another", None, "key 1")
    assert [item.id for item in backend.replay("r", None, 10).messages] == [int(first["id"])]


#: Runs in a fresh interpreter that gevent patched: a greenlet whose publish Redis holds is killed; then another
#: message is sent and stored.
CUT = r"""
from gevent import monkey

monkey.patch_all()

import sys
import threading
import time

import gevent
import redis

from chat import backends, config, store
from chat.rooms import publisher
from chat.backends import redis as redis_backend

# The held publish waits for the kill, not for the socket timeout.
redis_backend.TIMEOUT = 30
url, path = sys.argv[1], sys.argv[2]
settings = {**config.DEFAULTS, "HISTORY_SIZE": 10, "HISTORY_REPLAY": 3}
backend = backends.create(url, settings)
record = store.create(f"sqlite:///{path}", settings, "")
record.start()
admin = redis.Redis.from_url(url)
admin.client_pause(30_000, all=False)
try:
    cut = gevent.spawn(publisher.send, backend, record, "r", "ann", "cut", None, "cut")
    deadline = time.monotonic() + 10
    while admin.info("clients")["blocked_clients"] != 1:
        if time.monotonic() > deadline:
            raise SystemExit("the publish was not held")
        gevent.sleep(0.005)
    cut.kill()
finally:
    admin.client_unpause()
stored = threading.Event()
publisher.send(backend, record, "r", "ann", "later", None, "later", on_stored=lambda row: stored.set())
if not stored.wait(10):
    raise SystemExit("the later message was not stored")
record.close()
backend.close()
"""


def test_a_publish_interrupted_on_its_way_keeps_its_claim(clean_redis_url, path):
    """Under gevent, a greenlet killed while Redis holds its publish (which may still run) leaves its cid claimed."""
    finished = subprocess.run(
        [sys.executable, "-c", CUT, clean_redis_url, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert claim_of(path, "r", "cut") == (None,)
    assert claim_of(path, "r", "later") is not None
