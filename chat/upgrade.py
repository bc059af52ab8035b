"""A WebSocket handshake the chat's workers may answer themselves, without Flask.

gunicorn, Flask, werkzeug, flask-sock, simple-websocket and h11 together spend
most of a join's CPU on the handshake alone, and in a reconnect storm every
client of a worker joins at once.  The chat's workers therefore answer an
upgrade to the chat's own path when nothing else would see it (see
``ws.native_route``) and the request is the plain, well-formed kind every
browser sends.  ``parse`` recognises exactly that kind and returns None for
anything else: another path or method, HTTP/1.0, a header it does not check
as strictly as gunicorn and h11 would, a repeated header, a body, a missing or
wrong WebSocket header.  Those go through Flask as before, so every error
answer (400, 403, 404, 426, 431) stays Flask's and gunicorn's.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler request.args uses)
from werkzeug.sansio.utils import host_is_trusted

#: What RFC 6455 appends to the client's key before hashing it.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The answer h11 and wsproto give an accepted handshake, byte for byte, less the accept token.
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "

#: gunicorn's own bounds on its request-line and header-count limits.
MOST_LINE, MOST_FIELDS = 8190, 32768

#: Printable ASCII, tabs and line ends: anything else is left to gunicorn's checks.
PLAIN = re.compile(rb"[\t\r\n\x20-\x7e]*")
#: A header value of printable ASCII and tabs.
VALUE = re.compile(r"[\t\x20-\x7e]*")
#: An HTTP header name without underscores (gunicorn treats those specially).
NAME = re.compile(r"[!#$%&'*+\-.^`|~0-9A-Za-z]+")
#: An origin-form request target with no fragment.
TARGET = re.compile(r"/[^\s#]*")
#: Headers that would make the request more than a handshake, or that gunicorn reads specially.  (An offer of
#: permessage-deflate is ignored, as the Flask route ignores it: native_route takes no chat that compresses.)
REFUSED = frozenset({"content-length", "transfer-encoding", "expect", "http2-settings"})


@dataclass(slots=True)
class Limits:
    """gunicorn's request limits: a request past any of them is left to gunicorn to refuse."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @classmethod
    def of(cls, cfg: Any) -> Limits:
        """Return the limits gunicorn applies for a configuration, read as gunicorn reads them."""
        line = cfg.limit_request_line
        line = MOST_LINE if line < 0 or line >= MOST_LINE else line or 1 << 20
        fields = cfg.limit_request_fields
        fields = MOST_FIELDS if fields <= 0 or fields > MOST_FIELDS else fields
        size = cfg.limit_request_field_size
        return cls(line, fields, size if size > 0 else MOST_LINE)


@dataclass(slots=True)
class Upgrade:
    """A plain WebSocket handshake: where it asks to go, its headers (by lower-case name) and its peer."""

    path: str
    query: str
    headers: dict[str, str]
    peer: str
    scheme: str

    @property
    def args(self) -> dict[str, str]:
        """Return the query's parameters, the first value of each, decoded as Flask's request.args would."""
        found: dict[str, str] = {}
        for name, value in parse_qsl(self.query, keep_blank_values=True, errors="werkzeug.url_quote"):
            found.setdefault(name, value)
        return found

    def accept(self) -> bytes:
        """Return the 101 answer to this handshake."""
        key = self.headers["sec-websocket-key"].encode()
        return SWITCHING + base64.b64encode(hashlib.sha1(key + GUID).digest()) + b"\r\n\r\n"


def parse(head: bytes, peer: str, path: str, limits: Limits, secure: dict[str, str]) -> Upgrade | None:
    """Return the handshake a complete request head makes to path, or None for anything else.

    secure is what gunicorn's secure_scheme_headers let this peer say about
    the scheme (nothing for a peer outside forwarded_allow_ips).
    """
    if not head.startswith(b"GET ") or not head.endswith(b"\r\n\r\n") or not PLAIN.fullmatch(head):
        return None
    text = head[:-4].decode("ascii")
    if text.count("\n") != text.count("\r\n") or text.count("\r") != text.count("\r\n"):
        return None
    lines = text.split("\r\n")
    request = lines[0]
    parts = request.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or len(request) + 2 > limits.line or len(lines) - 1 > limits.fields:
        return None
    target = parts[1]
    if not TARGET.fullmatch(target):
        return None
    where, _, query = target.partition("?")
    if where != path:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or len(line) + 2 > limits.field_size or not NAME.fullmatch(name):
            return None
        name = name.lower()
        if name in headers:
            return None
        headers[name] = value.strip(" \t")
    # gunicorn looks each header up by its upper-case name: a key in another case never matches.
    schemes = {"https" if headers[name.lower()] == value else "http" for name, value in secure.items()
               if name.isupper() and name.lower() in headers}
    if len(schemes) > 1:
        return None
    return checked(Upgrade(where, query, headers, peer, schemes.pop() if schemes else "http"))


def from_request(req: Any, peer: str, path: str) -> Upgrade | None:
    """Return the handshake a request gunicorn parsed makes to path, or None for anything else."""
    if req.method != "GET" or req.version != (1, 1) or req.path != path or req.fragment:
        return None
    headers: dict[str, str] = {}
    for name, value in req.headers:
        name = name.lower()
        if name in headers or "_" in name or not VALUE.fullmatch(value):
            return None
        headers[name] = value
    return checked(Upgrade(path, req.query, headers, peer, req.scheme))


def checked(up: Upgrade) -> Upgrade | None:
    """Return up if it is a complete WebSocket handshake with nothing wsproto or werkzeug would read otherwise."""
    headers = up.headers
    if headers.get("upgrade", "").lower() != "websocket" or headers.get("sec-websocket-version") != "13":
        return None
    if not headers.get("sec-websocket-key") or not headers.get("host") or not REFUSED.isdisjoint(headers):
        return None
    if not any(token.strip(" \t") == "upgrade" for token in headers.get("connection", "").lower().split(",")):
        return None
    return up if plain_host(headers["host"], up.scheme) else None


def plain_host(host: str, scheme: str) -> bool:
    """Tell whether werkzeug takes host as it is (its characters, and IDNA for routing) and wsproto decodes it."""
    named = host.removesuffix(":443" if scheme == "https" else ":80")
    if not host_is_trusted(named):
        return False
    try:
        named.lower().encode("idna")
        host.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True
