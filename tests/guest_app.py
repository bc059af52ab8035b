"""A host app with a flask-sock route and SOCK_SERVER_OPTIONS of its own, and the chat mounted beside it at /chat."""

import threading

from flask import Flask
from flask_sock import Sock

from chat import Chat


class HostThread(threading.Thread):
    """The host's own thread class for simple-websocket's reader threads."""


app = Flask("guest-host")
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 20, "thread_class": HostThread}
sock = Sock(app)


@sock.route("/echo")
def echo(ws) -> None:
    """Send each text back with the options the route's Server was made with."""
    while (text := ws.receive()) is not None:
        ws.send(f"{text} ping_interval={ws.ping_interval} thread={type(ws.thread).__name__}")


Chat(app, url_prefix="/chat")
