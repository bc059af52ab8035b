"""Apps served for tests: in the test's own process by werkzeug's threaded server, or under gunicorn."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import ROOT, Server, wait_for
from flask import Flask
from test_deploy import answers
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


@contextmanager
def under_gunicorn(target: str, health: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run target under gunicorn with the project's configuration; yield its URL and process once health answers."""
    server = Server("gthread", target=target, **env)
    process = subprocess.Popen(server.command(), cwd=ROOT, env=server.env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: answers(server.url + health, process), 20, f"{target} to answer {health}")
        yield server.url, process
    finally:
        process.terminate()
        process.wait(20)
