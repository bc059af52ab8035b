"""Run scenarios against servers, interleaved, and measure each run."""

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from bench import proc, servers
from bench.generator import Generator, GeneratorError
from bench.scenarios import Scenario

log = logging.getLogger(__name__)


def measure(server: str, scenario: Scenario, logs: Path, tag: str) -> dict:
    """Run one scenario against a freshly started server and return what was measured."""
    run = secrets.token_hex(4)
    result: dict = {"server": server, "scenario": scenario.id, "run": run}
    with servers.start(server, scenario.connections, scenario.limit, log=logs / f"{tag}.server.log") as running:
        config = scenario.loadgen(running.url, run, running.protocol)
        with Generator(config, log=logs / f"{tag}.loadgen.log") as gen:
            gen.expect("ready", 30)
            empty = proc.sample(running.pid)
            gen.proceed()
            result["connect"] = gen.expect("connected", 180)
            loaded = proc.sample(running.pid)
            busy = proc.busy_s()
            gen.proceed()
            done = gen.expect("done", scenario.duration + 90)
            after = proc.sample(running.pid)
            busy = proc.busy_s() - busy
            gen.proceed()
            result["end"] = gen.expect("end", 60)
        result["server_alive"] = running.process.poll() is None
    result["load"] = done
    result.update(costs(empty, loaded, after, done, busy))
    if scenario.mode == "idle" and done["open"]:
        result["heartbeat_coverage"] = done["heartbeat_clients"] / done["open"]
    return result


def costs(empty: proc.Sample, loaded: proc.Sample, after: proc.Sample, done: dict, busy: float) -> dict:
    """Return the server's CPU, memory and thread costs from three samples of it."""
    cpu = after.cpu_s - loaded.cpu_s
    open_ = max(done["open"], 1)
    return {
        "server_cpu_s": cpu,
        "cpu_per_delivery_us": cpu / done["received"] * 1e6 if done["received"] else None,
        "other_cpu_s": max(0.0, busy - cpu - done["gen_cpu_s"]),
        "rss_kb": {"empty": empty.rss_kb, "loaded": loaded.rss_kb, "after": after.rss_kb},
        "threads": {"empty": empty.threads, "loaded": loaded.threads, "after": after.threads},
        "rss_per_conn_kb": (loaded.rss_kb - empty.rss_kb) / open_,
        "threads_per_conn": (loaded.threads - empty.threads) / open_,
    }


def run_all(
    server_names: list[str],
    scenarios: list[Scenario],
    repeat: int,
    logs: Path,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Run every scenario repeat times, servers interleaved A B C A B C, and return all runs."""
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    total = len(scenarios) * repeat * len(server_names)
    for scenario in scenarios:
        for rep in range(1, repeat + 1):
            for server in server_names:
                tag = f"s{scenario.id}-{server}-{rep}"
                started = time.monotonic()
                try:
                    result = measure(server, scenario, logs, tag)
                except (GeneratorError, RuntimeError, OSError, ValueError) as exc:
                    log.warning("%s failed: %s", tag, exc)
                    result = {"server": server, "scenario": scenario.id, "error": str(exc)}
                result.update(repeat=rep, seconds=time.monotonic() - started)
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
        if result["cpu_per_delivery_us"] is not None:
            parts.append(f"{result['cpu_per_delivery_us']:.1f} µs CPU/delivery")
    else:
        parts += [f"{result['rss_per_conn_kb']:.0f} KB/conn", f"{result['threads_per_conn']:.2f} threads/conn"]
    if load["close_codes"]:
        parts.append(f"closes {load['close_codes']}")
    if load["gen_saturated"]:
        parts.append("GENERATOR SATURATED")
    for key in ("stalled", "extra"):
        if key in result["end"]:
            parts.append(f"{key} {result['end'][key]}")
    return ", ".join(parts)
