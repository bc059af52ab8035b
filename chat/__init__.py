"""A real-time chat server as a Flask extension: ``Chat(app)`` serves the page, /ws and the API."""

from __future__ import annotations

from typing import Any

from flask import Flask

from .config import ConfigError
from .extension import Chat
from .identity import Identity
from .mount import Mount, instances, state
from .publisher import Publisher

__all__ = ["Chat", "ConfigError", "Identity", "Mount", "Publisher", "create_app", "instances", "state"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the standalone chat app, its settings from test_config, then CHAT_* variables, then defaults."""
    app = Flask(__name__, static_folder=None)
    for key, value in (test_config or {}).items():
        app.config[key if key.startswith("CHAT_") else "CHAT_" + key] = value
    Chat(app)
    return app
