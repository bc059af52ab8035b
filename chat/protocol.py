"""The wire protocol (v1; v2's client frames and acks; v3's typed frames): check client input, build events, no I/O."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from json import dumps, loads
from json.encoder import encode_basestring as _quote

from .text import hidden, nfkc

HEARTBEAT = b'{"state":1,"message":"\xe5\xbf\x83\xe8\xb7\xb3"}'
ROOM_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
DEFAULT_ROOM = "lobby"
MAX_NAME_LENGTH = 32
#: A v2 client id: 1-64 printable ASCII characters, no space.
CID_PATTERN = re.compile(r"[!-~]{1,64}")


class ProtocolError(ValueError):
    """Client input that the protocol does not accept."""


def room(text: str | None) -> str:
    """Return the room named by text, or raise ProtocolError."""
    if text is None or text == "":
        return DEFAULT_ROOM
    if not ROOM_PATTERN.fullmatch(text):
        raise ProtocolError("room must be 1-32 of a-z 0-9 _ -")
    return text


def name(text: str | None) -> str:
    """Return the display name given by text (NFKC-normalised), or a random guest name."""
    trimmed = nfkc(text or "").strip()
    if not trimmed:
        return "guest-" + secrets.token_hex(2)
    if len(trimmed) > MAX_NAME_LENGTH:
        raise ProtocolError(f"name must be at most {MAX_NAME_LENGTH} characters")
    if not trimmed.isprintable() or hidden(trimmed):
        raise ProtocolError("name must not contain control or invisible characters, or stacked combining marks")
    return trimmed


def since(text: str | None) -> int | None:
    """Return the message id a client last saw, or None when it gave none."""
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ProtocolError("since must be a message id")
    return int(text)


def version(text: str | None) -> int:
    """Return the protocol version a client asked for with v= (1 when it gave none)."""
    if text is None or text == "":
        return 1
    if text not in ("1", "2", "3"):
        raise ProtocolError("v must be 1, 2 or 3")
    return int(text)


#: What a v3 frame of each type holds beyond "type": the keys it needs, and those it may add.
FRAME_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "message": (frozenset({"text"}), frozenset({"cid", "reply_to"})),
    "read": (frozenset({"id"}), frozenset({"cid"})),
    "typing": (frozenset(), frozenset({"cid"})),
    "edit": (frozenset({"id", "text"}), frozenset({"cid"})),
    "delete": (frozenset({"id"}), frozenset({"cid"})),
    "react": (frozenset({"id", "emoji"}), frozenset({"cid"})),
}
MAX_EMOJI = 16


@dataclass(frozen=True, slots=True)
class Frame:
    """One client frame: a message (type "message") or a v3 action on the room or on one of its messages."""

    type: str = "message"
    text: str = ""
    cid: str | None = None
    #: The message a read, edit, delete or react is about.
    id: int | None = None
    emoji: str | None = None
    reply_to: int | None = None


class Invalid(ProtocolError):
    """A v3 frame of unknown type or bad shape; cid is the client id it carried, if one could be read."""

    def __init__(self, reason: str, cid: str | None = None) -> None:
        super().__init__(reason)
        self.cid = cid


def client_frame(text: str, version: int) -> Frame:
    """Return the frame a client of version sent as text; raise Invalid for a v3 JSON object of bad shape.

    v1 frames are messages as typed; v2 reads {"text", "cid"} and takes
    anything else as typed; v3 takes text that is not a JSON object as typed
    too, and reads an object by its "type" (default "message").
    """
    if version < 2:
        return Frame(text=text)
    if version == 2:
        message, cid = client_message(text)
        return Frame(text=message, cid=cid)
    if not text.startswith("{"):
        return Frame(text=text)
    try:
        body = loads(text)
    except (ValueError, RecursionError):
        return Frame(text=text)
    if type(body) is not dict:
        return Frame(text=text)
    cid = body.get("cid")
    cid = cid if type(cid) is str and CID_PATTERN.fullmatch(cid) else None
    kind = body.get("type", "message")
    keys = FRAME_KEYS.get(kind) if type(kind) is str else None
    if keys is None:
        raise Invalid("unknown frame type", cid)
    given = body.keys() - {"type"}
    needed, optional = keys
    if not needed <= given or not given <= needed | optional:
        raise Invalid(f"a {kind} frame holds {', '.join(sorted(needed)) or 'nothing else'}", cid)
    if "cid" in body and cid is None:
        raise Invalid("cid must be 1-64 printable ASCII characters, no space")
    message = body.get("text", "")
    if type(message) is not str:
        raise Invalid("text must be a string", cid)
    emoji = body.get("emoji")
    if emoji is not None and not (type(emoji) is str and 1 <= len(emoji) <= MAX_EMOJI and emoji.isprintable()):
        raise Invalid(f"emoji must be 1-{MAX_EMOJI} characters of text", cid)
    return Frame(kind, message, cid, _message_id(body.get("id"), cid), emoji, _message_id(body.get("reply_to"), cid))


def _message_id(value: object, cid: str | None) -> int | None:
    if value is None:
        return None
    try:
        return message_id(value)
    except ProtocolError:
        raise Invalid("a message id is a string of digits", cid) from None


def user(text: str | None) -> str:
    """Return the user id given by text (1-64 printable characters), or raise ProtocolError."""
    if not isinstance(text, str) or not text or len(text) > 64 or not text.isprintable():
        raise ProtocolError("a user id is 1-64 printable characters")
    return text


def message_id(text: object) -> int:
    """Return the message id given by text (a string of digits), or raise ProtocolError."""
    if type(text) is int and 0 <= text < 2**63:
        return text
    if type(text) is not str or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ProtocolError("a message id is a string of digits")
    return int(text)


def client_message(frame: str) -> tuple[str, str | None]:
    """Return (text, cid) of a v2 frame that is the JSON object {"text": ..., "cid": ...}, else (frame, None)."""
    if not frame.startswith("{"):
        return frame, None
    try:
        body = loads(frame)
    except (ValueError, RecursionError):
        return frame, None
    if type(body) is not dict or body.keys() != {"text", "cid"}:
        return frame, None
    text, cid = body["text"], body["cid"]
    if type(text) is not str or type(cid) is not str or not CID_PATTERN.fullmatch(cid):
        return frame, None
    return text, cid


def is_blank(text: str) -> bool:
    """Tell whether a chat message has nothing to show."""
    return not text or text.isspace()


def chat(message_id: int, room_name: str, sender: str, text: str, ts: int, user: str | None = None) -> bytes:
    """Build the state-2 frame payload of a chat message; an identified sender's id goes in user."""
    if user is None:
        return (
            '{"state":2,"message":%s,"id":"%d","room":"%s","name":%s,"ts":%d}'
            % (_quote(text), message_id, room_name, _quote(sender), ts)
        ).encode()
    return (
        '{"state":2,"message":%s,"id":"%d","room":"%s","name":%s,"ts":%d,"user":%s}'
        % (_quote(text), message_id, room_name, _quote(sender), ts, _quote(user))
    ).encode()


class Names(tuple[str, ...]):
    """The names a welcome lists, in order, encoded once for every welcome that lists them.

    A backend that keeps a room's list until it changes keeps it as Names.
    """

    @cached_property
    def encoded(self) -> bytes:
        """Return the names as a JSON array."""
        return _encode(list(self))


def presence(
    event: str,
    room_name: str,
    who: str,
    online: int,
    users: Sequence[str] | None = None,
) -> bytes:
    """Build a state-3 join, leave or welcome event (a welcome lists users)."""
    quoted = _quote(who)
    head = '{"state":3,"message":%s,"event":%s,"room":%s,"name":%s,"online":%d' % (
        _quote(_presence_text(event, who, online)), _quote(event), _quote(room_name), quoted, online,
    )
    if event != "welcome":
        return (head + "}").encode()
    listed = users.encoded if isinstance(users, Names) else _encode(list(users or ()))
    return b"".join(((head + ',"you":%s,"users":' % quoted).encode(), listed, b"}"))


def digest(room_name: str, joins: list[str], leaves: list[str], joined: int, left: int, online: int) -> bytes:
    """Build the state-3 presence event of protocol v2: who joined and left since the last one, and the count."""
    parts = [f"{count} {verb}" for count, verb in ((joined, "joined"), (left, "left")) if count]
    return _encode({
        "state": 3,
        "message": f"{', '.join(parts) or 'no change'}: {online} online",
        "event": "presence",
        "room": room_name,
        "joins": joins,
        "leaves": leaves,
        "joined": joined,
        "left": left,
        "online": online,
    })


def _presence_text(event: str, who: str, online: int) -> str:
    if event == "join":
        return f"{who} joined"
    if event == "leave":
        return f"{who} left"
    return f"welcome, {who}: {online} online"


def gap(room_name: str, missed: int | None) -> bytes:
    """Build the state-3 event that tells a resuming client it missed messages."""
    text = "some messages were missed" if missed is None else f"{missed} messages were missed"
    return _encode(
        {"state": 3, "message": text, "event": "gap", "room": room_name, "missed": missed}
    )


def notice(code: str, text: str, cid: str | None = None) -> bytes:
    """Build a state-4 notice for one client; cid names the v2 message it is about."""
    body: dict[str, object] = {"state": 4, "code": code, "message": text}
    if cid is not None:
        body["cid"] = cid
    return _encode(body)


def welcome_v3(welcome: bytes, read: int | None, unread: int, private: bool, dm: str | None) -> bytes:
    """Add to a welcome what a v3 client is told: its read position, unread count, and the room's kind."""
    extra = ',"read":%s,"unread":%d,"private":%s,"dm":%s}' % (
        "null" if read is None else '"%d"' % read, unread, "true" if private else "false",
        "null" if dm is None else _quote(dm),
    )
    return welcome[:-1] + extra.encode()


def read(room_name: str, user_id: str, who: str, message_id: int) -> bytes:
    """Build the state-3 receipt that user_id (named who) has read room_name up to message_id."""
    return ('{"state":3,"message":"","event":"read","room":"%s","user":%s,"name":%s,"id":"%d"}'
            % (room_name, _quote(user_id), _quote(who), message_id)).encode()


def typing(room_name: str, user_id: str, who: str) -> bytes:
    """Build the state-3 event that user_id (named who) is typing in room_name."""
    return ('{"state":3,"message":"","event":"typing","room":"%s","user":%s,"name":%s}'
            % (room_name, _quote(user_id), _quote(who))).encode()


def ack(cid: str, message_id: int) -> bytes:
    """Build the state-5 frame that tells a v2 sender its message cid is stored, under message_id."""
    return ('{"state":5,"message":"","ack":%s,"id":"%d"}' % (_quote(cid), message_id)).encode()


def _encode(body: object) -> bytes:
    return dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
