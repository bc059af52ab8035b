"""Serve chat the way a flask-sock tutorial does: a client set and an inline broadcast."""

import json
import threading
import time

from flask import Flask
from flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
sock = Sock(app)
clients = set()


def heartbeat(ws):
    """Send a heartbeat every 5 s until the connection closes."""
    while ws.connected:
        time.sleep(5)
        try:
            ws.send(json.dumps({"state": 1, "message": "心跳"}))
        except ConnectionClosed:
            break


@sock.route("/ws")
def chat(ws):
    """Broadcast every message to every client."""
    clients.add(ws)
    threading.Thread(target=heartbeat, args=(ws,), daemon=True).start()
    try:
        while True:
            text = ws.receive()
            for c in clients:
                try:
                    c.send(json.dumps({"state": 2, "message": text}))
                except ConnectionClosed:
                    pass
    finally:
        clients.discard(ws)
