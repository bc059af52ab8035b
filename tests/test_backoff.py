"""The reconnect backoff of the client the page loads (chat/web/static/chat-client.js), run in Node with its
timers and random numbers in the test's hands: full jitter under a ceiling that doubles from 0.5 s to 30 s."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import ROOT

CLIENT = ROOT / "chat" / "web" / "static" / "chat-client.js"

#: Drives one client whose every connection fails (1006), or ends with the code given, and prints the delay
#: of each retry it schedules: the timer set while it handles a close.
SCRIPT = """
const [randoms, code, attempts] = JSON.parse(process.argv[1]);
let draw = 0;
Math.random = () => randoms[draw++ % randoms.length];
const timers = [];
globalThis.setTimeout = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
globalThis.clearTimeout = () => {};
const sockets = [];
class FakeSocket { constructor(url) { this.url = url; sockets.push(this); } close() {} send() {} }
const { ChatClient } = await import(process.argv[2]);
new ChatClient("ws://127.0.0.1:9/ws", { WebSocket: FakeSocket, storage: null });
const delays = [];
for (let n = 0; n < attempts; n++) {
  const before = timers.length;
  sockets[sockets.length - 1].onclose({ code: n === 0 ? code : 1006, reason: "" });
  const retry = timers.slice(before);
  if (retry.length === 0) break;
  delays.push(retry[retry.length - 1].ms);
  retry[retry.length - 1].fn();
}
console.log(JSON.stringify({ delays, sockets: sockets.length }));
"""


def retries(randoms: list[float], code: int = 1006, attempts: int = 10) -> dict:
    """Run the client in Node and return the delays of the retries it scheduled and how many sockets it opened."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is missing: the page's client is run in Node (apt-get install nodejs)")
    finished = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, json.dumps([randoms, code, attempts]), CLIENT.as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def test_each_retry_waits_a_random_part_of_a_ceiling_that_doubles_up_to_30_s():
    """The k-th retry waits random() times min(30 s, 0.5 s * 2^k): jittered, exponential, capped."""
    randoms = [0.5, 0.25, 1.0, 0.1, 0.9, 0.75, 0.3, 0.6, 1.0, 0.05]
    got = retries(randoms)
    ceilings = [min(30_000, 500 * 2**k) for k in range(10)]
    assert got["delays"] == pytest.approx([r * c for r, c in zip(randoms, ceilings, strict=True)])
    assert got["sockets"] == 11


def test_two_clients_with_other_luck_retry_at_other_times():
    """The jitter is the random draw: the same failures give other delays for another draw."""
    assert retries([0.2] * 5, attempts=5)["delays"] != retries([0.8] * 5, attempts=5)["delays"]


@pytest.mark.parametrize("code", [1003, 1008, 1009, 4401, 4403])
def test_no_retry_after_a_code_retrying_cannot_fix(code):
    """After 1003, 1008, 1009, 4401 or 4403 the client schedules no retry and opens no other socket."""
    assert retries([0.5], code=code) == {"delays": [], "sockets": 1}


@pytest.mark.parametrize("code", [1001, 1011, 1013, 1006])
def test_a_retry_after_every_other_code(code):
    """After 1001, 1011, 1013 or a lost connection the client retries."""
    assert retries([0.5], code=code, attempts=1)["delays"] == [250]
