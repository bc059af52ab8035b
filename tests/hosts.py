"""Host apps that tests serve under gunicorn, as deployed: each mounts the chat at /chat, its CHAT_* settings
from the environment the test starts it with.

`api` is a bare host; `identified` signs users in through its session (POST /login/<user>) and tells the chat
who they are with @chat.identify; `moderated` runs an @chat.on_message hook; `two_apps` serves two apps, each
with a chat of its own, from one process.
"""

from __future__ import annotations

import itertools

from flask import Flask, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from chat import Chat, Identity


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


moderated, moderated_chat = host("moderated")
#: How many messages the hook saw in this process.
seen = itertools.count(1)


@moderated_chat.on_message
def moderate(sender: Identity, room: str, text: str) -> str | None:
    """Raise on "boom", drop spam, shout "shout ..." with who sent it and where, number "count ..." by call."""
    if text == "boom":
        raise RuntimeError("the moderation service is down")
    if "spam" in text:
        return None
    if text.startswith("shout "):
        return f"{text[6:].upper()} (from {sender.id}/{sender.name} in {room})"
    if text.startswith("count "):
        return f"{text} #{next(seen)}"
    return text


def replaying(name: str, prefix: str, replay: int) -> Flask:
    """Return an app with a page of its own and a chat at prefix that replays replay messages."""
    app = Flask(name)
    app.config["CHAT_HISTORY_REPLAY"] = replay

    @app.get("/")
    def home() -> str:
        return f"{name}'s own page"

    Chat(app, url_prefix=prefix)
    return app


#: Two apps in one process, each with a chat of its own: /a/ws replays 1 message, /other/b/ws 3.
two_apps = DispatcherMiddleware(replaying("first", "/a", 1), {"/other": replaying("second", "/b", 3)})
