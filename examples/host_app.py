"""A host app with its own sign-in that mounts the chat at /chat and knows its users from the session.

Run it with ``gunicorn -c gunicorn.conf.py examples.host_app:app`` (or
``flask --app examples.host_app run``) and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import os

from flask import Flask, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response

from chat import Chat, Identity

BANNED = {"darn", "heck"}

app = Flask(__name__)
# Every worker must sign sessions with the same key: set SECRET_KEY in production.
app.secret_key = os.environ.get("SECRET_KEY", "dev-only-secret-change-me")
app.config.update(SESSION_COOKIE_SAMESITE="Lax", CHAT_ANONYMOUS=False)
chat = Chat(app, url_prefix="/chat")


@chat.identify
def signed_in() -> tuple[str, str] | None:
    """Tell the chat who the session's user is."""
    user = session.get("user")
    return (user, user) if user else None


@chat.on_message
def no_banned_words(sender: Identity, room: str, text: str) -> str | None:
    """Drop a message that uses a banned word."""
    return None if BANNED & set(text.lower().split()) else text


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host app</title></head>
<body>
{% if user %}
  <p>Signed in as <strong data-testid="host-user">{{ user }}</strong>.</p>
  <p><a href="{{ url_for('chat.index') }}" data-testid="open-chat">Open the chat</a></p>
  <form method="post" action="{{ url_for('announce') }}">
    <button data-testid="announce">Announce the deploy</button>
  </form>
  <form method="post" action="{{ url_for('logout') }}">
    <button data-testid="logout">Sign out</button>
  </form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <label>Name <input name="user" data-testid="login-name" required maxlength="32"></label>
    <button data-testid="login">Sign in</button>
  </form>
{% endif %}
</body></html>
"""


@app.get("/")
def home() -> str:
    """Show the sign-in form, or the signed-in user's links."""
    return render_template_string(PAGE, user=session.get("user"))


@app.post("/login")
def login() -> Response:
    """Sign in under the name given (a real app checks a password here) and go to the chat."""
    user = request.form.get("user", "").strip()
    if not user or len(user) > 32 or not user.isprintable():
        return redirect(url_for("home"))
    session["user"] = user
    return redirect(url_for("chat.index"))


@app.post("/logout")
def logout() -> Response:
    """Sign out here and close the user's chat sockets."""
    user = session.pop("user", None)
    if user is not None:
        chat.disconnect(user)
    return redirect(url_for("home"))


@app.post("/announce")
def announce() -> Response:
    """Post a message into the lobby from the host's own code."""
    if "user" in session:
        chat.publish("lobby", f"Deploy finished (started by {session['user']})", name="deploy-bot")
    return redirect(url_for("home"))
