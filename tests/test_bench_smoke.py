"""Smoke test of the benchmark harness: its load generator against the chat server, and its self-test."""

import secrets
import shutil

import pytest

from bench import deps, servers
from bench.generator import Generator
from bench.scenarios import Scenario

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH: the load generator needs Node.js"),
    pytest.mark.timeout(60),
]

FAULTS = {"period": 50, "drop": [7], "duplicate": [13], "swap": [21], "delay_ms": 50}
SLACK_MS = 40


@pytest.fixture(scope="module")
def node_packages():
    """Install the pinned npm packages (ws, socket.io-client) the faulty server and Socket.IO mode need."""
    if not deps.node_packages_installed() and shutil.which("npm") is None:
        pytest.skip("npm is not on PATH and bench/node_modules is missing")
    deps.node_packages()


def drive(server: servers.Running, scenario: Scenario, **options) -> dict:
    """Run scenario against a started server and return the generator's report."""
    config = {**scenario.loadgen(server.url, secrets.token_hex(4), server.protocol), **options}
    with Generator(config) as gen:
        gen.expect("ready", 10)
        gen.proceed()
        connected = gen.expect("connected", 10)
        gen.proceed()
        done = gen.expect("done", scenario.duration + 15)
        gen.proceed()
        gen.expect("end", 10)
    assert connected["open"] == scenario.clients
    return done


def run(scenario: Scenario) -> dict:
    """Run scenario against a fresh chat server and return the generator's report."""
    with servers.start("chat", scenario.connections) as server:
        return drive(server, scenario)


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


@pytest.mark.parametrize("protocol", ["ws", "socketio"])
def test_generator_reports_exactly_the_injected_faults(node_packages, protocol):
    """Against a server that drops, duplicates, swaps and delays known messages, each mode counts exactly those."""
    clients = 10
    scenario = Scenario(0, "self-test", clients, "rate", senders=1, rate=100, duration=2.0)
    with servers.faulty(protocol, FAULTS) as server:
        done = drive(server, scenario, drainIdle=0.5)
    per_fault = done["sent"] // FAULTS["period"]
    assert done["protocol"] == protocol
    assert done["sent"] == 200
    assert done["expected"] == 200 * clients
    assert done["lost"] == per_fault * clients
    assert done["received"] == done["expected"] - done["lost"]
    assert done["duplicates"] == per_fault * clients
    assert done["out_of_order"] == per_fault * clients
    assert FAULTS["delay_ms"] <= done["latency_ms"]["p50"] < FAULTS["delay_ms"] + SLACK_MS
    assert (done["close_codes"], done["errors"]) == ({}, {})
