"""The outbox: non-blocking writes, memoryview chunks, exact accounting and the limit."""

from __future__ import annotations

import socket

import pytest

from chat.socket.outbox import IOV_MAX, Outbox, Write


@pytest.fixture
def pair():
    """Return a socketpair with small kernel buffers, so backlogs start early."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield ours, theirs
    ours.close()
    theirs.close()


def read_all(sock: socket.socket, size: int) -> bytes:
    """Read exactly size bytes."""
    sock.settimeout(5)
    data = bytearray()
    while len(data) < size:
        data += sock.recv(65536)
    return bytes(data)


def backlogged(outbox: Outbox) -> bytes:
    """Write until the socket refuses, and return what was written."""
    data = bytearray()
    block = bytes(range(256)) * 16
    while outbox.empty:
        assert outbox.write(block) in (Write.SENT, Write.STARTED)
        data += block
    return bytes(data)


def test_a_write_that_fits_is_sent_and_nothing_waits(pair):
    """A small write goes straight to the socket."""
    ours, theirs = pair
    outbox = Outbox(ours, 1 << 20)
    assert outbox.write(b"hello") is Write.SENT
    assert (outbox.empty, outbox.queued) == (True, 0)
    assert read_all(theirs, 5) == b"hello"


def test_backlog_keeps_order_and_counts_bytes_exactly(pair):
    """What the socket cannot take waits as views, counted exactly, and goes out in order over partial flushes."""
    ours, theirs = pair
    outbox = Outbox(ours, 1 << 20)
    written = bytearray(backlogged(outbox))
    for number in range(50):
        chunk = bytes([number]) * (100 + number)
        assert outbox.write(chunk) is Write.QUEUED
        written += chunk
    assert outbox.queued == sum(len(view) for view in outbox.chunks)
    assert all(isinstance(view, memoryview) for view in outbox.chunks)
    received = bytearray()
    theirs.settimeout(5)
    while outbox.flush() is Write.QUEUED:
        received += theirs.recv(1000)
        assert outbox.queued == sum(len(view) for view in outbox.chunks)
    received += read_all(theirs, len(written) - len(received))
    assert received == written and outbox.queued == 0


def test_more_chunks_than_iov_max_all_go_out(pair):
    """A backlog of more chunks than one sendmsg takes is flushed completely, in order."""
    ours, theirs = pair
    outbox = Outbox(ours, 1 << 30)
    written = bytearray(backlogged(outbox))
    for number in range(IOV_MAX * 3):
        chunk = number.to_bytes(4, "big")
        outbox.write(chunk)
        written += chunk
    received = bytearray()
    theirs.settimeout(5)
    while outbox.flush() is not Write.SENT:
        received += theirs.recv(65536)
    received += read_all(theirs, len(written) - len(received))
    assert received == written


def test_the_first_partial_write_is_held_to_the_limit(pair):
    """A write whose unsent tail alone passes the limit is over it at once."""
    ours, _ = pair
    outbox = Outbox(ours, 1024)
    assert outbox.write(b"x" * 1_000_000) is Write.OVER
    assert outbox.queued == sum(len(view) for view in outbox.chunks)


def test_trim_keeps_only_the_rest_of_a_partly_sent_frame(pair):
    """Trimming drops whole waiting frames but keeps the tail of the one already on the wire."""
    ours, _ = pair
    outbox = Outbox(ours, 1 << 30)
    backlogged(outbox)
    outbox.write(b"later" * 100)
    head = len(outbox.chunks[0])
    assert outbox.partial
    outbox.trim()
    assert len(outbox.chunks) == 1 and outbox.queued == head


def test_a_replay_counts_against_the_limit(pair):
    """Parts written at once (a joiner's replay) count like any data: past the limit they are over it."""
    ours, _ = pair
    outbox = Outbox(ours, 2048)
    assert outbox.write_parts([b"r" * 200_000]) is Write.OVER


def test_parts_wait_uncopied_and_go_out_in_order(pair):
    """The parts that wait are views of the very objects written, so joiners that share a payload share its bytes."""
    ours, theirs = pair
    outbox = Outbox(ours, 1 << 30)
    shared = b"p" * 100_000
    assert outbox.write_parts([b"head", shared, b"tail"]) is Write.STARTED
    assert any(chunk.obj is shared for chunk in outbox.chunks)
    size = 4 + len(shared) + 4
    received = bytearray()
    while outbox.flush() is Write.QUEUED:
        received += theirs.recv(65536)
    received += read_all(theirs, size - len(received))
    assert bytes(received) == b"head" + shared + b"tail"


def test_parts_all_sent_leave_no_queue(pair):
    """A replay the socket takes at once leaves the outbox as it found it: no deque kept for nothing."""
    ours, theirs = pair
    outbox = Outbox(ours, 1 << 30)
    assert outbox.write_parts([b"a", b"b"]) is Write.SENT
    assert outbox.chunks is None and outbox.queued == 0
    assert read_all(theirs, 2) == b"ab"


def test_unlimited_write_ignores_the_limit(pair):
    """A close frame behind a full backlog is queued whatever the limit says."""
    ours, _ = pair
    outbox = Outbox(ours, 1024)
    backlogged(outbox)
    assert outbox.write(b"\x88\x02\x03\xe8", limited=False) is Write.QUEUED


def test_a_broken_socket_is_reported(pair):
    """Writing to a socket whose peer is gone reports BROKEN instead of raising."""
    ours, theirs = pair
    theirs.close()
    outbox = Outbox(ours, 1024)
    verdicts = {outbox.write(b"x" * 100) for _ in range(3)}
    assert Write.BROKEN in verdicts
