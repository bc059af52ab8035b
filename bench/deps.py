"""Install what the benchmark needs beyond the server: matplotlib and the npm packages."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


class MissingTool(RuntimeError):
    """A program the benchmark needs is not installed."""


def python_packages() -> None:
    """Install bench/requirements.txt into the running interpreter's environment if needed."""
    if importlib.util.find_spec("matplotlib") is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")],
            check=True,
        )


def node_packages() -> None:
    """Install the pinned npm packages into bench/node_modules if they are missing."""
    if not shutil.which("node"):
        raise MissingTool("node is not on PATH: install Node.js 18 or newer")
    if (BENCH / "node_modules" / "ws" / "package.json").exists():
        return
    if not shutil.which("npm"):
        raise MissingTool("npm is not on PATH and bench/node_modules is missing")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)


def ensure() -> None:
    """Install everything the benchmark needs."""
    python_packages()
    node_packages()
