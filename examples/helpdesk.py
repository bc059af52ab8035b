"""A small host app for the test kit's example: a help desk whose chat refuses links and takes announcements.

Run it with ``flask --app examples.helpdesk run``; its test is examples/test_helpdesk.py.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from chat import Chat, Identity

CLOSING = "The desk closes in ten minutes."


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the help desk with its chat at /chat; config goes on top of the defaults (CHAT_BACKEND_URL...)."""
    app = Flask(__name__)
    app.config.update(CHAT_RATE_LIMIT="off", **(config or {}))
    chat = Chat(app, url_prefix="/chat")

    @chat.on_message
    def no_links(sender: Identity, room: str, text: str) -> str | None:
        """Drop a message with a link in it."""
        return None if "http://" in text or "https://" in text else text

    @app.post("/closing")
    def closing() -> tuple[str, int]:
        """Tell the help room that the desk closes soon."""
        chat.publish("help", CLOSING, name="desk")
        return "told\n", 202

    return app
