"""The HTTP API of messages that change: edit or delete any message, and export or erase what a user wrote.

Mounted beside the API's blueprint, under the same prefix and with its error
answers; every endpoint needs the API key.  A change made here carries
``user: null`` and the ``name`` given (default "moderator").
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import protocol
from ..backends import Refused, Unavailable
from . import api
from .api import _require_key
from .mount import state

bp = Blueprint("chat_api_changes", __name__)
bp.register_error_handler(HTTPException, api.json_error)
bp.register_error_handler(protocol.ProtocolError, api.invalid)
bp.register_error_handler(Unavailable, api.unavailable)


@bp.errorhandler(Refused)
def refused(error: Refused) -> tuple[Response, int]:
    """Answer a change to a message that is not in the room (or is deleted) with 404."""
    return jsonify(error="no such message in this room"), 404


def _body() -> dict[str, Any]:
    return api.json_body(state(), '{"message": "hello"}', empty_ok=True)


@bp.patch("/rooms/<room>/messages/<message_id>")
def patch_message(room: str, message_id: str) -> Response:
    """Edit a message of room to {"message": text} (as {"name"}, default "moderator") for the API key's holder."""
    chat = state()
    _require_key(chat)
    body = _body()
    return jsonify(chat.change_message(room, message_id, "edit", body.get("message"), body.get("name")))


@bp.delete("/rooms/<room>/messages/<message_id>")
def delete_message(room: str, message_id: str) -> Response:
    """Delete a message of room (as ?name= or {"name"}, default "moderator") for the API key's holder."""
    chat = state()
    _require_key(chat)
    name = request.args.get("name", _body().get("name"))
    return jsonify(chat.change_message(room, message_id, "delete", None, name))


@bp.get("/users/<user>/messages")
def get_user_messages(user: str) -> Response:
    """Return what user wrote in any room, newest first: ?before= (an id), ?limit= (200); {"messages", "more"}."""
    chat = state()
    _require_key(chat)
    try:
        before = protocol.since(request.args.get("before"))
    except protocol.ProtocolError:
        abort(400, description="before must be a message id")
    limit = request.args.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and len(limit) <= 6):
        abort(400, description="limit must be a whole number")
    return jsonify(chat.messages_of(user, before, None if limit is None else int(limit)))


@bp.delete("/users/<user>/messages")
def delete_user_messages(user: str) -> Response:
    """Delete every message user wrote, in every room: their text leaves the store and the backend's window."""
    chat = state()
    _require_key(chat)
    return jsonify(user=user, deleted=chat.erase(user))
