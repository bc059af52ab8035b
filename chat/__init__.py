"""A real-time chat server: Flask serves the page, flask-sock the WebSocket at /ws."""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from werkzeug.routing.exceptions import WebsocketMismatch
from wsproto.utilities import RemoteProtocolError

from . import backends, config, wire
from .hub import Hub
from .metrics import Metrics


@dataclass(eq=False)
class Chat:
    """The per-app state: settings, the hub of connections, the metrics."""

    settings: dict[str, Any]
    hub: Hub
    metrics: Metrics


#: Every chat made in this process, so that gunicorn's hooks find them whatever
#: WSGI object (middleware, a dispatcher, a host app) is being served.
_chats: weakref.WeakSet[Chat] = weakref.WeakSet()


def instances() -> list[Chat]:
    """Return every chat created in this process."""
    return list(_chats)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the chat application from defaults, CHAT_* variables and test_config."""
    here = os.path.dirname(os.path.abspath(__file__))
    app = Flask(
        __name__,
        template_folder=os.path.join(here, "..", "templates"),
        static_folder=os.path.join(here, "..", "static"),
    )
    settings = config.load(os.environ, test_config)
    wire.check()
    app.config.from_mapping(SOCK_SERVER_OPTIONS=wire.server_options())
    metrics = Metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    backend = backends.create(settings["BACKEND_URL"], settings)
    chat = app.extensions["chat"] = Chat(settings, Hub(backend, settings, metrics), metrics)
    _chats.add(chat)
    _configure_logging()

    from . import views, ws

    app.register_blueprint(views.bp)
    app.register_blueprint(ws.bp)
    ws.sock.init_app(app)
    app.register_error_handler(WebsocketMismatch, _not_a_websocket)
    app.register_error_handler(RemoteProtocolError, _bad_handshake)
    return app


def state() -> Chat:
    """Return the chat state of the current app."""
    return current_app.extensions["chat"]


def _not_a_websocket(error: WebsocketMismatch) -> tuple[str, int]:
    return (
        "400 Bad Request: /ws is a WebSocket endpoint; connect to it with a WebSocket client.\n",
        400,
    )


def _bad_handshake(error: RemoteProtocolError) -> tuple[str, int]:
    return f"400 Bad Request: invalid WebSocket handshake: {error}\n", 400


def _configure_logging() -> None:
    logger = logging.getLogger("chat")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
