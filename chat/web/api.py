"""The HTTP API: post into a room, read its history and presence, sign a user out; JSON in and out."""

from __future__ import annotations

import hmac
import weakref
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from .. import protocol
from ..backends import Unavailable
from ..rooms import publisher
from ..rooms.publisher import TooBig
from ..rooms.receipts import Conflict
from . import identity
from .mount import Mount, state

bp = Blueprint("chat_api", __name__)

#: Longest Idempotency-Key taken.
MAX_KEY_LENGTH = 255
#: What an Idempotency-Key's claim in the store starts with: a space, which no v2 client id holds.
KEY_CID = "key "
#: JSON can spell one character in six bytes (\uXXXX), plus room for the other fields.
JSON_OVERHEAD, JSON_SLACK = 6, 4096


@bp.errorhandler(HTTPException)
def json_error(error: HTTPException) -> tuple[Response, int]:
    """Answer every API error as {"error": why} with its status."""
    response = jsonify(error=error.description)
    if error.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chat"'
    return response, error.code or 500


@bp.errorhandler(protocol.ProtocolError)
def invalid(error: protocol.ProtocolError) -> tuple[Response, int]:
    """Answer an invalid room, since, message or name with 400, and an oversize message with 413."""
    return jsonify(error=str(error)), 413 if isinstance(error, TooBig) else 400


@bp.errorhandler(Unavailable)
def unavailable(error: Unavailable) -> tuple[Response, int]:
    """Answer 503 while the backend cannot be reached."""
    message = error.notice if error.maybe_done else "the chat backend is unavailable, try again later"
    return jsonify(error=message), 503


@bp.post("/rooms/<room>/messages")
def post_message(room: str) -> tuple[Response, int]:
    """Publish {"message", "name", "user"} to room for the holder of CHAT_API_KEY; honour Idempotency-Key.

    A key is claimed in the message store, as a v2 client id is: a retry
    on any worker or host gets the first answer and delivers nothing, for as
    long as retention keeps the message.  With CHAT_STORE_URL=none the
    record is this process's, for CHAT_IDEMPOTENCY_TTL.
    """
    chat = state()
    _require_key(chat)
    room = protocol.room(room)
    body = json_body(chat, '{"message": "hello", "name": "ci"}')
    asked = (body.get("message"), body.get("name"), body.get("user"))
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        if not key or len(key) > MAX_KEY_LENGTH:
            abort(400, description=f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters")
        if chat.hub.store.durable:
            return jsonify(_post_once(chat, room, key, asked)), 201
        try:
            answer = chat.receipts.begin((room, key), asked)
        except Conflict as conflict:
            abort(conflict.status, description=str(conflict))
        if answer is not None:
            return jsonify(answer), 201
    try:
        answer = chat.publish(room, *asked)
    except BaseException:
        if key is not None:
            chat.receipts.forget((room, key))
        raise
    if key is not None:
        chat.receipts.finish((room, key), answer)
    return jsonify(answer), 201


def _post_once(chat: Mount, room: str, key: str, asked: tuple) -> dict:
    """Post under key's claim in the store, so that a retry on any worker or host gets the first answer."""
    try:
        return chat.publish(room, *asked, cid=KEY_CID + key)
    except publisher.Reused:
        abort(422, description="this Idempotency-Key was used for a different request")


@bp.get("/rooms/<room>/messages")
def get_messages(room: str) -> Response:
    """Return at most ?limit= (200) messages of room: after ?since=, before ?before=, or the last ones."""
    chat = state()
    room = protocol.room(room)
    _require_reader(chat, room)
    since = protocol.since(request.args.get("since"))
    try:
        before = protocol.since(request.args.get("before"))
    except protocol.ProtocolError:
        abort(400, description="before must be a message id")
    if since is not None and before is not None:
        abort(400, description="give since or before, not both")
    limit = request.args.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and len(limit) <= 6):
        abort(400, description="limit must be a whole number")
    return jsonify(chat.history(room, since, None if limit is None else int(limit), before))


@bp.get("/rooms/<room>/presence")
def get_presence(room: str) -> Response:
    """Return {"online": n, "users": [...]} for room."""
    chat = state()
    room = protocol.room(room)
    _require_reader(chat, room)
    return jsonify(chat.presence(room))


@bp.delete("/users/<user_id>/connections")
def delete_connections(user_id: str) -> tuple[Response, int]:
    """Sign user_id out of the chat: close each of its connections with 1008 "signed out"."""
    chat = state()
    _require_key(chat)
    chat.disconnect(user_id)
    return jsonify(user=user_id), 202


def json_body(chat: Mount, example: str, empty_ok: bool = False) -> dict[str, Any]:
    """Return the request's JSON object, or answer 413 (too large) or 400 (not an object, nested too deeply)."""
    limit = request.max_content_length = chat.settings["MAX_MESSAGE_BYTES"] * JSON_OVERHEAD + JSON_SLACK
    if (request.content_length or 0) > limit:
        abort(413, description=f"the body is too large: over {limit} bytes")
    if empty_ok and not request.content_length:
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:
        abort(400, description="the body is nested too deeply")
    if not isinstance(body, dict):
        abort(400, description=f"the body must be a JSON object such as {example}")
    return body


def _bearer() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _holds_key(chat: Mount) -> bool:
    key, given = chat.settings["API_KEY"], _bearer()
    return key is not None and given is not None and hmac.compare_digest(given.encode(), key.encode())


def _require_key(chat: Mount) -> None:
    if chat.settings["API_KEY"] is None:
        abort(404, description="the chat's HTTP API is off: set CHAT_API_KEY to use it")
    if not _holds_key(chat):
        abort(401, description="this needs Authorization: Bearer <CHAT_API_KEY>")


def _require_reader(chat: Mount, room: str) -> None:
    """Let through the key's holder and whoever may join room over the WebSocket."""
    if _holds_key(chat):
        return
    try:
        who = chat.identity(_bearer())
        identity.authorize(who, room, chat.settings["ANONYMOUS"])
    except identity.Refusal as refused:
        abort(refused.status, description=refused.reason)
    refusal = chat.hub.conversations.membership.refusal(room, None if who is None else who.id)
    if refusal is not None:
        abort(refusal[0] - 4000, description=refusal[1])


#: Per app, the API's own rules, for telling which methods a path takes.
_rules: weakref.WeakKeyDictionary[Flask, Map] = weakref.WeakKeyDictionary()


@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unrouted(rest: str) -> tuple[Response, int]:
    """Answer a path or method the API does not take with 404 or 405 in JSON, as its other errors are."""
    app = current_app._get_current_object()
    rules = _rules.get(app)
    if rules is None:
        rules = _rules[app] = Map([
            Rule(rule.rule, methods=rule.methods, endpoint=rule.endpoint) for rule in app.url_map.iter_rules()
            if rule.endpoint.partition(".")[0].startswith(bp.name) and rule.endpoint != request.endpoint
        ])
    allowed = sorted(set(rules.bind("").allowed_methods(request.path)) - {"HEAD", "OPTIONS"})
    if not allowed:
        return jsonify(error="no such API path"), 404
    response = jsonify(error=f"method {request.method} is not allowed here: use {' or '.join(allowed)}")
    response.headers["Allow"] = ", ".join(allowed)
    return response, 405
