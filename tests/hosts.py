"""Host apps that tests serve under gunicorn, as deployed: each mounts the chat at /chat, its CHAT_* settings
from the environment the test starts it with.

`api` is a bare host; `identified` signs users in through its session (POST /login/<user>) and tells the chat
who they are with @chat.identify.
"""

from __future__ import annotations

from flask import Flask, session

from chat import Chat


def host(name: str) -> tuple[Flask, Chat]:
    """Return a host app with a session secret and the chat mounted at /chat."""
    app = Flask(name)
    app.secret_key = "session-secret-for-tests"
    return app, Chat(app, url_prefix="/chat")


api, _ = host("api")
identified, identified_chat = host("identified")


@identified.post("/login/<user>")
def login(user: str) -> str:
    """Sign user in to the host's session."""
    session["user"] = user
    return "signed in"


@identified_chat.identify
def who() -> tuple[str, str] | None:
    """Name the session's user, title-cased."""
    user = session.get("user")
    return (user, user.title()) if user else None
