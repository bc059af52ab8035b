"""Flask apps served in the test's own process by werkzeug's threaded server, on free ports."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


class Served:
    """Serve apps until stop(), then stop each chat's threads too."""

    def __init__(self) -> None:
        self.running: list[tuple[BaseWSGIServer, threading.Thread, Flask]] = []

    def serve(self, app: Flask) -> str:
        """Start serving app and return its http:// base URL."""
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
        thread.start()
        self.running.append((server, thread, app))
        return f"http://127.0.0.1:{server.server_port}"

    def stop(self) -> None:
        """Stop every server and the chats of their apps."""
        for server, thread, app in self.running:
            server.shutdown()
            thread.join(5)
            app.extensions["chat"].hub.stop()
