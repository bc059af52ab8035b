"""Smoke test of the benchmark harness: its load generator against the chat server, correctness only."""

import secrets
import shutil

import pytest

from bench import servers
from bench.generator import Generator
from bench.scenarios import Scenario

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH: the load generator needs Node.js"),
    pytest.mark.timeout(30),
]


def run(scenario: Scenario) -> dict:
    """Run scenario against a fresh chat server and return the generator's report."""
    with servers.start("chat", scenario.connections) as server, Generator(
        scenario.loadgen(server.url, secrets.token_hex(4))
    ) as gen:
        gen.expect("ready", 10)
        gen.proceed()
        connected = gen.expect("connected", 10)
        gen.proceed()
        done = gen.expect("done", scenario.duration + 15)
        gen.proceed()
        gen.expect("end", 10)
    assert connected["open"] == scenario.clients
    return done


def assert_complete(done: dict) -> None:
    """Check that every client got every message once, in each sender's order."""
    assert done["sent"] > 0
    assert done["received"] == done["expected"] == done["sent"] * done["open"]
    assert (done["lost"], done["duplicates"], done["out_of_order"]) == (0, 0, 0)
    assert done["close_codes"] == {}
    assert done["errors"] == {}


def test_flat_out_senders_reach_every_client_once_in_order():
    """Two senders flat out to 20 clients: nothing lost, duplicated or reordered."""
    assert_complete(run(Scenario(0, "smoke", 20, "flat", senders=2, duration=2.0)))


def test_fixed_rate_messages_all_arrive():
    """200 messages at 100 msg/s to 20 clients all arrive, once and in order."""
    done = run(Scenario(0, "smoke", 20, "rate", senders=1, rate=100, duration=2.0))
    assert done["sent"] == 200
    assert_complete(done)
