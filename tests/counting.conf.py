"""The project's gunicorn.conf.py, plus a hook that logs the worker's count of open connections before each request."""

import runpy
from pathlib import Path

globals().update(
    (name, value)
    for name, value in runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")).items()
    if not name.startswith("__")
)


def pre_request(worker, req):
    """Log gunicorn's nr_conns, which decides whether the worker accepts more connections."""
    worker.log.info("nr_conns=%s before %s", worker.nr_conns, req.path)
