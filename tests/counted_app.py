"""Chat apps that count every simple-websocket Server flask-sock's routes make, one line each in $CHAT_TEST_COUNTS."""

import os

import flask_sock
from flask import Flask

from chat import Chat, create_app


class Counted(flask_sock.Server):
    """flask-sock's Server, which also notes the path of each handshake it makes."""

    def __init__(self, environ: dict, **options: object) -> None:
        super().__init__(environ, **options)
        line = f"{environ.get('SCRIPT_NAME', '')}{environ['PATH_INFO']}\n".encode()
        # One write in append mode: lines from the server's threads, greenlets and workers never interleave.
        descriptor = os.open(os.environ["CHAT_TEST_COUNTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


# flask-sock's routes look the name up when they run: from now on every route of every app makes a Counted.
flask_sock.Server = Counted

standalone = create_app()
mounted = Flask("host")
Chat(mounted, url_prefix="/chat")
