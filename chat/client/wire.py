"""The client's socket: simple-websocket's client with a deadline on its handshake, and the codes it ends on."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import simple_websocket

#: Close codes retrying cannot help: binary frame, policy, too big, no identity, room not allowed.
NO_RETRY = frozenset({1003, 1008, 1009, 4401, 4403})


class Closed(ConnectionError):
    """The server closed the connection for good (a code the client does not retry), or close() was called."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code, self.reason = code, reason


class Socket(simple_websocket.Client):
    """simple-websocket's client, whose handshake gives up after a while (a server shutting down may never answer)."""

    def __init__(self, url: str, *, handshake_timeout: float, **options: Any) -> None:
        self.handshake_timeout = handshake_timeout
        super().__init__(url, **options)

    def handshake(self) -> None:
        """Make the opening handshake within handshake_timeout seconds."""
        self.sock.settimeout(self.handshake_timeout)
        try:
            super().handshake()
        finally:
            self.sock.settimeout(None)


def close_quietly(ws: simple_websocket.Client) -> None:
    """Close ws, which may be closed already."""
    try:
        ws.close()
    except (simple_websocket.ConnectionClosed, OSError):
        pass


def get_json(url: str, query: dict[str, Any], headers: dict[str, str], timeout: float) -> Any:
    """GET url with query and headers and return its JSON body."""
    address = url + ("?" + urllib.parse.urlencode({key: str(value) for key, value in query.items()}) if query else "")
    request = urllib.request.Request(address, headers={"Accept": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
