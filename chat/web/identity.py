"""Who a client is: the host app's identify callback, a signed token (JWT, HS256), or a guest."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import jwt

from .. import protocol

UNAUTHENTICATED, FORBIDDEN = 4401, 4403
#: A query parameter in a request line: its name (however it is percent-encoded) and its value.
_PARAMETER = re.compile(r"([?&;])([^=&;\s\"']*)=([^&;\s\"']*)")

Identify = Callable[[], Any]


class Identity(NamedTuple):
    """A user id (None for a guest), the display name, and the rooms it may join (None: every room)."""

    id: str | None
    name: str
    rooms: frozenset[str] | None = None
    #: For an identity from a token: when the token was issued (its iat, 0 without one); None otherwise.
    issued: float | None = None

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


def resolve(token: str | None, identify: Identify, settings: Mapping[str, Any]) -> Identity | None:
    """Return the identity a signed token gives, else the one the host's callback gives, else None."""
    if token is not None:
        if settings["JWT_SECRET"] is None:
            raise Refusal(UNAUTHENTICATED, "tokens are not accepted here (CHAT_JWT_SECRET is not set)")
        return from_token(token, settings)
    return from_callback(identify())


def authorize(identity: Identity | None, room: str, anonymous: bool) -> None:
    """Raise Refusal unless identity (or a guest, when anonymous access is on) may join room."""
    if identity is None:
        if not anonymous:
            raise Refusal(UNAUTHENTICATED, "sign in to chat: this chat does not take guests")
        return
    if not identity.may_join(room):
        raise Refusal(FORBIDDEN, f"room {room} is not allowed for you")


def from_token(token: str, settings: Mapping[str, Any]) -> Identity:
    """Return the identity in a token signed with CHAT_JWT_SECRET, or raise Refusal.

    exp must be a number at most CHAT_JWT_MAX_AGE ahead; rooms, when present, a list; iss and aud must be
    CHAT_JWT_ISSUER and CHAT_JWT_AUDIENCE when those are set.
    """
    issuer, audience = settings["JWT_ISSUER"], settings["JWT_AUDIENCE"]
    required = ["sub", "exp", *(["iss"] if issuer else []), *(["aud"] if audience else [])]
    try:
        claims = jwt.decode(
            token, settings["JWT_SECRET"], algorithms=["HS256"], options={"require": required},
            issuer=issuer, audience=audience,
        )
    except jwt.ExpiredSignatureError:
        raise Refusal(UNAUTHENTICATED, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Refusal(UNAUTHENTICATED, f"invalid token: {exc}") from None
    exp, issued = claims["exp"], claims.get("iat", 0)
    if not _number(exp) or exp - time.time() > settings["JWT_MAX_AGE"]:
        raise Refusal(UNAUTHENTICATED, "invalid token: exp must be a number at most CHAT_JWT_MAX_AGE ahead")
    if not _number(issued):
        raise Refusal(UNAUTHENTICATED, "invalid token: iat must be a number")
    if "rooms" in claims and not isinstance(claims["rooms"], list):
        raise Refusal(UNAUTHENTICATED, "invalid token: rooms must be a list of room names")
    try:
        found = _identity(claims["sub"], claims.get("name", claims["sub"]), claims.get("rooms"))
    except (protocol.ProtocolError, TypeError) as exc:
        raise Refusal(UNAUTHENTICATED, f"invalid token: {exc}") from None
    return found._replace(issued=float(issued))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        if "=" in message:
            redacted = _PARAMETER.sub(_redact, message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def _redact(match: re.Match[str]) -> str:
    """Return a query parameter as logged: its value hidden when its name, decoded as Flask decodes it, is token."""
    if unquote_plus(match[2]).strip().lower() != "token":
        return match[0]
    return f"{match[1]}{match[2]}=[redacted]"


def redact_request_logs() -> None:
    """Keep tokens out of the request logs of the development server and of gunicorn."""
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, Redact) for existing in logger.filters):
            logger.addFilter(Redact())
