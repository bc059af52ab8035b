"""Serve chat with Flask-SocketIO as its documentation shows: emit every message to all clients."""

import threading

from flask import Flask
from flask_socketio import SocketIO, emit

HEARTBEAT = {"state": 1, "message": "心跳"}


def create_app(async_mode: str) -> Flask:
    """Return the app, with Socket.IO in async_mode: "gevent" or "threading"."""
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode=async_mode)
    lock = threading.Lock()
    tasks = []

    def heartbeat() -> None:
        while True:
            socketio.sleep(5)
            socketio.emit("message", HEARTBEAT)

    @socketio.on("connect")
    def connect() -> None:
        # One background task for every client, started on the first connection
        # as in Flask-SocketIO's example app.
        with lock:
            if not tasks:
                tasks.append(socketio.start_background_task(heartbeat))

    @socketio.on("message")
    def message(text: str) -> None:
        emit("message", {"state": 2, "message": text}, broadcast=True)

    @app.get("/")
    def index() -> str:
        return "OK\n"

    return app
