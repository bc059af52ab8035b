"""A real-time chat server as a Flask extension: ``Chat(app)`` serves the page, /ws and the API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask

from . import logs
from .config import ConfigError
from .rooms.publisher import Publisher
from .web import identity
from .web.extension import Chat
from .web.identity import Identity
from .web.mount import Mount, instances, state

__all__ = [
    "Chat", "ConfigError", "Identity", "Mount", "Publisher", "configure_logging", "create_app", "instances", "state",
]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the standalone chat app, its settings from test_config, then CHAT_* variables, then defaults."""
    app = Flask(__name__, static_folder=None, template_folder=templates())
    for key, value in (test_config or {}).items():
        app.config[key if key.startswith("CHAT_") else "CHAT_" + key] = value
    Chat(app)
    configure_logging()
    return app


def templates() -> str | None:
    """Return the checkout's templates/ folder, where a deployer overrides the page, or None where there is none."""
    # Beside the package in a checkout; an installed package has none and serves its own page.
    folder = Path(__file__).resolve().parent.parent / "templates"
    return str(folder) if (folder / "chat").is_dir() else None


def configure_logging() -> None:
    """Log the chat's lines to stderr at INFO (written by a thread of their own); keep tokens out of request logs.

    The standalone app does this; a host app may call it, or set up logging its own way.
    """
    logger = logging.getLogger("chat")
    if not logger.handlers:
        logs.to_stderr(logger, logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    identity.redact_request_logs()
