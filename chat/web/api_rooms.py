"""The HTTP API of conversations: private rooms and their members, DMs, bans, mutes, a user's rooms, read positions.

Mounted beside the API's blueprint, under the same prefix and with its error
answers.  Changes need the API key; a user's own rooms and read position
need the session's or a bearer JWT's identity.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify
from werkzeug.exceptions import HTTPException

from .. import protocol
from ..backends import Unavailable
from ..rooms.conversations import NotFound
from . import api, identity
from .api import _bearer, _require_key
from .mount import Mount, state

bp = Blueprint("chat_api_rooms", __name__)
bp.register_error_handler(HTTPException, api.json_error)
bp.register_error_handler(protocol.ProtocolError, api.invalid)
bp.register_error_handler(Unavailable, api.unavailable)

#: What each path segment changes: a room's members, bans or mutes.
KINDS = {"members": "member", "bans": "ban", "mutes": "mute"}


@bp.get("/rooms/<room>")
def get_room(room: str) -> Response:
    """Return {"room", "private", "members", "online"} for the holder of CHAT_API_KEY."""
    chat = state()
    _require_key(chat)
    return jsonify(chat.room(protocol.room(room)))


@bp.put("/rooms/<room>")
def put_room(room: str) -> Response:
    """Create or update room from {"private": bool, "members": [user ids]} (members replaced when given)."""
    chat = state()
    _require_key(chat)
    room = protocol.room(room)
    body = _body()
    private = body.get("private", False)
    members = body.get("members")
    if type(private) is not bool:
        abort(400, description='"private" must be true or false')
    if members is not None and (type(members) is not list or not all(type(user) is str for user in members)):
        abort(400, description='"members" must be a list of user ids')
    return jsonify(chat.put_room(room, private, members))


@bp.put("/rooms/<room>/<any(members, bans, mutes):kind>/<user>")
def put_user(room: str, kind: str, user: str) -> Response:
    """Add user to room's members, bans or mutes (a ban closes the user's sockets in room)."""
    return _change(room, kind, user, True)


@bp.delete("/rooms/<room>/<any(members, bans, mutes):kind>/<user>")
def delete_user(room: str, kind: str, user: str) -> Response:
    """Take user out of room's members (closing its sockets in a private room), bans or mutes."""
    return _change(room, kind, user, False)


def _change(room: str, kind: str, user: str, on: bool) -> Response:
    chat = state()
    _require_key(chat)
    room, user = protocol.room(room), protocol.user(user)
    chat.change(room, user, KINDS[kind], on)
    return jsonify(room=room, user=user, **{kind: on})


@bp.post("/dms")
def post_dm() -> Response:
    """Return {"room"} of the DM between {"users": [u1, u2]}, creating it the first time."""
    chat = state()
    _require_key(chat)
    users = _body().get("users")
    if type(users) is not list or len(users) != 2 or not all(type(user) is str for user in users):
        abort(400, description='"users" must be a list of two user ids')
    return jsonify(room=chat.dm(*users))


@bp.get("/users/<user>/rooms")
def get_user_rooms(user: str) -> Response:
    """Return {"rooms": [...]} of user, newest activity first, for the holder of CHAT_API_KEY."""
    chat = state()
    _require_key(chat)
    return jsonify(rooms=chat.rooms_of(protocol.user(user)))


@bp.get("/me/rooms")
def get_my_rooms() -> Response:
    """Return {"rooms": [...]} of the session's or bearer JWT's user."""
    chat = state()
    return jsonify(rooms=chat.rooms_of(_me(chat).id))


@bp.put("/rooms/<room>/read")
def put_read(room: str) -> Response:
    """Move the session's or JWT's user's read position in room forward to {"id"}; answer where it stands."""
    chat = state()
    who = _me(chat)
    room = protocol.room(room)
    message_id = protocol.message_id(_body().get("id"))
    refusal = chat.hub.conversations.membership.refusal(room, who.id)
    if refusal is not None:
        abort(refusal[0] - 4000, description=refusal[1])
    try:
        moved = chat.mark_read(room, who.id, message_id, who.name)
    except NotFound:
        abort(404, description="no such message in this room")
    return jsonify(room=room, id=str(message_id), moved=moved)


def _me(chat: Mount) -> Any:
    """Return the request's identity (session or bearer JWT), or answer 401."""
    try:
        who = chat.identity(_bearer())
    except identity.Refusal as refused:
        abort(refused.status, description=refused.reason)
    if who is None or who.id is None:
        abort(401, description="sign in (or send a bearer JWT) to see your rooms")
    return who


def _body() -> dict[str, Any]:
    return api.json_body(state(), '{"private": true, "members": ["u1"]}')
