"""Run scenarios against servers, interleaved, and measure each run."""

import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import proc, redis_server, servers
from bench.generator import Generator, GeneratorError
from bench.scenarios import Scenario

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """The server's process tree, its redis-server (if any) and its workers' sockets at one moment.

    ``commands`` holds the redis-server's calls and microseconds per command
    name, as ``INFO commandstats`` counts them.
    """

    server: proc.Sample
    redis: proc.Sample | None
    sockets: list[int]
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)


def commandstats(port: int) -> dict[str, tuple[int, int]]:
    """Return the calls and microseconds per command of the redis-server on port (empty if it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"INFO commandstats\r\n")
            header = b""
            while not header.endswith(b"\r\n"):
                header += conn.recv(1)
            size = int(header[1:-2])
            body = b""
            while len(body) < size + 2:
                body += conn.recv(size + 2 - len(body))
    except (OSError, ValueError):
        return {}
    stats = {}
    for line in body.decode().splitlines():
        name, _, values = line.partition(":")
        if name.startswith("cmdstat_"):
            fields = dict(pair.split("=", 1) for pair in values.split(","))
            stats[name[len("cmdstat_"):]] = (int(fields["calls"]), int(fields["usec"]))
    return stats


def snapshot(pid: int, redis: redis_server.Redis | None) -> Snapshot:
    """Sample the server's process tree and its redis-server."""
    commands = commandstats(redis.port) if redis else {}
    return Snapshot(
        proc.sample(pid), proc.sample(redis.pid) if redis else None, proc.sockets_per_child(pid), commands
    )


@contextmanager
def backend(server: servers.Server, cpu: int | None, log_path: Path) -> Iterator[redis_server.Redis | None]:
    """Run a fresh redis-server for a chat server on Redis, on cpu; nothing for any other server."""
    if server.backend != "redis":
        yield None
        return
    with redis_server.start(cpu, log_path) as redis:
        yield redis


def measure(server: str, scenario: Scenario, logs: Path, tag: str) -> dict:
    """Run one scenario against a freshly started server (and its own redis-server) and return what was measured."""
    run = secrets.token_hex(4)
    spec = servers.SERVERS[server]
    pinned = not scenario.scaling
    result: dict = {"server": server, "scenario": scenario.id, "run": run, "pinned": pinned}
    cpu = servers.SERVER_CPU if pinned and proc.can_pin() else None
    with (
        backend(spec, cpu, logs / f"{tag}.redis.log") as redis,
        servers.start(
            server, scenario.connections, scenario.limit, log=logs / f"{tag}.server.log",
            backend_url=redis.url if redis else None, pinned=pinned,
        ) as running,
    ):
        config = scenario.loadgen(running.url, run, running.protocol, chat=spec.chat)
        with Generator(config, log=logs / f"{tag}.loadgen.log") as gen:
            ready = gen.expect("ready", 30)
            empty = snapshot(running.pid, redis)
            connecting, clock = proc.busy_s(), time.monotonic()
            gen.proceed()
            result["connect"] = gen.expect("connected", 240)
            loaded = snapshot(running.pid, redis)
            busy = proc.busy_s()
            if scenario.quiet:
                # What the open connections cost with nobody sending (heartbeats, timers).
                time.sleep(scenario.quiet)
                quiet, loaded = loaded, snapshot(running.pid, redis)
                busy = proc.busy_s()
                result["quiet"] = idle_rate(quiet, loaded)
            connecting, result["connect_wall_s"] = busy - connecting, time.monotonic() - clock
            gen.proceed()
            done = gen.expect("done", scenario.duration + 90)
            after = snapshot(running.pid, redis)
            busy = proc.busy_s() - busy
            gen.proceed()
            result["end"] = gen.expect("end", 60)
        result["server_alive"] = running.process.poll() is None
    result["load"] = done
    result.update(costs(empty, loaded, after, done, busy))
    if "quiet" in result and done["received"]:
        rate = result["quiet"]
        idle = (rate["server_cpu_per_s"] + rate.get("redis_cpu_per_s", 0.0)) * (after.server.at - loaded.server.at)
        result["idle_cpu_per_delivery_us"] = idle / done["received"] * 1e6
    # What else ran while the clients connected: the machine's busy time less the server's, Redis's and the generator's.
    mine = result["connect_cpu_s"] + result.get("redis_connect_cpu_s", 0.0)
    gen = result["connect"]["gen_cpu_s"] - ready.get("gen_cpu_s", 0.0)
    result["connect_other_cpu_s"] = max(0.0, connecting - mine - gen)
    if scenario.mode == "idle" and done["open"]:
        result["heartbeat_coverage"] = done["heartbeat_clients"] / done["open"]
    return result


def idle_rate(start: Snapshot, end: Snapshot) -> dict:
    """Return the CPU the server (and its redis-server) used per second between two snapshots."""
    seconds = end.server.at - start.server.at
    rate = {"seconds": seconds, "server_cpu_per_s": (end.server.cpu_s - start.server.cpu_s) / seconds}
    if start.redis and end.redis:
        rate["redis_cpu_per_s"] = (end.redis.cpu_s - start.redis.cpu_s) / seconds
    return rate


def costs(empty: Snapshot, loaded: Snapshot, after: Snapshot, done: dict, busy: float) -> dict:
    """Return the server's (and its redis-server's) CPU, memory and thread costs from three snapshots."""
    cpu = after.server.cpu_s - loaded.server.cpu_s
    redis = after.redis.cpu_s - loaded.redis.cpu_s if after.redis else None
    open_ = max(done["open"], 1)
    seconds = after.server.at - loaded.server.at
    out = {
        "measured_s": seconds,
        "server_cores": (cpu + (redis or 0.0)) / seconds,
        "server_cpu_s": cpu,
        "cpu_per_delivery_us": cpu / done["received"] * 1e6 if done["received"] else None,
        "connect_cpu_s": loaded.server.cpu_s - empty.server.cpu_s,
        "other_cpu_s": max(0.0, busy - cpu - (redis or 0.0) - done["gen_cpu_s"]),
        "rss_kb": {"empty": empty.server.rss_kb, "loaded": loaded.server.rss_kb, "after": after.server.rss_kb},
        "threads": {"empty": empty.server.threads, "loaded": loaded.server.threads, "after": after.server.threads},
        "rss_per_conn_kb": (loaded.server.rss_kb - empty.server.rss_kb) / open_,
        "threads_per_conn": (loaded.server.threads - empty.server.threads) / open_,
    }
    if len(loaded.sockets) > 1:
        out["connections_per_worker"] = [
            now - before for now, before in zip(loaded.sockets, empty.sockets, strict=False)
        ]
    if redis is not None:
        out["redis_commands"] = commands_per_message(loaded.commands, after.commands, done["sent"])
        out.update(
            redis_cpu_s=redis,
            redis_cpu_per_delivery_us=redis / done["received"] * 1e6 if done["received"] else None,
            redis_connect_cpu_s=loaded.redis.cpu_s - empty.redis.cpu_s,
            redis_rss_kb={"empty": empty.redis.rss_kb, "loaded": loaded.redis.rss_kb, "after": after.redis.rss_kb},
        )
    return out


def commands_per_message(before: dict, after: dict, messages: int) -> dict:
    """Return, per Redis command run between two snapshots, its calls per message sent and microseconds per call."""
    out = {}
    for name, (calls, usec) in after.items():
        ran = calls - before.get(name, (0, 0))[0]
        if ran > 0 and messages:
            spent = usec - before.get(name, (0, 0))[1]
            out[name] = {"per_message": ran / messages, "usec_per_call": spent / ran}
    return out


def background(result: dict) -> float:
    """Return the share of a core other processes used during a run's measured phase (0 for a failed run)."""
    if "error" in result:
        return 0.0
    return result["other_cpu_s"] / max(result.get("measured_s") or 1e-9, 1e-9)


def run_all(
    server_names: list[str],
    scenarios: list[Scenario],
    repeat: int,
    logs: Path,
    progress: Callable[[str], None] = print,
    max_background: float | None = None,
    tries: int = 3,
) -> list[dict]:
    """Run every scenario repeat times against the servers it fits, interleaved A B C A B C, and return all runs.

    With max_background, a run during which other processes used more than
    that share of a core is made again, up to tries times in all, and the
    quietest attempt is kept (its ``attempts`` say how many there were).
    """
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    plan = [
        (scenario, [name for name in server_names if scenario.fits(servers.SERVERS[name])])
        for scenario in scenarios
    ]
    total = sum(len(names) for _, names in plan) * repeat
    for scenario, names in plan:
        for rep in range(1, repeat + 1):
            for server in names:
                tag = f"s{scenario.id}-{server}-{rep}"
                attempts = []
                while True:
                    started = time.monotonic()
                    try:
                        result = measure(server, scenario, logs, tag)
                    except (GeneratorError, RuntimeError, OSError, ValueError) as exc:
                        log.warning("%s failed: %s", tag, exc)
                        result = {"server": server, "scenario": scenario.id, "error": str(exc)}
                    result.update(repeat=rep, seconds=time.monotonic() - started)
                    attempts.append(result)
                    busy = background(result)
                    if max_background is None or busy <= max_background or len(attempts) >= tries:
                        break
                    progress(f"  {tag}: other processes used {busy:.0%} of a core, again")
                    time.sleep(5)
                result = min(attempts, key=background)
                result["attempts"] = len(attempts)
                results.append(result)
                progress(f"[{len(results)}/{total}] {tag}: {summary(result)}")
    return results


def summary(result: dict) -> str:
    """Return a one-line account of a run for progress output."""
    if "error" in result:
        return f"error: {result['error']}"
    load = result["load"]
    parts = [f"{result['seconds']:.0f} s"]
    if load["sent"]:
        parts += [
            f"{load['deliveries_per_s']:.0f} deliveries/s",
            f"lost {load['lost']} dup {load['duplicates']} ooo {load['out_of_order']}",
            f"p99 {load['latency_ms']['p99']} ms",
        ]
        if load.get("misrouted"):
            parts.append(f"misrouted {load['misrouted']}")
        if result["cpu_per_delivery_us"] is not None:
            parts.append(f"{result['cpu_per_delivery_us']:.1f} µs CPU/delivery")
        if result.get("redis_cpu_per_delivery_us") is not None:
            parts.append(f"+ Redis {result['redis_cpu_per_delivery_us']:.1f} µs")
        commands = sorted(result.get("redis_commands", {}).items(), key=lambda item: -item[1]["per_message"])
        if commands:
            parts.append("Redis per message " + " ".join(f"{name} {c['per_message']:.2f}" for name, c in commands[:3]))
    else:
        parts += [f"{result['rss_per_conn_kb']:.0f} KB/conn", f"{result['threads_per_conn']:.2f} threads/conn"]
    storm = result["connect"].get("storm")
    if storm and storm["joined_s"] is not None:
        parts.append(
            f"joined {storm['joined']}/{result['connect']['clients']} in {storm['joined_s']:.2f} s, "
            f"presence/client max {storm['presence_per_client']['max']:.0f}"
        )
    if "connections_per_worker" in result:
        parts.append(f"connections per worker {result['connections_per_worker']}")
    if load["close_codes"]:
        parts.append(f"closes {load['close_codes']}")
    if load["gen_saturated"]:
        parts.append("GENERATOR SATURATED")
    for key in ("stalled", "extra"):
        if key in result["end"]:
            parts.append(f"{key} {result['end'][key]}")
    return ", ".join(parts)
