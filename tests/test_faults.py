"""Faults that stall instead of crash: a frozen redis-server, a frozen client process."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from conftest import PYTHON, wait_for
from reconnecting import Pacer
from redis_server import RedisServer

#: How long redis-server stays frozen: several command timeouts (1 s) and reader timeouts (2 s).
FREEZE = 5.0
PING = 0.5

#: A client in its own process: it answers pings (printing "pong") until it is frozen, and
#: prints the close frame it finds once it runs again.
FROZEN_CLIENT = """
import sys, websocket
ws = websocket.create_connection(sys.argv[1], timeout=30)
while True:
    try:
        frame = ws.recv_frame()
    except (OSError, websocket.WebSocketException) as exc:
        print("lost", type(exc).__name__, flush=True)
        break
    if frame.opcode == websocket.ABNF.OPCODE_PING:
        try:
            ws.pong(frame.data)
            print("pong", flush=True)
        except (OSError, websocket.WebSocketException):
            print("pong failed", flush=True)
    elif frame.opcode == websocket.ABNF.OPCODE_CLOSE:
        code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
        print("close", code, frame.data[2:].decode(errors="replace"), flush=True)
        break
    elif b'"welcome"' in frame.data:
        print("welcome", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_frozen_redis_loses_no_acknowledged_message(make_server, resuming):
    """Redis frozen for 5 s: /healthz says so, senders are told, and every echoed message reaches all once, in order."""
    with RedisServer() as store:
        server = make_server(CHAT_BACKEND_URL=store.url, CHAT_RATE_LIMIT="off")
        sender = resuming(server, "frozen", "sender")
        readers = [resuming(server, "frozen", f"r{index}") for index in range(3)]
        everyone = [sender, *readers]
        sender.send("warm")
        for listener in everyone:
            listener.wait(lambda li: "warm" in li.texts(), 10, "the first message")

        pacer = Pacer(sender, count=500, interval=0.02)
        try:
            wait_for(lambda: len(pacer.sent) >= 20, 5, "20 messages sent before the freeze")
            store.process.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            wait_for(lambda: server.health()["status"] == "unavailable", FREEZE, "/healthz to report the freeze")
            wait_for(lambda: "unavailable" in sender.notices, FREEZE, "a sender to be told its message failed")
            # The outage itself lasts FREEZE seconds: that is the fault under test, not a wait for a condition.
            time.sleep(max(0.0, frozen + FREEZE - time.monotonic()))
        finally:
            store.process.send_signal(signal.SIGCONT)
        try:
            wait_for(lambda: server.health()["status"] == "ok", 10, "/healthz to recover after SIGCONT")
            thawed = len(pacer.sent)
            wait_for(lambda: len(pacer.sent) >= min(thawed + 25, pacer.count), 5, "sending to go on after the thaw")
        finally:
            sent = pacer.stop()
        assert sender.send("end")
        for listener in everyone:
            listener.wait(lambda li: "end" in li.texts(), 15, "the last message")

        acknowledged = {text for text in sender.texts() if text.startswith("sender-")}
        refused = sender.notices.count("unavailable")
        assert refused >= 1
        assert len(acknowledged) >= 40
        assert len(set(sent) - acknowledged) <= refused, "a message was neither delivered nor refused"
        timeline = readers[0].chats
        for listener in everyone:
            ids = [message_id for message_id, _ in listener.chats]
            texts = listener.texts()
            assert ids == sorted(set(ids)), f"{listener.name}: ids out of order or repeated"
            assert len(texts) == len(set(texts)), f"{listener.name}: a message arrived twice"
            assert acknowledged <= set(texts), f"{listener.name} misses {sorted(acknowledged - set(texts))[:5]}"
            assert set(listener.closes) <= {1006, 1013}, f"{listener.name} was closed with {listener.closes}"
            assert listener.chats == timeline, f"{listener.name} saw another timeline than {readers[0].name}"
        print(
            f"\nfrozen redis: {len(sent)} sent, {len(acknowledged)} acknowledged, {refused} refused with "
            f"'unavailable', {refused - len(set(sent) - acknowledged)} of them delivered after all, "
            f"{sum(li.reconnects for li in everyone)} resumes, back {time.monotonic() - frozen:.1f} s after SIGSTOP"
        )


def test_frozen_client_is_removed_with_1011_and_the_room_goes_on(make_server, resuming):
    """A SIGSTOPped client process is closed with 1011 (no pong after a ping); the others get every message."""
    server = make_server(CHAT_PING_INTERVAL=str(PING), CHAT_PING_TIMEOUT=str(PING), CHAT_RATE_LIMIT="off")
    sender = resuming(server, "icy", "sender", resume=False)
    reader = resuming(server, "icy", "reader", resume=False)
    child = subprocess.Popen(
        [PYTHON, "-c", FROZEN_CLIENT, f"{server.ws_url}?room=icy&name=frozen"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []

    def read_lines() -> None:
        for line in child.stdout:
            lines.append(line.strip())

    threading.Thread(target=read_lines, name="frozen-client-output", daemon=True).start()
    try:
        # Answering two pings shows the client is alive and kept while it runs.
        wait_for(lambda: lines.count("pong") >= 2, 10, "the client process to answer two pings")
        assert server.health()["connections"] == 3
        pacer = Pacer(sender, count=300, interval=0.02)
        try:
            wait_for(lambda: len(pacer.sent) >= 10, 5, "10 messages sent")
            child.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            wait_for(lambda: server.health()["connections"] == 2, 20, "the frozen client to be removed")
            removed = time.monotonic() - frozen
            reader.wait(
                lambda li: any(e.get("event") == "leave" and e["name"] == "frozen" for e in li.presence),
                5, "the frozen client's leave",
            )
            after = len(pacer.sent)
            wait_for(lambda: len(pacer.sent) >= after + 10, 5, "10 messages sent after the removal")
        finally:
            sent = pacer.stop()
        for listener in (sender, reader):
            listener.wait(lambda li: len(li.chats) >= len(sent), 10, "every message")
            assert listener.texts() == sent
            assert listener.closes == []
            assert [message_id for message_id, _ in listener.chats] == sorted({i for i, _ in listener.chats})

        child.send_signal(signal.SIGCONT)
        ended = wait_for(lambda: [line for line in lines if line.startswith(("close", "lost"))], 5, "the end")
        assert ended[0].split()[:2] == ["close", "1011"], f"the client process saw {lines[-5:]}"
        print(f"\nfrozen client: removed {removed:.2f} s after SIGSTOP; it then read {ended[0]!r}")
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait(5)
