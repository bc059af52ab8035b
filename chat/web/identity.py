"""Who a client is: the host app's identify callback, a signed token (JWT, HS256), or a guest."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jwt

from .. import protocol

UNAUTHENTICATED, FORBIDDEN = 4401, 4403
_TOKEN = re.compile(r"(token=)[^&\s\"']+")

Identify = Callable[[], Any]


class Identity(NamedTuple):
    """A user id (None for a guest), the display name, and the rooms it may join (None: every room)."""

    id: str | None
    name: str
    rooms: frozenset[str] | None = None

    def may_join(self, room: str) -> bool:
        """Tell whether this identity may join room."""
        return self.rooms is None or room in self.rooms


class Refusal(Exception):
    """An identity refused: a WebSocket close code (4401, 4403) and its reason; the HTTP status is code - 4000."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason

    @property
    def status(self) -> int:
        """Return the HTTP status that goes with the close code."""
        return self.code - 4000


def resolve(token: str | None, identify: Identify, secret: str | None) -> Identity | None:
    """Return the identity a signed token gives, else the one the host's callback gives, else None."""
    if token is not None:
        if secret is None:
            raise Refusal(UNAUTHENTICATED, "tokens are not accepted here (CHAT_JWT_SECRET is not set)")
        return from_token(token, secret)
    return from_callback(identify())


def authorize(identity: Identity | None, room: str, anonymous: bool) -> None:
    """Raise Refusal unless identity (or a guest, when anonymous access is on) may join room."""
    if identity is None:
        if not anonymous:
            raise Refusal(UNAUTHENTICATED, "sign in to chat: this chat does not take guests")
        return
    if not identity.may_join(room):
        raise Refusal(FORBIDDEN, f"room {room} is not allowed for you")


def from_token(token: str, secret: str) -> Identity:
    """Return the identity in a token signed with secret, or raise Refusal."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise Refusal(UNAUTHENTICATED, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Refusal(UNAUTHENTICATED, f"invalid token: {exc}") from None
    try:
        return _identity(claims["sub"], claims.get("name", claims["sub"]), claims.get("rooms"))
    except (protocol.ProtocolError, TypeError) as exc:
        raise Refusal(UNAUTHENTICATED, f"invalid token: {exc}") from None


def from_callback(result: Any) -> Identity | None:
    """Return the identity an identify callback returned: None, (user_id, name) or (user_id, name, rooms)."""
    if result is None:
        return None
    if isinstance(result, Identity):
        return result
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise TypeError(f"identify must return None, (user_id, name) or (user_id, name, rooms), not {result!r}")
    return _identity(*result)


def _identity(user: Any, name: Any, rooms: Iterable[str] | None = None) -> Identity:
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if not isinstance(user, str) or not user:
        raise TypeError("the user id must be a non-empty string")
    if not isinstance(name, str) or protocol.is_blank(name):
        raise TypeError("the name must be a non-empty string")
    if rooms is None:
        return Identity(user, protocol.name(name))
    if isinstance(rooms, str) or not all(isinstance(room, str) for room in rooms):
        raise TypeError("rooms must be a list of room names")
    return Identity(user, protocol.name(name), frozenset(rooms))


class Redact(logging.Filter):
    """Replace the value of every token= in a log line, so request logs never hold a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN.sub(r"\1[redacted]", message), None
        return True


def redact_request_logs() -> None:
    """Keep tokens out of the request logs of the development server and of gunicorn."""
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, Redact) for existing in logger.filters):
            logger.addFilter(Redact())
