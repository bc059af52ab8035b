"""A host WSGI application that mounts the chat under /chat with werkzeug's DispatcherMiddleware."""

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from chat import create_app

host = Flask("host")


@host.get("/")
def home() -> str:
    """Answer for the host's own page."""
    return "the host's own page"


application = DispatcherMiddleware(host, {"/chat": create_app()})
