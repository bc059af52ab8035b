"""Every start command docs/deployment.md and the Procfile give, from a venv of requirements.txt alone."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, answers, free_port, wait_for

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chat-production-venvs"


@pytest.fixture(scope="module")
def production_bin() -> Path:
    """Return the bin folder of a venv made from requirements.txt only, cached by the file's hash."""
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()[:16]
    venv = CACHE / f"py{sys.version_info[0]}{sys.version_info[1]}-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One builder at a time (xdist workers, other runs): a second would remove the venv the first one serves from.
    with locked(CACHE):
        if not (venv / "ready").exists():
            build(venv)
    return venv / "bin"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder for the block, waiting for whoever holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(venv: Path) -> None:
    """Make venv from requirements.txt, built beside it and renamed into place."""
    building = CACHE / f"{venv.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=120)
    subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements.txt")],
        check=True, timeout=600,
    )
    (building / "ready").touch()
    shutil.rmtree(venv, ignore_errors=True)
    # A venv's scripts name their interpreter by path, so it is used where it was built.
    building.rename(venv)
    fix_paths(venv, building)


def fix_paths(venv: Path, built_at: Path) -> None:
    """Point the scripts of a renamed venv at its new path."""
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            text = script.read_bytes()
            if str(built_at).encode() in text:
                script.write_bytes(text.replace(str(built_at).encode(), str(venv).encode()))
    config = venv / "pyvenv.cfg"
    config.write_text(config.read_text().replace(str(built_at), str(venv)))


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """Copy the project's files (tracked and new, not ignored) to a fresh folder, as a clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    target = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def procfile_command() -> list[str]:
    """Return the web command of the Procfile."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        kind, _, command = line.partition(":")
        if kind.strip() == "web":
            return command.split()
    raise AssertionError("the Procfile has no web process")


COMMANDS = {
    "procfile": lambda port, clone: procfile_command(),
    "gthread": lambda port, clone: ["gunicorn", "-k", "gthread", "app:app"],
    "gevent": lambda port, clone: ["gunicorn", "-k", "gevent", "app:app"],
    "flask": lambda port, clone: ["flask", "--app", "app", "run", "--port", str(port)],
    "elsewhere": lambda port, clone: [
        "gunicorn", "-c", str(clone / "gunicorn.conf.py"), "--chdir", str(clone), "app:app",
    ],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_start_command_serves_page_and_broadcasts(name, production_bin, clone, tmp_path, connect):
    """The command starts from the production venv, serves the page, and broadcasts over /ws."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("CHAT_", "REDIS_", "VIRTUAL_ENV"))
    }
    environment.update(PORT=str(port), PATH=f"{production_bin}{os.pathsep}{environment.get('PATH', '')}")
    command = COMMANDS[name](port, clone)
    process = subprocess.Popen(
        command, cwd=tmp_path if name == "elsewhere" else clone, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz", process), 30, f"{' '.join(command)} to answer")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b"chat.js" in response.read()
        sender = connect(f"ws://127.0.0.1:{port}/ws?room=install")
        listener = connect(f"ws://127.0.0.1:{port}/ws?room=install")
        sender.welcome()
        listener.welcome()
        sender.send(f"hello from {name}")
        # The default store keeps what earlier commands' servers were sent: wait for this one's message.
        said = f"hello from {name}"
        assert listener.next_where(lambda e: e["state"] == 2 and e["message"] == said)["name"]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in output, output
