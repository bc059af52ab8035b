"""RFC 6455 conformance, case by case as Autobahn|Testsuite does, in raw frames against a real server."""

from __future__ import annotations

import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterator

import pytest
from conftest import Server, proc_status
from wsclient import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, close_payload, frame
from wsclient import RawClient as Peer

from chat.socket.connection import CLOSE_WAIT

#: The main server's message limit: also the largest 16-bit frame length plus one.
LIMIT = 65536
#: The compressing server's limit, small so that a deflate bomb is caught early.
DEFLATE_LIMIT = 4096
KOSME = "κόσμε".encode()
#: Grace beyond CLOSE_WAIT for a loaded machine.
MARGIN = 1.5


@pytest.fixture(scope="module")
def conformance() -> Iterator[Server]:
    """Start one server for the uncompressed cases, with a 64 KiB message limit."""
    server = Server(
        "gthread", CHAT_RATE_LIMIT="off", CHAT_MAX_MESSAGE_BYTES=str(LIMIT), CHAT_HEARTBEAT_INTERVAL="0.5"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deflating() -> Iterator[Server]:
    """Start one server that accepts permessage-deflate, with a small message limit."""
    server = Server(
        "gthread", CHAT_RATE_LIMIT="off", CHAT_MAX_MESSAGE_BYTES=str(DEFLATE_LIMIT), CHAT_COMPRESSION="on"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    """Open raw clients in a room of this test's own; close them afterwards."""
    room = "c-" + secrets.token_hex(8)
    peers: list[Peer] = []

    def open_peer(server: Server, offer: str = "") -> Peer:
        opened = Peer(server.port, f"/ws?room={room}", offer)
        peers.append(opened)
        return opened

    yield open_peer
    for opened in peers:
        opened.close()


@pytest.fixture
def pair(conformance, peer) -> tuple[Peer, Peer]:
    """Return a bystander and a probe, in that order, joined to one fresh room."""
    return peer(conformance), peer(conformance)


def still_served(bystander: Peer) -> None:
    """Check that a well-behaved client of the room can still send and receive."""
    text = "still here " + secrets.token_hex(4)
    bystander.say(text)
    assert bystander.chat() == text


def assert_closed(probe: Peer, code: int) -> None:
    """Check that the server closes probe with code, answer as a client should, and see TCP end."""
    assert probe.closed() == code
    try:
        probe.send(CLOSE, close_payload(code) if code != 1005 else b"")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may end TCP right after its close frame
    probe.ended(CLOSE_WAIT + MARGIN)


# Framing.

@pytest.mark.parametrize(("size", "marker"), [(125, 125), (126, 126), (65535, 126), (65536, 127)])
def test_text_of_each_length_encoding_is_broadcast(pair, size, marker):
    """Text frames with 7-, 16- and 64-bit lengths reach the sender and the room intact."""
    bystander, probe = pair
    text = ("length %d " % size + "*" * size)[:size]
    data = frame(TEXT, text.encode())
    assert data[1] & 0x7F == marker
    probe.sock.sendall(data)
    assert probe.chat() == text
    assert bystander.chat() == text
    still_served(bystander)


def test_empty_text_is_ignored(pair):
    """A text frame of length 0 is a blank message: nobody gets a broadcast, the sender stays."""
    bystander, probe = pair
    probe.send(TEXT, b"")
    probe.say("after the empty one")
    assert probe.chat() == "after the empty one"
    assert bystander.chat() == "after the empty one"
    still_served(bystander)


@pytest.mark.parametrize(("size", "width"), [(5, 16), (125, 16), (126, 64), (65535, 64)])
def test_length_not_in_its_shortest_form_closes_1002(pair, size, width):
    """A length written in more bytes than it needs is a protocol error."""
    bystander, probe = pair
    probe.send(TEXT, b"x" * size, width=width)
    assert_closed(probe, 1002)
    still_served(bystander)


def test_length_with_the_top_bit_set_closes_1002(pair):
    """A 64-bit length with its most significant bit set is a protocol error."""
    bystander, probe = pair
    probe.sock.sendall(struct.pack("!BBQ", 0x81, 0xFF, 2**63 + 5) + os.urandom(4) + b"xxxxx")
    assert_closed(probe, 1002)
    still_served(bystander)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
def test_reserved_bits_close_1002(pair, rsv):
    """RSV1, RSV2 or RSV3 set with no extension negotiated is a protocol error, and nothing is broadcast."""
    bystander, probe = pair
    probe.send(TEXT, b"reserved bits", rsv=rsv)
    assert_closed(probe, 1002)
    still_served(bystander)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcode_closes_1002(pair, opcode):
    """A reserved data or control opcode is a protocol error."""
    bystander, probe = pair
    probe.send(opcode, b"reserved opcode")
    assert_closed(probe, 1002)
    still_served(bystander)


def test_unmasked_client_frame_closes_1002(pair):
    """A client frame without a mask is a protocol error, and it is not broadcast."""
    bystander, probe = pair
    probe.send(TEXT, b"not masked", mask=False)
    assert_closed(probe, 1002)
    still_served(bystander)


def test_binary_frame_closes_1003(pair):
    """A binary message is refused with 1003."""
    bystander, probe = pair
    probe.send(BINARY, b"\x00\x01\x02")
    assert_closed(probe, 1003)
    still_served(bystander)


# Pings and pongs.

@pytest.mark.parametrize("payload", [b"", os.urandom(125)], ids=["empty", "125-bytes"])
def test_ping_is_answered_with_its_payload(pair, payload):
    """A ping gets a pong that carries its payload back byte for byte."""
    bystander, probe = pair
    probe.send(PING, payload)
    assert probe.pong() == payload
    still_served(bystander)


def test_pings_in_a_row_get_pongs_in_order(pair):
    """Ten pings sent at once get ten pongs, in order."""
    bystander, probe = pair
    probe.sock.sendall(b"".join(frame(PING, b"ping %d" % n) for n in range(10)))
    assert [probe.pong() for _ in range(10)] == [b"ping %d" % n for n in range(10)]
    still_served(bystander)


def test_unsolicited_pong_is_ignored(pair):
    """A pong nobody asked for gets no answer and changes nothing."""
    bystander, probe = pair
    probe.send(PONG, b"unsolicited")
    probe.say("after the pong")
    assert probe.chat() == "after the pong"
    assert bystander.chat() == "after the pong"
    assert not probe.pongs
    still_served(bystander)


def test_ping_over_125_bytes_closes_1002(pair):
    """A control frame with more than 125 bytes of payload is a protocol error."""
    bystander, probe = pair
    probe.send(PING, b"p" * 126)
    assert_closed(probe, 1002)
    still_served(bystander)


def test_fragmented_ping_closes_1002(pair):
    """A control frame without FIN is a protocol error."""
    bystander, probe = pair
    probe.send(PING, b"half", fin=False)
    probe.send(CONTINUATION, b" a ping")
    assert_closed(probe, 1002)
    still_served(bystander)


# Fragmentation.

def test_fragments_make_one_message(pair):
    """A message in three fragments, some of them empty, is broadcast once and whole."""
    bystander, probe = pair
    probe.send(TEXT, b"", fin=False)
    probe.send(CONTINUATION, b"frag", fin=False)
    probe.send(CONTINUATION, b"", fin=False)
    probe.send(CONTINUATION, b"ments")
    assert probe.chat() == "fragments"
    assert bystander.chat() == "fragments"
    still_served(bystander)


def test_ping_between_fragments_is_answered(pair):
    """A ping inside a fragmented message gets its pong, and the message arrives intact."""
    bystander, probe = pair
    probe.send(TEXT, b"Hello, ", fin=False)
    probe.send(PING, b"between")
    assert probe.pong() == b"between"
    probe.send(CONTINUATION, b"world!")
    assert probe.chat() == "Hello, world!"
    assert bystander.chat() == "Hello, world!"
    still_served(bystander)


def test_continuation_without_a_start_closes_1002(pair):
    """A continuation frame with no message to continue is a protocol error."""
    bystander, probe = pair
    probe.send(CONTINUATION, b"nothing to continue")
    assert_closed(probe, 1002)
    still_served(bystander)


def test_new_message_inside_a_fragmented_one_closes_1002(pair):
    """A text frame before the fragmented message in progress is finished is a protocol error."""
    bystander, probe = pair
    probe.send(TEXT, b"first part", fin=False)
    probe.send(TEXT, b"a new message")
    assert_closed(probe, 1002)
    still_served(bystander)


# UTF-8.

@pytest.mark.parametrize("text", ["κόσμε", "𝄞 and 中文", "\u0000 nul", "\ufeff\uffff"])
def test_valid_utf8_is_broadcast(pair, text):
    """Valid UTF-8, four-byte characters and noncharacters included, is broadcast unchanged."""
    bystander, probe = pair
    probe.send(TEXT, text.encode())
    assert probe.chat() == text
    assert bystander.chat() == text
    still_served(bystander)


def test_character_split_across_fragments_is_whole(pair):
    """A character whose bytes are split between fragments arrives whole."""
    bystander, probe = pair
    data = "κόσμε 𝄞".encode()
    for start in range(0, len(data) - 1):
        probe.send(TEXT if start == 0 else CONTINUATION, data[start:start + 1], fin=False)
    probe.send(CONTINUATION, data[-1:])
    assert probe.chat() == "κόσμε 𝄞"
    assert bystander.chat() == "κόσμε 𝄞"
    still_served(bystander)


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\xc0\xaf overlong", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 past U+10FFFF",
     KOSME + b"\xe1\xbd"],
    ids=["ff", "overlong", "surrogate", "beyond-unicode", "cut-at-the-end"],
)
def test_invalid_utf8_in_one_frame_closes_1007(pair, data):
    """A text frame that is not valid UTF-8 closes with 1007 and is not broadcast."""
    bystander, probe = pair
    probe.send(TEXT, data)
    assert_closed(probe, 1007)
    still_served(bystander)


def test_invalid_utf8_fails_fast_inside_a_frame(pair):
    """Invalid UTF-8 early in a frame closes 1007 before the rest of the frame is sent."""
    bystander, probe = pair
    data = frame(TEXT, KOSME + b"\xed\xa0\x80" + b"x" * 1000)
    probe.sock.sendall(data[:40])
    assert_closed(probe, 1007)
    still_served(bystander)


def test_invalid_utf8_fails_fast_across_fragments(pair):
    """An invalid fragment closes 1007 at once, while the message is still unfinished."""
    bystander, probe = pair
    probe.send(TEXT, KOSME, fin=False)
    probe.send(CONTINUATION, b"\xed\xa0\x80edited", fin=False)
    assert_closed(probe, 1007)
    still_served(bystander)


# Closing.

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
def test_valid_close_code_is_echoed(pair, code):
    """A close with a valid code is answered with the same code, then the server ends TCP."""
    bystander, probe = pair
    probe.send(CLOSE, close_payload(code, b"bye"))
    assert_closed(probe, code)
    still_served(bystander)


def test_close_with_the_longest_reason_is_echoed(pair):
    """A close whose body is the 125 bytes a control frame allows is answered with its code."""
    bystander, probe = pair
    probe.send(CLOSE, close_payload(1000, "é".encode() * 61 + b"x"))
    assert_closed(probe, 1000)
    still_served(bystander)


def test_empty_close_is_answered(pair):
    """A close with no body is answered with a close, then the server ends TCP."""
    bystander, probe = pair
    probe.send(CLOSE)
    assert_closed(probe, 1005)
    still_served(bystander)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_code_closes_1002(pair, code):
    """A close with a reserved, local-only or out-of-range code is a protocol error."""
    bystander, probe = pair
    probe.send(CLOSE, close_payload(code))
    assert_closed(probe, 1002)
    still_served(bystander)


def test_close_with_one_byte_body_closes_1002(pair):
    """A close whose body is a single byte is a protocol error."""
    bystander, probe = pair
    probe.send(CLOSE, b"\x03")
    assert_closed(probe, 1002)
    still_served(bystander)


def test_close_reason_not_utf8_closes_1007(pair):
    """A close reason that is not valid UTF-8 closes with 1007."""
    bystander, probe = pair
    probe.send(CLOSE, close_payload(1000, KOSME + b"\xed\xa0\x80edited"))
    assert_closed(probe, 1007)
    still_served(bystander)


def test_frames_after_the_close_are_ignored(pair):
    """Text and pings after the client's close frame get no broadcast and no pong."""
    bystander, probe = pair
    probe.sock.sendall(frame(CLOSE, close_payload(1000)) + frame(TEXT, b"too late") + frame(PING, b"late"))
    assert_closed(probe, 1000)
    assert not probe.pongs and not probe.chats
    still_served(bystander)


@pytest.mark.parametrize(
    ("data", "code"),
    [(frame(TEXT, b"x" * (LIMIT + 1)), 1009), (frame(BINARY, b"b"), 1003), (frame(5), 1002)],
    ids=["too-big", "binary", "bad-opcode"],
)
def test_tcp_ends_after_the_close_even_unanswered(pair, data, code):
    """After its close frame the server ends TCP within CLOSE_WAIT, though the client never answers."""
    bystander, probe = pair
    probe.sock.sendall(data)
    assert probe.closed() == code
    probe.ended(CLOSE_WAIT + MARGIN)
    still_served(bystander)


def test_answered_close_ends_tcp_at_once(pair):
    """When the client answers the server's close, the server ends TCP."""
    bystander, probe = pair
    probe.send(BINARY, b"b")
    assert probe.closed() == 1003
    probe.send(CLOSE, close_payload(1003))
    probe.ended(CLOSE_WAIT + MARGIN)
    still_served(bystander)


# Size limits.

@pytest.mark.parametrize("unit", ["x", "é"])
def test_message_of_exactly_the_limit_is_broadcast(pair, unit):
    """A message of exactly CHAT_MAX_MESSAGE_BYTES bytes (not characters) is accepted."""
    bystander, probe = pair
    text = unit * (LIMIT // len(unit.encode()))
    assert len(text.encode()) == LIMIT
    probe.say(text)
    assert probe.chat() == text
    assert bystander.chat() == text
    still_served(bystander)


@pytest.mark.parametrize("unit", ["x", "é"])
def test_message_one_byte_over_the_limit_closes_1009(pair, unit):
    """A message one byte over CHAT_MAX_MESSAGE_BYTES closes with 1009 and is not broadcast."""
    bystander, probe = pair
    text = unit * (LIMIT // len(unit.encode())) + "x"
    probe.say(text)
    assert_closed(probe, 1009)
    still_served(bystander)


def test_oversized_frame_is_refused_before_it_is_all_sent(pair):
    """A frame announcing more than the limit closes 1009 once the limit is passed, not at its end."""
    bystander, probe = pair
    data = frame(TEXT, b"y" * (LIMIT * 16))
    probe.sock.sendall(data[:LIMIT + 1024])
    assert_closed(probe, 1009)
    still_served(bystander)


def test_fragmented_message_over_the_limit_closes_1009_before_its_end(pair):
    """Fragments adding up past the limit close 1009 while the message is unfinished."""
    bystander, probe = pair
    size = 16384
    sent = 0
    while sent <= LIMIT:
        probe.send(TEXT if sent == 0 else CONTINUATION, b"f" * size, fin=False)
        sent += size
    assert_closed(probe, 1009)
    still_served(bystander)


# permessage-deflate.

def test_compressed_message_is_broadcast(deflating, peer):
    """A compressed message, whole or in fragments, is inflated and broadcast to compressed and plain clients."""
    plain, probe = peer(deflating), peer(deflating, "permessage-deflate")
    text = "compressible " * 300
    probe.send(TEXT, probe.deflate(text.encode()), rsv=0x40)
    assert probe.chat() == text
    assert plain.chat() == text
    data = probe.deflate(b"in two fragments")
    probe.send(TEXT, data[:5], rsv=0x40, fin=False)
    probe.send(CONTINUATION, data[5:])
    assert probe.chat() == "in two fragments"
    assert plain.chat() == "in two fragments"
    still_served(plain)


def test_negotiated_deflate_parameters_are_honoured(deflating, peer):
    """With no context takeover and a 10-bit server window agreed, repeated messages inflate on both sides."""
    offer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=10"
    plain, probe = peer(deflating), peer(deflating, offer)
    assert b"server_no_context_takeover" in probe.head and b"server_max_window_bits=10" in probe.head
    text = "the same words again " * 40
    for _ in range(3):
        probe.send(TEXT, probe.deflate(text.encode()), rsv=0x40)
        assert probe.chat() == text
        assert plain.chat() == text
    still_served(plain)


@pytest.mark.parametrize(
    ("opcode", "rsv", "fin"), [(PING, 0x40, True), (CONTINUATION, 0x40, True), (TEXT, 0x20, True)],
    ids=["rsv1-on-ping", "rsv1-on-continuation", "rsv2"],
)
def test_rsv_misuse_with_deflate_closes_1002(deflating, peer, opcode, rsv, fin):
    """With deflate on, RSV1 on a control or continuation frame, or any other RSV bit, is a protocol error."""
    plain, probe = peer(deflating), peer(deflating, "permessage-deflate")
    if opcode == CONTINUATION:
        probe.send(TEXT, b"plain start", fin=False)
    probe.send(opcode, b"rsv", rsv=rsv, fin=fin)
    assert_closed(probe, 1002)
    still_served(plain)


def test_corrupt_deflate_data_closes_1007(deflating, peer):
    """Compressed data that does not inflate closes with 1007."""
    plain, probe = peer(deflating), peer(deflating, "permessage-deflate")
    probe.send(TEXT, b"\xff\xff\xff\xff", rsv=0x40)
    assert_closed(probe, 1007)
    still_served(plain)


def test_deflate_bomb_closes_1009_without_inflating_it(deflating, peer):
    """A few KB that inflate to 50 MB close with 1009 while the worker grows by far less than the bomb."""
    (worker,) = deflating.worker_pids()
    plain, probe = peer(deflating), peer(deflating, "permessage-deflate")
    zeros = bytes(1 << 20)
    bomb = b"".join(probe.deflater.compress(zeros) for _ in range(50))
    bomb = (bomb + probe.deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(bomb) < 100_000
    before = proc_status(worker, "VmRSS")
    probe.send(TEXT, bomb, rsv=0x40)
    assert_closed(probe, 1009)
    grown = proc_status(worker, "VmHWM") - before
    assert grown < 20_000, f"the worker's peak RSS grew by {grown} KB"
    still_served(plain)
