"""Install what the benchmark needs beyond the server: matplotlib, the npm packages, the peers' venv."""

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS_VENV = BENCH / ".venv"
PEERS_REQUIREMENTS = BENCH / "requirements-peers.txt"


class MissingTool(RuntimeError):
    """A program the benchmark needs is not installed."""


def python_packages() -> None:
    """Install bench/requirements.txt into the running interpreter's environment if needed."""
    if importlib.util.find_spec("matplotlib") is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")],
            check=True,
        )


def node_packages_installed() -> bool:
    """Return whether bench/node_modules has every dependency of package.json at its pinned version."""
    wanted = json.loads((BENCH / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        manifest = BENCH / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def node_packages() -> None:
    """Install the pinned npm packages into bench/node_modules if they are missing."""
    if not shutil.which("node"):
        raise MissingTool("node is not on PATH: install Node.js 18 or newer")
    if node_packages_installed():
        return
    if not shutil.which("npm"):
        raise MissingTool("npm is not on PATH and bench/node_modules is missing")
    # npm ci empties node_modules first: one installer at a time (parallel test workers), and only if still needed.
    fd = os.open(BENCH, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not node_packages_installed():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)
    finally:
        os.close(fd)


def peers_venv() -> None:
    """Create bench/.venv with requirements-peers.txt, again whenever that file changes."""
    digest = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = PEERS_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"bench: installing the peers' requirements into {PEERS_VENV}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    python = PEERS_VENV / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(PEERS_REQUIREMENTS)], check=True)
    stamp.write_text(digest)


def ensure(peers: bool = True) -> None:
    """Install everything the benchmark needs; the peers' venv only when a peer will run."""
    python_packages()
    node_packages()
    if peers:
        peers_venv()
