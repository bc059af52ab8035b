"""The message store's contract, on SQLite and on a real PostgreSQL: reads, claims, batches, retention, settings."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_server import clean_postgres_url, postgres_url  # noqa: F401  (fixtures)

from chat import config
from chat.store import Claim, Retention, Revision, Store, Stored, create
from chat.store.records import STALE
from chat.store.retention import prune

NOW_MS = 1_800_000_000_000


def settings(**given: str) -> dict:
    """Return the chat's settings with the given CHAT_* values."""
    return config.load({f"CHAT_{key}": value for key, value in given.items()})


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path: Path) -> str:
    """Return a store URL: a SQLite file in a temp folder, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return request.getfixturevalue("clean_postgres_url")


@pytest.fixture
def opened(store_url: str) -> Iterator[Callable[..., Store]]:
    """Open stores on store_url (several share it, as workers do) and close them after the test."""
    stores: list[Store] = []

    def open_store(**given: str) -> Store:
        store = create(store_url, settings(**given), "/nonexistent")
        store.start()
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


def row(message_id: int, room: str = "r", cid: str | None = None, ts: int = NOW_MS) -> Stored:
    """Return a message of room."""
    return Stored(room, message_id, ts, "ann", f"m{message_id}", None, cid)


def test_messages_read_back_in_order_before_and_after_commit(opened):
    """Appended messages are readable at once, in id order, and the same once committed; rooms stay apart."""
    store = opened()
    for message_id in (3, 1, 2):
        store.append(row(message_id))
    store.append(row(9, room="other"))
    assert [r.id for r in store.newest("r", 10)] == [1, 2, 3]
    assert store.flush()
    assert [r.id for r in store.newest("r", 2)] == [2, 3]
    assert [r.id for r in store.oldest("r", 2, after=1)] == [2, 3]
    assert store.newest("r", 10, after=1, before=3) == [row(2)]
    assert (store.count("r", 0, 4), store.floor("r"), store.floor("empty")) == (3, 1, None)


def test_a_second_process_reads_what_the_first_committed(opened):
    """Two stores on one database (two workers) see each other's messages once committed."""
    first, second = opened(), opened()
    first.append(row(1))
    second.append(row(2))
    assert first.flush() and second.flush()
    assert [r.id for r in first.newest("r", 10)] == [r.id for r in second.newest("r", 10)] == [1, 2]


def test_paging_back_through_10000_messages_sees_each_once(opened):
    """Pages of 100 before the oldest id seen walk back through 10,000 messages, each once, in order."""
    store = opened()
    for message_id in range(1, 10_001):
        store.append(row(message_id))
    assert store.flush(30)
    seen: list[int] = []
    before = None
    while page := store.newest("r", 100, before=before):
        seen[:0] = [r.id for r in page]
        before = page[0].id
    assert seen == list(range(1, 10_001))


def test_a_busy_room_pays_one_commit_per_batch_not_per_message(opened):
    """Messages appended by 10 threads at once are committed in far fewer transactions than messages."""
    store = opened()
    commits = []
    write = store.database.write

    def counted(*args, **kwargs):
        commits.append(len(args[0]))
        return write(*args, **kwargs)

    store.database.write = counted
    ids = iter(range(1, 10**6))
    lock = threading.Lock()

    def send() -> None:
        for _ in range(500):
            with lock:
                message_id = next(ids)
            store.append(row(message_id))

    threads = [threading.Thread(target=send, name=f"sender-{n}") for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.flush(30)
    assert sum(commits) == 5000 and store.count("r", 0, 10**6) == 5000
    assert len(commits) < 5000 / 5, f"{len(commits)} commits for 5000 messages"


def test_a_claim_is_mine_then_busy_then_the_stored_id(opened):
    """The first claim of a cid owns it, another waits while it is sent, and once stored every claim gets its id."""
    first, second = opened(), opened()
    writer = first._started()
    assert writer.claim("r", "c1") is Claim.MINE
    assert second._started().claim("r", "c1") is Claim.BUSY
    first.append(row(7, cid="c1"))
    assert first.flush()
    assert second.claim("r", "c1") == first.claim("r", "c1") == 7
    assert second.claim("other", "c1") is None


def test_a_released_claim_is_sent_again_and_a_stale_one_is_taken_over(opened):
    """A claim given back (moderation, an outage) is free again; one left by a dead process is free after STALE."""
    store = opened()
    assert store.claim("r", "given") is None
    store.release("r", "given")
    assert store.claim("r", "given") is None
    database = store.database
    claims = [("r", "left")]
    assert database.write([], claims, [], 1000.0) == [Claim.MINE]
    assert database.write([], claims, [], 1000.0 + STALE - 1) == [Claim.BUSY]
    assert database.write([], claims, [], 1000.0 + STALE + 1) == [Claim.MINE]
    assert database.write([], claims, [], 1000.0 + STALE + 2) == [Claim.BUSY]


def test_a_claim_waiting_on_another_connection_gets_its_id(opened):
    """Store.claim of a cid another process is sending waits until that message is stored and returns its id."""
    first, second = opened(), opened()
    assert first.claim("r", "slow") is None
    answer: list[int | None] = []
    waiter = threading.Thread(target=lambda: answer.append(second.claim("r", "slow")), name="claimant")
    waiter.start()
    first.append(row(42, cid="slow"))
    waiter.join(5)
    assert answer == [42]


def test_retention_by_count_keeps_each_rooms_newest_and_raises_its_floor(opened):
    """A count keeps the newest messages of each room; the floor moves past what went, claims go with them."""
    store = opened()
    for message_id in range(1, 31):
        store.append(row(message_id, cid=f"c{message_id}"))
    store.append(row(5, room="small"))
    assert store.flush()
    database = store.database
    removed = 0
    while chunk := prune(database, Retention(count=10), NOW_MS, 7):
        removed += chunk
    assert removed == 20
    assert [r.id for r in store.newest("r", 100)] == list(range(21, 31))
    assert (store.floor("r"), store.floor("small")) == (20, 5)
    assert store.claim("r", "c3") is None and store.claim("r", "c25") == 25


def test_retention_by_age_forgets_old_messages_and_rooms_left_empty(opened):
    """An age removes what is older; a room with nothing left is gone from the store."""
    store = opened()
    day = 86_400_000
    store.append(row(1, room="old", ts=NOW_MS - 100 * day))
    store.append(row(2, room="mixed", ts=NOW_MS - 100 * day))
    store.append(row(3, room="mixed", ts=NOW_MS - day))
    assert store.flush()
    assert prune(store.database, Retention(age=90 * 86400), NOW_MS, 1000) == 2
    assert (store.floor("old"), store.newest("old", 10)) == (None, [])
    assert (store.floor("mixed"), [r.id for r in store.newest("mixed", 10)]) == (2, [3])


def test_the_writer_prunes_on_its_own_when_due(opened):
    """With CHAT_RETENTION set, the writer thread removes what it no longer keeps, without being asked."""
    store = opened(RETENTION="5", RETENTION_INTERVAL="0.05")
    for message_id in range(1, 21):
        store.append(row(message_id))
    deadline = time.monotonic() + 10
    while store.count("r", 0, 100) > 5:
        assert time.monotonic() < deadline, "retention did not run"
        store.flush(0.05)
    assert [r.id for r in store.newest("r", 100)] == list(range(16, 21))


def test_settings_choose_the_store_and_the_retention():
    """CHAT_STORE_URL, else DATABASE_URL when it is PostgreSQL, picks the store; CHAT_RETENTION reads its forms."""
    assert config.load({})["STORE_URL"] == ""
    assert config.load({"DATABASE_URL": "postgres://h/db"})["STORE_URL"] == "postgres://h/db"
    assert config.load({"DATABASE_URL": "mysql://h/db"})["STORE_URL"] == ""
    assert config.load({"DATABASE_URL": "postgres://h/db", "CHAT_STORE_URL": "none"})["STORE_URL"] == "none"
    forms = {"forever": (None, None), "90d": (90 * 86400, None), "100000": (None, 100000), "24h,50": (86400, 50)}
    for text, parsed in forms.items():
        assert config.load({"CHAT_RETENTION": text})["RETENTION"] == parsed
    for variable, value in (("CHAT_RETENTION", "lots"), ("CHAT_RETENTION", "0"), ("CHAT_STORE_URL", "mysql://x")):
        with pytest.raises(config.ConfigError, match=variable):
            config.load({variable: value})


def test_default_store_is_a_file_in_the_instance_folder(tmp_path, monkeypatch):
    """With no CHAT_STORE_URL the store is chat.db in the app's instance folder, created on first start."""
    monkeypatch.delenv("CHAT_STORE_URL")
    store = create(config.load({})["STORE_URL"], settings(), str(tmp_path / "instance"))
    try:
        store.start()
        assert (tmp_path / "instance" / "chat.db").exists()
    finally:
        store.close()


def test_a_postgresql_url_without_psycopg_names_what_to_install(monkeypatch):
    """Without psycopg installed, a PostgreSQL store URL stops start-up with a ConfigError saying what to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "chat.store.postgres", raising=False)
    with pytest.raises(config.ConfigError, match="psycopg"):
        create("postgresql://db.internal/chat", settings(), "/nonexistent")


def test_changes_fold_into_their_message_and_retention_removes_them_with_it(opened):
    """A change is stored folded into its message (no copy of the old text), and goes when its message goes."""
    store = opened()
    for message_id in range(1, 21):
        store.append(row(message_id))
    edited = json.dumps({"state": 2, "message": "new", "id": "3", "room": "r", "name": "n", "ts": NOW_MS,
                         "edited": NOW_MS})
    store.append(Revision("r", 21, 3, NOW_MS, "edit", "u", "n", "", None, edited))
    store.append(Revision("r", 22, 18, NOW_MS, "react", "u", "n", "👍", True, edited.replace('"3"', '"18"')))
    assert store.flush()
    [three] = [stored for stored in store.newest("r", 100) if stored.id == 3]
    assert (three.text, json.loads(three.item().payload)["message"]) == ("", "new")
    assert [change.id for change in store.changes("r", 0, 100, 10)] == [21, 22]
    while prune(store.database, Retention(count=10), NOW_MS, 100):
        pass
    assert [change.id for change in store.changes("r", 0, 100, 10)] == [22]


def test_a_delete_committed_while_a_room_is_read_is_in_what_is_read(tmp_path):
    """A delete that commits after the database answered a read, but before the read returns, still shows: the
    writer's queue is looked at before the database is asked, so a commit in between is in one or the other."""
    path = tmp_path / "chat.db"
    store = create(f"sqlite:///{path}", settings(), "/nonexistent")
    store.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        store.append(row(1))
        assert store.flush()
        # Holding the database's write lock keeps the delete queued until the read has asked the database.
        blocker.execute("BEGIN IMMEDIATE")
        deleted = json.dumps({"state": 2, "message": "", "id": "1", "room": "r", "name": "ann", "ts": NOW_MS,
                              "deleted": True})
        store.append(Revision("r", 2, 1, NOW_MS, "delete", None, "mod", "", None, deleted))
        query = store.database.newest

        def newest_then_commit(*args: object) -> list[Stored]:
            rows = query(*args)
            blocker.execute("COMMIT")
            assert store.flush()
            return rows

        store.database.newest = newest_then_commit
        [message] = store.newest("r", 10)
        assert (message.text, json.loads(message.item().payload).get("deleted")) == ("", True)
    finally:
        blocker.close()
        store.close()
