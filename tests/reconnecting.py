"""The tests' reconnecting client: reads on its own thread and resumes with since=<last id seen>, as the page does."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable

import websocket
from wsclient import close_code


class Resuming:
    """A client that reads on its own thread (websocket-client answers pings), keeps every event, and on a close
    reconnects with since=<the last id it saw> (unless resume is off).

    url is the socket's URL without a query; room and name go in the query. chats holds (id, text) pairs,
    notices the codes of state-4 frames (and notice_texts their messages), gaps the gap events, presence every
    other state-3 event, closes the close codes seen (1006 for a connection lost without one).
    """

    def __init__(self, url: str, room: str, name: str, resume: bool = True, query: str = "") -> None:
        self.url, self.room, self.name, self.resume, self.query = url, room, name, resume, query
        self.chats: list[tuple[int, str]] = []
        self.notices: list[str] = []
        self.notice_texts: list[str] = []
        self.presence: list[dict] = []
        self.gaps: list[dict] = []
        self.closes: list[int] = []
        self.reconnects = 0
        self.connected = False
        self.welcomed = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self.ws = self._connect()
        self._thread = threading.Thread(target=self._run, name=f"resuming-{name}", daemon=True)
        self._thread.start()

    @property
    def last_id(self) -> int | None:
        with self._changed:
            return self.chats[-1][0] if self.chats else None

    def texts(self) -> list[str]:
        with self._changed:
            return [text for _, text in self.chats]

    def _connect(self) -> websocket.WebSocket:
        since = self.last_id
        query = f"room={self.room}&name={self.name}" + (f"&since={since}" if since is not None else "")
        ws = websocket.create_connection(f"{self.url}?{query}{self.query}", timeout=5)
        ws.settimeout(0.5)
        with self._changed:
            self.connected = True
        return ws

    def send(self, text: str) -> bool:
        """Send text; False when the connection is down."""
        try:
            self.ws.send(text)
        except (OSError, websocket.WebSocketException):
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                opcode, data = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                opcode, data = websocket.ABNF.OPCODE_CLOSE, b""
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                if self._stop.is_set():
                    return
                with self._changed:
                    self.connected = False
                    self.closes.append(close_code(data) if data else 1006)
                    self._changed.notify_all()
                if not self.resume or not self._reconnect():
                    return
                continue
            self._keep(json.loads(data))

    def _keep(self, event: dict) -> None:
        with self._changed:
            if event["state"] == 2:
                self.chats.append((int(event["id"]), event["message"]))
            elif event["state"] == 3 and event.get("event") == "gap":
                self.gaps.append(event)
            elif event["state"] == 3:
                self.presence.append(event)
                self.welcomed = self.welcomed or event.get("event") == "welcome"
            elif event["state"] == 4:
                self.notices.append(event["code"])
                self.notice_texts.append(event["message"])
            self._changed.notify_all()

    def _reconnect(self) -> bool:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=0.1)
        delay = 0.05
        while not self._stop.wait(delay):
            try:
                self.ws = self._connect()
            except (OSError, websocket.WebSocketException):
                delay = min(delay * 2, 0.5)
                continue
            self.reconnects += 1
            return True
        return False

    def wait(self, predicate: Callable[[Resuming], bool], timeout: float, what: str = "a condition") -> None:
        """Wait until predicate holds for this client, or fail (timeout bounds a hang)."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"{self.name}: timed out waiting for {what}; last chats {self.chats[-3:]}")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=0.5)
        self._thread.join(5)


class Pacer:
    """Send numbered messages from a client at a steady pace on a thread, until told to stop or count is reached."""

    def __init__(self, sender: Resuming, count: int, interval: float) -> None:
        self.sender, self.count, self.interval = sender, count, interval
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pacer-{sender.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        for index in range(self.count):
            text = f"{self.sender.name}-{index:04}"
            if self.sender.send(text):
                self.sent.append(text)
            if self._stop.wait(max(0.0, began + (index + 1) * self.interval - time.monotonic())):
                return

    def join(self, timeout: float = 60) -> list[str]:
        """Wait until every message went (or the time is up) and return what was sent."""
        self._thread.join(timeout)
        return self.stop()

    def stop(self) -> list[str]:
        """Stop sending and return what was sent."""
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the sender did not stop"
        return list(self.sent)
