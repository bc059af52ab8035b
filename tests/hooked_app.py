"""A host app with a before_request hook of its own, which must see every request, the WebSocket handshake too."""

import logging

from flask import Flask, request

from chat import Chat

app = Flask(__name__)
log = logging.getLogger("chat.hooked")


@app.before_request
def note() -> None:
    log.info("host saw %s", request.path)


Chat(app)
