"""The Flask extension: ``Chat(app, url_prefix="/chat")`` mounts the page, the WebSocket and the API on an app."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context

from .. import backends, config, protocol, store
from ..metrics import Metrics
from ..rooms.hub import Hub
from ..socket import probe
from ..socket.connection import Connection
from . import api, api_changes, api_rooms, identity, views, ws
from .mount import Mount, register

log = logging.getLogger(__name__)

#: Called with the sender's identity, the room and the text; returns the text to send, or None to drop it.
OnMessage = Callable[[identity.Identity, str, str], str | None]
#: Called with a user's id and its unread count per room, once the user has been gone CHAT_OFFLINE_GRACE seconds.
OnOffline = Callable[[str, dict[str, int]], None]


#: The blueprints the chat registers.
BLUEPRINTS = (views.page, views.bp, ws.bp, api.bp, api_rooms.bp, api_changes.bp)
#: Methods every route answers, which two routes of one path may share.
IMPLIED = {"HEAD", "OPTIONS"}


def shadowed_routes(app: Flask) -> list[str]:
    """Return the chat's routes whose path and method a route the app registered before already takes."""
    chat = {f"{blueprint.name}." for blueprint in BLUEPRINTS}
    first: dict[str, list[tuple[str, set[str]]]] = {}
    shadowed = []
    for rule in app.url_map.iter_rules():
        mine = rule.endpoint.startswith(tuple(chat))
        methods = set(rule.methods or ()) - IMPLIED
        earlier = first.setdefault(rule.rule, [])
        if mine and any(not chat_rule and methods & taken for chat_rule, taken in earlier):
            shadowed.append(rule.rule)
        earlier.append((mine, methods))
    return shadowed


class Chat:
    """Mount the chat on Flask apps, and publish, read and sign out through it from Python.

    ``Chat(app, url_prefix="/chat")``, or ``chat = Chat()`` then
    ``chat.init_app(app)`` in an application factory.  Settings come from
    ``app.config["CHAT_*"]``, then ``CHAT_*`` variables, then the defaults.
    ``page=False`` mounts only the WebSocket, the health check and the API.
    """

    def __init__(self, app: Flask | None = None, *, url_prefix: str = "", page: bool = True) -> None:
        self.url_prefix = url_prefix.rstrip("/")
        self.page = page
        self._identify: Callable[[], Any] | None = None
        self._on_message: OnMessage | None = None
        self._on_offline: OnOffline | None = None
        self._mounts: list[Mount] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the settings, build the chat's hub and backend, and register its routes on app."""
        if "chat" in app.extensions:
            raise RuntimeError("this app already has a chat: mount one Chat per app")
        settings = config.from_app(app.config, os.environ)
        probe.check()
        metrics = Metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        backend = backends.create(settings["BACKEND_URL"], settings, metrics.repaired)
        record = store.create(settings["STORE_URL"], settings, app.instance_path)
        hub = Hub(backend, settings, metrics, moderate=lambda conn, text: self._moderate(app, conn, text), store=record,
                  gone=lambda user: self._gone(app, user), wants_gone=lambda: self._on_offline is not None)
        mount = app.extensions["chat"] = Mount(settings, hub, metrics, self._identity, self._identifies)
        register(mount)
        self._mounts.append(mount)
        prefix = self.url_prefix or None
        if self.page:
            # A Flask app serves its own /static: beside it, the chat's files go under /static/chat.
            own_static = f"{self.url_prefix}/static/<path:filename>" in {rule.rule for rule in app.url_map.iter_rules()}
            app.register_blueprint(views.page_beside if own_static else views.page, url_prefix=prefix)
        app.register_blueprint(views.bp, url_prefix=prefix)
        app.register_blueprint(ws.bp, url_prefix=prefix)
        app.register_blueprint(api.bp, url_prefix=f"{self.url_prefix}/api")
        app.register_blueprint(api_rooms.bp, url_prefix=f"{self.url_prefix}/api")
        app.register_blueprint(api_changes.bp, url_prefix=f"{self.url_prefix}/api")
        shadowed = shadowed_routes(app)
        if shadowed:
            log.warning(
                "the app serves %s itself, so the chat's route there is never reached: mount the chat under a "
                'prefix of its own (Chat(app, url_prefix="/chat")), or without its page (page=False)',
                ", ".join(shadowed),
            )

    # The host app's callbacks.

    def identify(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        """Register the callback that says who a request is: (user_id, name), (user_id, name, rooms) or None.

        It runs in the request's context (the WebSocket handshake's, the
        page's, an API read's), so ``flask.session``, Flask-Login's
        ``current_user``, cookies and headers all work.
        """
        self._identify = callback
        return callback

    def on_message(self, callback: OnMessage) -> OnMessage:
        """Register the moderation hook: called once per client message (and v3 edit) before it is stored.

        It gets the sender's ``Identity`` (``id`` is None for a guest), the
        room and the text, and returns the text to send (changed or not) or
        None to drop it; the sender then gets a state-4 notice with code
        ``rejected``.  A hook that raises drops the message and logs the error.
        """
        self._on_message = callback
        return callback

    def on_offline(self, callback: OnOffline) -> OnOffline:
        """Register the hook called once (in one process of all) when a user's last connection anywhere has
        been closed for CHAT_OFFLINE_GRACE seconds (10 by default, so a reload is not an absence).

        It gets the user id and ``{room: unread count}`` of the user's rooms,
        in the app's context, on a thread of the chat's own: what an app needs
        to send a reminder email or a push notification.
        """
        self._on_offline = callback
        return callback

    def _gone(self, app: Flask, user: str) -> None:
        hook = self._on_offline
        if hook is None:
            return
        with app.app_context():
            mount = app.extensions["chat"]
            hook(user, {room["room"]: room["unread"] for room in mount.rooms_of(user)})

    def _identity(self) -> Any:
        return None if self._identify is None else self._identify()

    def _identifies(self) -> bool:
        return self._identify is not None

    def _moderate(self, app: Flask, conn: Connection, text: str) -> str | None:
        hook = self._on_message
        if hook is None:
            return text
        try:
            # The hook may use current_app; a connection's thread has no context of its own, and only a hooked
            # message pays for one (pushing an app context costs more than the rest of a message's way in).
            with app.app_context():
                result = hook(identity.Identity(conn.user, conn.name), conn.room, text)
        except Exception:
            log.exception("on_message failed: a message in %s from %r was dropped", conn.room, conn.remote)
            return None
        if result is not None and (not isinstance(result, str) or protocol.is_blank(result)):
            log.error("on_message returned %r, not a non-empty text: the message was dropped", type(result).__name__)
            return None
        return result

    # The same operations as the HTTP API, from Python.

    def publish(self, room: str, text: str, name: str | None = None, user: str | None = None) -> dict[str, Any]:
        """Send text to room as name (default "system"); return {"id", "room", "ts"}."""
        return self._mount().publish(room, text, name, user)

    def edit_message(self, room: str, message_id: int | str, text: str, name: str | None = None) -> dict[str, Any]:
        """Edit any message of room to text, as name (default "moderator"); return {"id", "room", "target", "ts"}.

        Raises LookupError (backends.Refused) when the message is not in the room or is deleted.
        """
        return self._mount().change_message(room, message_id, "edit", text, name)

    def delete_message(self, room: str, message_id: int | str, name: str | None = None) -> dict[str, Any]:
        """Delete any message of room, as name (default "moderator"); return {"id", "room", "target", "ts"}."""
        return self._mount().change_message(room, message_id, "delete", None, name)

    def history(self, room: str, since: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the messages of room after since (or the last limit), oldest first, as state-2 objects."""
        return self._mount().history(room, since, limit)["messages"]

    def presence(self, room: str) -> dict[str, Any]:
        """Return {"online": n, "users": [names]} for room."""
        return self._mount().presence(room)

    def disconnect(self, user_id: str) -> int:
        """Close the connections of user_id with 1008 "signed out"; return how many this process closed."""
        return self._mount().disconnect(user_id)

    # Conversations, from Python: every change is stored and reaches every process.

    def create_room(self, room: str, private: bool = True, members: list[str] | None = None) -> dict[str, Any]:
        """Create or update room (members replaced when given); return {"room", "private", "members"}."""
        return self._mount().put_room(room, private, members)

    def add_member(self, room: str, user: str) -> None:
        """Add user to room's members."""
        self._mount().change(room, user, "member", True)

    def remove_member(self, room: str, user: str) -> None:
        """Take user out of room's members; in a private room its sockets there close with 4403 "removed"."""
        self._mount().change(room, user, "member", False)

    def ban(self, room: str, user: str) -> None:
        """Ban user from room: its sockets there close with 4403 "banned" and later joins are refused."""
        self._mount().change(room, user, "ban", True)

    def unban(self, room: str, user: str) -> None:
        """Lift user's ban from room."""
        self._mount().change(room, user, "ban", False)

    def mute(self, room: str, user: str) -> None:
        """Mute user in room: it still reads, its messages are dropped with a "muted" notice."""
        self._mount().change(room, user, "mute", True)

    def unmute(self, room: str, user: str) -> None:
        """Let user send in room again."""
        self._mount().change(room, user, "mute", False)

    def dm(self, first: str, second: str) -> str:
        """Return the room of the DM between two users, creating it the first time."""
        return self._mount().dm(first, second)

    def rooms_of(self, user: str) -> list[dict[str, Any]]:
        """Return user's rooms, newest activity first: {"room", "private", "dm", "unread", "last"} each."""
        return self._mount().rooms_of(user)

    def mark_read(self, room: str, user: str, message_id: int | str) -> bool:
        """Move user's read position in room forward to message_id; False if it was there already."""
        return self._mount().mark_read(room, user, message_id)

    def _mount(self) -> Mount:
        """Return this chat's mount on the current app, or its only one outside an app context."""
        if has_app_context():
            mount = current_app.extensions.get("chat")
            if mount in self._mounts:
                return mount
        if len(self._mounts) == 1:
            return self._mounts[0]
        raise RuntimeError("this Chat is mounted on several apps (or none): call it inside an app context")
