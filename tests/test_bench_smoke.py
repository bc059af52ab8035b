"""Smoke test of the benchmark harness: its load generator against the chat server, and its self-test."""

import secrets
import shutil

import pytest

from bench import baseline, deps, report, runner, servers
from bench.generator import Generator
from bench.scenarios import FULL, Scenario, scenarios

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH: the load generator needs Node.js"),
    pytest.mark.timeout(60),
    # One worker runs them all, in order: they share bench/node_modules, which the first one may install.
    pytest.mark.xdist_group("bench"),
]

FAULTS = {"period": 50, "drop": [7], "duplicate": [13], "swap": [21], "delay_ms": 50}
SLACK_MS = 40


@pytest.fixture(scope="module")
def node_packages():
    """Install the pinned npm packages (ws, socket.io-client) the faulty server and Socket.IO mode need."""
    if not deps.node_packages_installed() and shutil.which("npm") is None:
        pytest.skip("npm is not on PATH and bench/node_modules is missing")
    deps.node_packages()


def drive(server: servers.Running, scenario: Scenario, chat: bool = False, **options) -> dict:
    """Run scenario against a started server and return the generator's report, with the connect phase's."""
    config = {**scenario.loadgen(server.url, secrets.token_hex(4), server.protocol, chat), **options}
    with Generator(config) as gen:
        gen.expect("ready", 10)
        gen.proceed()
        connected = gen.expect("connected", 10)
        gen.proceed()
        done = gen.expect("done", scenario.duration + 15)
        gen.proceed()
        gen.expect("end", 10)
    assert connected["open"] == scenario.clients
    return {**done, "connected": connected}


def run(scenario: Scenario, name: str = "chat") -> dict:
    """Run scenario against a fresh chat server and return the generator's report."""
    with servers.start(name, scenario.connections) as server:
        return drive(server, scenario, chat=True)


def assert_complete(done: dict, audience: int | None = None) -> None:
    """Check that every client (of the sender's room, audience of them) got every message once, in order."""
    assert done["sent"] > 0
    assert done["received"] == done["expected"] == done["sent"] * (audience or done["open"])
    assert (done["lost"], done["duplicates"], done["out_of_order"], done["misrouted"]) == (0, 0, 0, 0)
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


def test_generator_counts_messages_of_another_room(node_packages):
    """Clients in 4 rooms each expect their room's messages only: a message also sent to another room is counted."""
    scenario = Scenario(0, "self-test", 12, "rate", senders=4, rate=100, duration=2.0, rooms=4)
    with servers.faulty("ws", {"period": 50, "misroute": [7]}) as server:
        done = drive(server, scenario, drainIdle=0.5)
    assert done["sent"] == 200
    assert done["expected"] == done["received"] == 200 * 3
    assert done["misrouted"] == done["sent"] // 50 * 3
    assert (done["lost"], done["duplicates"], done["out_of_order"]) == (0, 0, 0)


def test_generator_reports_the_join_storm(node_packages):
    """Against a server that sends every joiner 3 join frames and a welcome, each client counts 3 and is joined."""
    scenario = Scenario(0, "self-test", 30, "idle", duration=0.2, concurrency=10, storm=True)
    with servers.faulty("ws", {"presence": 3}) as server:
        storm = drive(server, scenario, chat=True)["connected"]["storm"]
    assert storm["joined"] == storm["welcomed"] == 30
    assert storm["presence_per_client"] == {"mean": 3, "p50": 3, "max": 3}
    assert 0 < storm["joined_s"] < 5
    assert storm["welcome_bytes_max"] > 0


def test_rooms_of_the_chat_server_are_kept_apart():
    """5 senders each into their own room of 2 v2 clients: every message reaches its room alone; all welcomed."""
    done = run(Scenario(0, "smoke", 10, "rate", senders=5, rate=100, duration=1.0, rooms=5, query="v=2"))
    assert_complete(done, audience=2)
    assert done["connected"]["storm"]["welcomed"] == 10


def test_scenarios_fit_the_servers_they_are_for():
    """Many rooms run on gevent chat servers, worker scaling alone takes two workers, big storms skip threads."""
    fitting = {sid: {name for name, s in servers.SERVERS.items() if sc.fits(s) and s.ref is None}
               for sid, sc in FULL.items()}
    assert fitting[9] == {"chat-gevent", "chat-redis-gevent"}
    assert fitting[11] == {"chat-gevent", "chat-redis-gevent", "chat-redis-gevent-w2"}
    assert "chat-redis-gevent-w2" not in fitting[1] | fitting[12]
    assert {"chat", "chat-redis", "tutorial", "socketio-threading"}.isdisjoint(fitting[14])
    assert {"chat", "node", "chat-gevent"} <= fitting[12]
    assert fitting[15] == {s for s in fitting[12] if servers.SERVERS[s].chat}
    assert set(scenarios(quick=True)) == set(FULL)
    assert servers.counterpart("chat-redis-gevent-w2", backend="memory", workers=1) == "chat-gevent"
    # The peers route on the whole path, so v=2 goes to the chat server alone.
    assert (FULL[12].loadgen("ws://h/ws", "r", chat=True)["query"], FULL[12].loadgen("ws://h/ws", "r")["query"]) == (
        "v=2", "")


def test_redis_rows_measure_their_own_redis_server(tmp_path):
    """A chat server on Redis gets a redis-server of its own for the run, whose CPU is measured apart."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    scenario = Scenario(0, "smoke", 6, "rate", senders=3, rate=100, duration=1.0, rooms=3)
    result = runner.measure("chat-redis-gevent", scenario, tmp_path, "redis")
    assert_complete(result["load"], audience=2)
    assert result["redis_cpu_s"] > 0
    assert result["redis_cpu_per_delivery_us"] > 0


def test_a_baseline_commit_runs_beside_the_working_tree(tmp_path):
    """--baseline HEAD registers the chat servers at HEAD, exported by git archive, and the report pairs the rows."""
    names = servers.add_baseline("HEAD")
    commit = baseline.resolve("HEAD")
    old = f"chat-gevent-{commit[:7]}"
    assert old in names
    assert (servers.SERVERS[old].root / "app.py").exists()
    scenario = Scenario(0, "smoke", 10, "rate", senders=1, rate=100, duration=1.0)
    runs = [runner.measure(name, scenario, tmp_path, name) | {"repeat": 1} for name in ("chat-gevent", old)]
    for run in runs:
        assert_complete(run["load"])
    rows = report.summarise(runs, {0: scenario}, ["chat-gevent", old])
    assert f"| chat-gevent | {commit[:7]} |" in report.before_after(rows)


def test_chat_servers_get_a_store_of_their_own_and_the_settings_asked_for(monkeypatch, tmp_path):
    """Each run's chat server keeps messages in a fresh SQLite file; --env and --at reach every chat server."""
    from bench.__main__ import parse

    monkeypatch.setattr(servers, "CHAT_ENV", {})
    monkeypatch.setattr(servers, "CURRENT", None)
    _, cwd, env = servers.command("chat-gevent", 1234, 10, None, store=tmp_path)
    assert env["CHAT_STORE_URL"] == f"sqlite:///{tmp_path}/chat.db"
    assert cwd == servers.ROOT
    args = parse(["--at", "HEAD", "--env", "CHAT_STORE_URL=none", "--servers", "chat"])
    assert args.servers == ["chat"]
    _, cwd, env = servers.command("chat-redis", 1234, 10, None, "redis://127.0.0.1:1/0", store=tmp_path)
    assert (env["CHAT_STORE_URL"], env["CHAT_BACKEND_URL"]) == ("none", "redis://127.0.0.1:1/0")
    assert cwd == baseline.folder(baseline.resolve("HEAD"))
