"""A connection to the chat that comes back by itself: the socket, its reader thread and the outbox."""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Self

import simple_websocket

from .. import protocol
from .outbox import Entry, Outbox
from .room import Room
from .wire import NO_RETRY, Closed, Socket, close_quietly, get_json

BASE_DELAY, MAX_DELAY, STABLE_AFTER = 0.5, 30.0, 10.0
MIN_SILENCE = 2.0
#: How often the reader looks up from the socket (for resends due and silence).
TICK = 0.1
_END = object()


class Client:
    """A chat client: ``with Client("ws://host/ws", room="lobby", name="bot") as c: c.send("hi")``."""

    def __init__(
        self, url: str, room: str | None = None, *, name: str | None = None, token: str | None = None,
        dm: str | None = None, since: int | str | None = None, version: int = 3,
        headers: dict[str, str] | None = None, timeout: float = 10.0,
    ) -> None:
        self.url = url.replace("http", "ws", 1) if url.startswith("http") else url
        self.api = self.url.replace("ws", "http", 1).removesuffix("/ws") + "/api"
        if version not in (2, 3):
            raise ValueError("the client speaks protocol v2 or v3 (v1 has no client ids)")
        self.dm, self.name, self.token, self.version = dm, name, token, version
        self.headers, self.timeout = dict(headers or {}), timeout
        self._room = Room(None if dm else protocol.room(room), None if since is None else int(since))
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._outbox = Outbox()
        self._frames: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._welcomed = threading.Event()
        self._ended: Closed | None = None
        self._ws: Socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self._thread is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def room(self) -> str | None:
        """Return the room (a DM's is known from its welcome)."""
        return self._room.name

    @property
    def welcome(self) -> dict[str, Any] | None:
        """Return the last welcome frame."""
        return self._room.welcome

    @property
    def you(self) -> str | None:
        """Return the name the server knows this client by."""
        welcome = self._room.welcome
        return welcome.get("you") if welcome else None

    @property
    def users(self) -> list[str]:
        """Return who is online in the room (at most the server's list limit)."""
        with self._lock:
            return list(self._room.users)

    @property
    def online(self) -> int:
        """Return how many are online in the room."""
        return self._room.online

    @property
    def last_id(self) -> int | None:
        """Return the id of the last message or change seen: where the next connection resumes."""
        return self._room.last_id

    def connect(self, timeout: float | None = None) -> Self:
        """Start the connection and wait for the server's welcome; raise Closed if it refuses."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"chat-client-{self.room or self.dm}", daemon=True)
            self._thread.start()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._welcomed.wait(min(TICK, max(0.0, deadline - time.monotonic()))):
            if self._ended is not None:
                raise self._ended
            if time.monotonic() >= deadline:
                raise TimeoutError("no welcome from the chat server")
        return self

    def close(self) -> None:
        """Close the connection and stop its thread; what waits for an ack fails with Closed."""
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            close_quietly(ws)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.timeout + 5)
        self._end(Closed(1000, "closed by the client"))

    def send(self, text: str, *, reply_to: str | None = None, timeout: float | None = None) -> str:
        """Send a message once (resent with its cid across reconnects) and return its id once acknowledged."""
        return self.queue(text, reply_to=reply_to).result(self.timeout if timeout is None else timeout)

    def queue(self, text: str, *, reply_to: str | None = None) -> Entry:
        """Queue a message without waiting: entry.result(timeout) gives its id once acknowledged."""
        return self._queue({"text": text} if reply_to is None else {"text": text, "reply_to": str(reply_to)})

    def edit(self, message_id: str, text: str, *, timeout: float | None = None) -> str:
        """Edit one of your messages; return the change's id."""
        return self._call({"type": "edit", "id": str(message_id), "text": text}, timeout)

    def delete(self, message_id: str, *, timeout: float | None = None) -> str:
        """Delete one of your messages; return the change's id."""
        return self._call({"type": "delete", "id": str(message_id)}, timeout)

    def react(self, message_id: str, emoji: str, *, timeout: float | None = None) -> str:
        """React to a message (again to take the reaction back); return the change's id."""
        return self._call({"type": "react", "id": str(message_id), "emoji": emoji}, timeout)

    def read(self, message_id: str) -> bool:
        """Tell the room you read up to message_id (best effort: False when not connected)."""
        return self._now({"type": "read", "id": str(message_id)})

    def typing(self) -> bool:
        """Tell the room you are typing (best effort; the server passes on one every 2 s)."""
        return self._now({"type": "typing"})

    def frames(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield every frame but heartbeats as it arrives; stop after timeout s without one, or once closed."""
        while True:
            try:
                frame = self._frames.get(timeout=timeout)
            except queue.Empty:
                return
            if frame is _END:
                self._frames.put(_END)
                return
            yield frame

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None) -> dict[str, Any]:
        """Return the first frame from now that matches predicate, reading past the others."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for frame in self.frames(timeout=max(0.0, deadline - time.monotonic())):
            if predicate(frame):
                return frame
            if time.monotonic() > deadline:
                break
        raise TimeoutError("no matching frame")

    def history(self, *, before: str | None = None, since: str | None = None, limit: int | None = None) -> dict:
        """Return a page of the room's history from the HTTP API: {"messages": [...], "more": bool}."""
        if self.room is None:
            raise ValueError("a DM's room is known from its welcome: connect first")
        query = {k: v for k, v in (("before", before), ("since", since), ("limit", limit)) if v is not None}
        headers = {**self.headers, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        return get_json(f"{self.api}/rooms/{self.room}/messages", query, headers, self.timeout)

    def _address(self) -> str:
        place = {"dm": self.dm} if self.dm else {"room": self._room.name or protocol.DEFAULT_ROOM}
        who = {"token": self.token} if self.token else {"key": self._outbox.key, "name": self.name or ""}
        since = {} if self._room.last_id is None else {"since": str(self._room.last_id)}
        return self.url + "?" + urllib.parse.urlencode({"v": str(self.version), **place, **who, **since})

    def _queue(self, body: dict[str, str]) -> Entry:
        if self.version < 3 and body.keys() != {"text"}:
            raise ValueError(f"replies and changes need protocol v3, not v{self.version}")
        entry = self._outbox.add(body)
        self._flush()
        return entry

    def _call(self, body: dict[str, str], timeout: float | None) -> str:
        return self._queue(body).result(self.timeout if timeout is None else timeout)

    def _now(self, body: dict[str, str]) -> bool:
        if self.version < 3:
            raise ValueError(f"{body['type']} needs protocol v3, not v{self.version}")
        with self._lock:
            ws = self._ws if self._welcomed.is_set() else None
        return ws is not None and self._write(ws, body)

    def _write(self, ws: Socket, body: dict[str, str]) -> bool:
        try:
            with self._write_lock:
                ws.send(json.dumps(body, ensure_ascii=False))
        except (simple_websocket.ConnectionClosed, OSError):
            # The reader sees the connection go, connects again and resends what waits.
            return False
        return True

    def _flush(self) -> None:
        with self._lock:
            ws = self._ws if self._welcomed.is_set() else None
        if ws is None:
            return
        for entry in self._outbox.due():
            self._write(ws, entry.frame())

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ws = Socket(self._address(), headers=self.headers, handshake_timeout=self.timeout)
            except (OSError, ConnectionError):
                code, reason = 1006, "could not connect"
            else:
                with self._lock:
                    self._ws = ws
                code, reason = self._serve(ws)
                with self._lock:
                    self._ws = None
                    self._welcomed.clear()
                self._outbox.unsend()
                if code in NO_RETRY:
                    self._end(Closed(code, reason))
                    return
            if time.monotonic() - started > STABLE_AFTER:
                attempt = 0
            self._stop.wait(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
            attempt += 1

    def _serve(self, ws: Socket) -> tuple[int, str]:
        heard = time.monotonic()
        beat: float | None = None
        gap = 0.0
        while not self._stop.is_set():
            try:
                data = ws.receive(timeout=TICK)
            except simple_websocket.ConnectionClosed as closed:
                return int(closed.reason), closed.message or ""
            now = time.monotonic()
            self._flush()
            if data is None:
                # Heartbeats stopped (or the first frame never came): the connection is most likely dead.
                limit = max(3 * gap, MIN_SILENCE) if gap else self.timeout
                if now - heard > limit and (gap or not self._welcomed.is_set()):
                    close_quietly(ws)
                    return 1006, "the server went silent"
                continue
            heard = now
            try:
                frame = json.loads(data)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            if frame.get("state") == 1:
                # The longest gap seen, so that two heartbeats delivered together after a stall do not
                # make the watchdog impatient.
                gap = gap if beat is None else max(gap, now - beat)
                beat = now
                continue
            self._take(frame)
        # close() may have come while this socket was still being opened.
        close_quietly(ws)
        return 1000, "closed by the client"

    def _take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("state")
        if kind in (2, 6):
            with self._lock:
                fresh = self._room.advance(frame)
            if not fresh:
                return
        elif kind == 3:
            with self._lock:
                self._room.presence(frame)
            if frame.get("event") == "welcome":
                self._welcomed.set()
                self._flush()
        elif kind == 4 and isinstance(frame.get("cid"), str):
            self._outbox.refuse(frame["cid"], str(frame.get("code", "")), str(frame.get("message", "")))
        elif kind == 5:
            self._outbox.ack(str(frame.get("ack")), str(frame.get("id")))
        self._frames.put(frame)

    def _end(self, closed: Closed) -> None:
        with self._lock:
            if self._ended is not None:
                return
            self._ended = closed
        self._outbox.end(closed)
        self._frames.put(_END)
