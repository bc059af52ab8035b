"""A host app with its own sign-in that mounts the chat at /chat and knows its users from the session.

Run it with ``SECRET_KEY=... gunicorn -c gunicorn.conf.py examples.host_app:app`` (or
``flask --app examples.host_app run --debug``) and open http://127.0.0.1:8000/.

Safe to copy: it refuses to start without SECRET_KEY outside debug mode, every
form carries a CSRF token, and signing out ends the session everywhere (each
user's session generation is kept here in this process; an app with several
processes keeps it in its database).
"""

from __future__ import annotations

import hmac
import os
import secrets

from flask import Flask, abort, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response

from chat import Chat, Identity

BANNED = {"darn", "heck"}

app = Flask(__name__)
# Every worker must sign sessions with the same key, and nobody else may know it.
app.secret_key = os.environ.get("SECRET_KEY") or None
if app.secret_key is None:
    if os.environ.get("FLASK_DEBUG", "").lower() not in ("1", "true", "yes", "on"):
        raise RuntimeError("set SECRET_KEY (a long random string): sessions signed with a known key can be forged")
    app.secret_key = secrets.token_hex(32)
app.config.update(SESSION_COOKIE_SAMESITE="Lax", CHAT_ANONYMOUS=False)
chat = Chat(app, url_prefix="/chat")


#: Per user, the generation of their sessions: signing out starts the next one, so older cookies stop working.
GENERATIONS: dict[str, int] = {}


def current_user() -> str | None:
    """Return the session's user, unless that session was signed out since."""
    user = session.get("user")
    if user is None or session.get("generation") != GENERATIONS.get(user, 0):
        return None
    return user


def csrf_token() -> str:
    """Return this session's CSRF token, making it the first time."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@app.before_request
def check_csrf() -> None:
    """Refuse a post to this app's own forms without this session's CSRF token (the chat's API has its own key)."""
    if request.method == "POST" and request.blueprint is None:
        given, expected = request.form.get("csrf", ""), session.get("csrf", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            abort(400, description="the form's CSRF token is missing or wrong: reload the page")


@chat.identify
def signed_in() -> tuple[str, str] | None:
    """Tell the chat who the session's user is."""
    user = current_user()
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
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <button data-testid="announce">Announce the deploy</button>
  </form>
  <form method="post" action="{{ url_for('logout') }}">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <button data-testid="logout">Sign out</button>
  </form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <label>Name <input name="user" data-testid="login-name" required maxlength="32"></label>
    <button data-testid="login">Sign in</button>
  </form>
{% endif %}
</body></html>
"""


@app.get("/")
def home() -> str:
    """Show the sign-in form, or the signed-in user's links."""
    return render_template_string(PAGE, user=current_user(), csrf=csrf_token())


@app.post("/login")
def login() -> Response:
    """Sign in under the name given (a real app checks a password here) and go to the chat."""
    user = request.form.get("user", "").strip()
    if not user or len(user) > 32 or not user.isprintable():
        return redirect(url_for("home"))
    # A new session for the new user: nothing of the signed-out one carries over.
    session.clear()
    session.update(user=user, generation=GENERATIONS.get(user, 0), csrf=secrets.token_urlsafe(32))
    return redirect(url_for("chat.index"))


@app.post("/logout")
def logout() -> Response:
    """Sign out everywhere: end this user's sessions (a copied cookie too) and close their chat sockets."""
    user = current_user()
    session.clear()
    if user is not None:
        GENERATIONS[user] = GENERATIONS.get(user, 0) + 1
        chat.disconnect(user)
    return redirect(url_for("home"))


@app.post("/announce")
def announce() -> Response:
    """Post a message into the lobby from the host's own code."""
    user = current_user()
    if user is not None:
        chat.publish("lobby", f"Deploy finished (started by {user})", name="deploy-bot")
    return redirect(url_for("home"))
