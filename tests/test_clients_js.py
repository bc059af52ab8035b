"""The JavaScript client: its Node tests against real servers, the copy the page loads, and its npm package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

CLIENT = ROOT / "clients" / "js"
NODE = shutil.which("node")


def node_flags() -> list[str]:
    """Return the flags that give Node a WebSocket (none with the ws package installed or on Node 22+)."""
    if (CLIENT / "node_modules" / "ws").exists():
        return []
    for flags in ([], ["--experimental-websocket"]):
        probe = [NODE, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return flags
    pytest.skip("this node has no WebSocket (Node 20.10+ or 22 has one): run npm install in clients/js for ws")


def test_the_page_loads_the_packaged_client():
    """chat/web/static/chat-client.js is the package's module byte for byte (make client-js copies it)."""
    packaged = (CLIENT / "chat-client.js").read_bytes()
    served = (ROOT / "chat" / "web" / "static" / "chat-client.js").read_bytes()
    assert served == packaged, "run `make client-js` to copy clients/js/chat-client.js into chat/web/static/"


@pytest.mark.skipif(NODE is None, reason="node is not on PATH (the JavaScript client's tests need Node 18+)")
@pytest.mark.slow
def test_the_javascript_client_against_real_servers():
    """node --test clients/js/test/: acks, presence, refusals, the offline outbox, history and a server restart."""
    finished = subprocess.run(
        [NODE, *node_flags(), "--test", "clients/js/test/"],
        cwd=ROOT, env={**_env(), "CHAT_PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )
    assert finished.returncode == 0, finished.stdout[-6000:] + finished.stderr[-2000:]
    assert "# fail 0" in finished.stdout


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH")
def test_npm_pack_accepts_the_package(tmp_path):
    """npm pack makes a package of the module and its types, and nothing else."""
    finished = subprocess.run(
        ["npm", "pack", "--dry-run", "--json"], cwd=CLIENT, capture_output=True, text=True, timeout=120,
        env={**_env(), "npm_config_cache": str(tmp_path / "cache"), "npm_config_offline": "true"},
    )
    assert finished.returncode == 0, finished.stderr
    (packed,) = json.loads(finished.stdout)
    assert sorted(item["path"] for item in packed["files"]) == ["chat-client.d.ts", "chat-client.js", "package.json"]


def _env() -> dict[str, str]:
    """Return the environment without the test's own store: each Node test's server keeps its own."""
    return {key: value for key, value in os.environ.items() if key != "CHAT_STORE_URL"}
