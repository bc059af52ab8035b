"""The chat's gunicorn workers try gunicorn's stock workers at start-up and name its version when they differ."""

from __future__ import annotations

import subprocess

import pytest
from conftest import PYTHON, ROOT
from gunicorn.workers import gthread

from chat.server import probe


def test_stock_workers_behave_as_the_chat_relies_on():
    """gunicorn's gthread loop, handle and finish_request, and its gevent worker's head deadline, pass the probe."""
    probe.check_threads()
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "from gunicorn.workers import ggevent\n"
        "from chat.server import probe\n"
        "probe.check_greenlets(ggevent.GeventWorker)\n"
    )
    finished = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr


def test_a_loop_that_no_longer_calls_murder_pending_is_refused(monkeypatch):
    """If run() stops calling murder_pending (where head deadlines fall due), the worker refuses to start."""

    def run(self):
        while self.alive:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=1.0)
            self.murder_keepalived()

    monkeypatch.setattr(gthread.ThreadWorker, "run", run)
    with pytest.raises(probe.Changed, match=r"gunicorn \d+\.\d+.*murder_pending"):
        probe.check_threads()


def test_a_finish_request_that_counts_wrong_is_refused(monkeypatch):
    """If finish_request stops counting a finished connection out, the worker refuses to start, naming gunicorn."""
    original = gthread.ThreadWorker.finish_request

    def finish_request(self, conn, fs):
        original(self, conn, fs)
        self.nr_conns += 1

    monkeypatch.setattr(gthread.ThreadWorker, "finish_request", finish_request)
    with pytest.raises(probe.Changed, match=r"gunicorn \d+\.\d+.*counts out"):
        probe.check_threads()
