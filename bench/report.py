"""Summarise runs as median [min–max]: a markdown table, a JSON file and a chart."""

import json
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.scenarios import Scenario
from bench.servers import SERVERS, counterpart

BACKGROUND_WARNING = 0.15
BEHIND = 0.95
LEGEND = """\
Deliveries/s: messages received, summed over all clients, from the first send to the last delivery.
Received/expected: expected is messages sent × clients open in the sender's room; lost is what had not
arrived by the end of the run (10 s after the last send at most, or 2 s without any delivery); dup and
ooo are duplicates and messages that arrived after a later one from the same sender; wrong room counts
messages that reached a client of another room. A server "falls behind" at a fixed rate when it
delivers less than 95% of the offered deliveries/s (expected deliveries per second of sending).
Latency: from send to receipt on every client, one clock (sender and receivers share a process).
Server CPU: user + system time of all the server's processes during the measured phase, per delivery;
Redis CPU: the same for the run's own redis-server (on the server's CPU), not included in Server CPU.
Connect s: time to open all clients, 100 handshakes at a time (200 in the storms).
Storms: "joined" is when the last client had its welcome (Node and the other peers send none: when the
last handshake completed); presence frames are the state-3 frames (other than its welcome) each client
received from its handshake until presence traffic settled."""


def spread(values: list[float]) -> dict | None:
    """Return median, min and max of values, or None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def number(value: float) -> str:
    """Format a number with about three significant digits."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(stats: dict | None, fmt: Callable[[float], str] = number) -> str:
    """Format median [min–max]."""
    if stats is None:
        return "–"
    if stats["min"] == stats["max"]:
        return fmt(stats["median"])
    return f"{fmt(stats['median'])} [{fmt(stats['min'])}–{fmt(stats['max'])}]"


def ratio(a: dict | None, b: dict | None) -> float | None:
    """Return the ratio of two medians, or None when either is missing or b is zero."""
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def summarise(runs: list[dict], scenarios: dict[int, Scenario], server_names: list[str]) -> list[dict]:
    """Aggregate the runs of each scenario and server into one row, and relate rows to each other.

    A row is compared with node's (CPU), with its scenario's ``compare``
    scenario (p99, deliveries/s, CPU), a Redis row with the memory row of the
    same worker class (CPU with Redis's), and a row of several workers with
    the row of one (deliveries/s, CPU).
    """
    rows = []
    for sid, scenario in scenarios.items():
        for server in server_names:
            mine = [r for r in runs if r["scenario"] == sid and r["server"] == server]
            if mine:
                rows.append(row(scenario, server, mine))

    def find(sid: int | None, server: str | None) -> dict | None:
        return next((o for o in rows if o["scenario"] == sid and o["server"] == server), None)

    for r in rows:
        node = find(r["scenario"], "node")
        if node and ratio(r["cpu_per_delivery_us"], node["cpu_per_delivery_us"]):
            r["cpu_vs_node"] = ratio(r["cpu_per_delivery_us"], node["cpu_per_delivery_us"])
        if node and ratio(r.get("joined_s"), node.get("joined_s")):
            r["joined_vs_node"] = ratio(r["joined_s"], node["joined_s"])
        sid = scenarios[r["scenario"]].compare
        base = find(sid, r["server"])
        if base and (ratio(r["p99_ms"], base["p99_ms"]) or ratio(r["total_cpu_us"], base["total_cpu_us"])):
            r["compared_with"] = sid
            r["p99_vs_baseline"] = ratio(r["p99_ms"], base["p99_ms"])
            r["rate_vs_baseline"] = ratio(r["deliveries_per_s"], base["deliveries_per_s"])
            r["cpu_vs_baseline"] = ratio(r["total_cpu_us"], base["total_cpu_us"])
            r["net_cpu_vs_baseline"] = ratio(r["net_cpu_us"], base["net_cpu_us"])
        spec = SERVERS.get(r["server"])
        if spec is None:
            continue
        if spec.backend == "redis":
            memory = find(r["scenario"], counterpart(r["server"], backend="memory", workers=1))
            if memory and ratio(r["total_cpu_us"], memory["total_cpu_us"]):
                r["memory_server"] = memory["server"]
                r["cpu_vs_memory"] = ratio(r["total_cpu_us"], memory["total_cpu_us"])
                r["net_cpu_vs_memory"] = ratio(r["net_cpu_us"], memory["net_cpu_us"])
                r["p99_vs_memory"] = ratio(r["p99_ms"], memory["p99_ms"])
        if spec.workers > 1:
            single = find(r["scenario"], counterpart(r["server"], workers=1))
            if single and ratio(r["deliveries_per_s"], single["deliveries_per_s"]):
                r["single_server"] = single["server"]
                r["rate_vs_single"] = ratio(r["deliveries_per_s"], single["deliveries_per_s"])
                r["cpu_vs_single"] = ratio(r["total_cpu_us"], single["total_cpu_us"])
    return rows


def row(scenario: Scenario, server: str, runs: list[dict]) -> dict:
    """Aggregate the repeats of one scenario against one server."""
    ok = [r for r in runs if "error" not in r]
    loads = [r["load"] for r in ok]

    def each(get: Callable[[dict], float]) -> dict | None:
        return spread([get(r) for r in ok])

    closes: Counter = Counter()
    for load in loads:
        closes.update(load["close_codes"])
    storms = [r["connect"]["storm"] for r in ok if r["connect"].get("storm")]
    redis = [r for r in ok if "redis_cpu_s" in r]
    out = {
        "scenario": scenario.id,
        "title": scenario.title,
        "mode": scenario.mode,
        "rooms": scenario.rooms,
        "server": server,
        "runs": len(runs),
        "errors": [r["error"] for r in runs if "error" in r],
        "expected": sum(x["expected"] for x in loads),
        "received": sum(x["received"] for x in loads),
        "lost": sum(x["lost"] for x in loads),
        "duplicates": sum(x["duplicates"] for x in loads),
        "out_of_order": sum(x["out_of_order"] for x in loads),
        "misrouted": sum(x.get("misrouted", 0) for x in loads),
        "deliveries_per_s": each(lambda r: r["load"]["deliveries_per_s"]) if scenario.delivers else None,
        "offered_per_s": each(offered) if scenario.mode == "rate" else None,
        "lag_s": each(lambda r: r["load"]["window_s"] - r["load"]["send_s"]) if scenario.delivers else None,
        "p50_ms": each(lambda r: r["load"]["latency_ms"]["p50"]),
        "p99_ms": each(lambda r: r["load"]["latency_ms"]["p99"]),
        "max_ms": each(lambda r: r["load"]["latency_ms"]["max"]),
        "cpu_per_delivery_us": each(lambda r: r["cpu_per_delivery_us"]),
        "redis_cpu_per_delivery_us": each(lambda r: r.get("redis_cpu_per_delivery_us")) if redis else None,
        "total_cpu_us": each(total_cpu),
        "idle_cpu_us": each(lambda r: r.get("idle_cpu_per_delivery_us")),
        "server_cores": each(lambda r: r.get("server_cores")),
        "generator_cores": each(lambda r: r["load"]["gen_cpu_s"] / max(r["load"]["gen_wall_s"], 1e-9)),
        "net_cpu_us": each(lambda r: total_cpu(r) - r["idle_cpu_per_delivery_us"]
                           if "idle_cpu_per_delivery_us" in r and total_cpu(r) is not None else None),
        "redis_kb_per_conn": each(
            lambda r: (r["redis_rss_kb"]["loaded"] - r["redis_rss_kb"]["empty"]) / max(r["load"]["open"], 1)
        ) if redis else None,
        "connections_per_worker": [r["connections_per_worker"] for r in ok if "connections_per_worker" in r],
        "connect_s": each(lambda r: r["connect"]["connect_s"]),
        "rss_per_conn_kb": each(lambda r: r["rss_per_conn_kb"]),
        "rss_growth_mb": each(lambda r: (r["rss_kb"]["after"] - r["rss_kb"]["loaded"]) / 1024),
        "threads_per_conn": each(lambda r: r["threads_per_conn"]),
        "heartbeat_coverage": each(lambda r: r.get("heartbeat_coverage")),
        "heartbeats": each(lambda r: r["load"]["heartbeats"]),
        "close_codes": dict(closes),
        "failed_connects": sum(r["connect"]["failed"] for r in ok),
        "short_open": [r["connect"]["open"] for r in ok if r["connect"]["open"] < r["connect"]["clients"]],
        "generator_saturated": sum(1 for x in loads if x["gen_saturated"]),
        "background_cpu": each(lambda r: r["other_cpu_s"] / max(r.get("measured_s") or r["load"]["gen_wall_s"], 1e-9)),
        "server_died": sum(1 for r in ok if not r["server_alive"]),
        "stalled": [r["end"]["stalled"] for r in ok if "stalled" in r["end"]],
        "extra": [r["end"]["extra"] for r in ok if "extra" in r["end"]],
        "storm": scenario.storm,
        "scaling": scenario.scaling,
        "retried": sum(r.get("attempts", 1) - 1 for r in runs),
    }
    if storms:
        out.update(
            joined_s=spread([x["joined_s"] for x in storms]),
            joined_short=[(x["joined"], r["connect"]["clients"]) for x, r in zip(storms, ok, strict=True)
                          if x["joined"] < r["connect"]["clients"]],
            welcomed=min(x["welcomed"] for x in storms),
            presence_max=spread([x["presence_per_client"]["max"] for x in storms]),
            presence_mean=spread([x["presence_per_client"]["mean"] for x in storms]),
            welcome_bytes_max=max(x["welcome_bytes_max"] for x in storms),
            connect_cpu_s=each(lambda r: r["connect_cpu_s"] + r.get("redis_connect_cpu_s", 0.0)),
            connect_background=each(lambda r: r["connect_other_cpu_s"] / max(r["connect_wall_s"], 1e-9)),
        )
    return out


def total_cpu(run: dict) -> float | None:
    """Return the server's CPU per delivery with its redis-server's added, if it has one."""
    cpu = run["cpu_per_delivery_us"]
    if cpu is None:
        return None
    return cpu + (run.get("redis_cpu_per_delivery_us") or 0.0)


def offered(run: dict) -> float:
    """Return the deliveries per second a fixed-rate run asked for: messages sent times clients, per second."""
    load = run["load"]
    return load["expected"] / load["send_s"] if load["send_s"] else 0.0


def behind(r: dict) -> bool:
    """Return whether a fixed-rate row delivered less than BEHIND of what was offered."""
    rate, asked = r.get("deliveries_per_s"), r.get("offered_per_s")
    return bool(rate and asked and rate["median"] < BEHIND * asked["median"])


def flags(r: dict) -> list[str]:
    """Return short words for what is wrong with a row, for the chart."""
    found = []
    if behind(r):
        found.append("behind")
    if r["lost"]:
        found.append("lost")
    if r["out_of_order"]:
        found.append("ooo")
    if r["duplicates"]:
        found.append("dup")
    if r.get("misrouted"):
        found.append("wrong room")
    if r["generator_saturated"]:
        found.append("gen sat")
    return found


def notes(r: dict) -> str:
    """Return the scenario-specific findings of a row as a short phrase."""
    parts = []
    if behind(r):
        parts.append(
            f"falls behind: {r['deliveries_per_s']['median'] / r['offered_per_s']['median']:.0%} of the offered "
            f"{number(r['offered_per_s']['median'])} deliveries/s, the last delivery {cell(r['lag_s'])} s "
            "after the last send"
        )
    if r["lost"]:
        parts.append(f"{r['lost']:,} messages not delivered by the end of the drain")
    if r["out_of_order"]:
        parts.append(f"reorders: {r['out_of_order']:,} arrived after a later message of the same sender")
    if r["duplicates"]:
        parts.append(f"{r['duplicates']:,} delivered twice")
    if r.get("misrouted"):
        parts.append(f"{r['misrouted']:,} reached a client of another room")
    if r.get("redis_cpu_per_delivery_us"):
        text = f"worker + Redis {cell(r['total_cpu_us'])} µs per delivery"
        if "cpu_vs_memory" in r:
            text += f" ({r['cpu_vs_memory']:.2f}× {r['memory_server']}'s"
            if r.get("p99_vs_memory"):
                text += f", p99 {r['p99_vs_memory']:.2f}×"
            text += ")"
        parts.append(text)
    if r.get("idle_cpu_us"):
        text = (
            f"of that, holding the idle connections (heartbeats; measured with nobody sending) "
            f"{cell(r['idle_cpu_us'])} µs, delivering {cell(r['net_cpu_us'])} µs"
        )
        if r.get("net_cpu_vs_memory"):
            text += f" ({r['net_cpu_vs_memory']:.2f}× {r['memory_server']}'s)"
        parts.append(text)
    if "rate_vs_single" in r:
        parts.append(
            f"{r['rate_vs_single']:.2f}× the deliveries/s of {r['single_server']} (1 worker), "
            f"CPU per delivery {r['cpu_vs_single']:.2f}×"
        )
    if r.get("rooms") and r.get("redis_kb_per_conn"):
        parts.append(f"Redis RSS +{cell(r['redis_kb_per_conn'])} KB per room of 1 client")
    if r.get("connections_per_worker"):
        splits = ", ".join(" / ".join(f"{n:,}" for n in split) for split in r["connections_per_worker"])
        parts.append(f"sockets per worker (each run) {splits}")
    if r.get("storm") and r.get("joined_s"):
        text = f"all joined in {cell(r['joined_s'])} s" if not r["joined_short"] else (
            f"joined in {cell(r['joined_s'])} s, but only {', '.join(f'{a:,}/{b:,}' for a, b in r['joined_short'])}"
        )
        text += (
            f"; presence frames per client max {cell(r['presence_max'], lambda v: f'{v:,.0f}')}, "
            f"mean {cell(r['presence_mean'], lambda v: f'{v:,.1f}')}"
        )
        if r["welcome_bytes_max"]:
            text += f"; welcome ≤ {r['welcome_bytes_max']:,} bytes"
        who = "server + Redis" if r.get("redis_cpu_per_delivery_us") or r.get("redis_kb_per_conn") else "server"
        text += f"; {who} CPU during the storm {cell(r['connect_cpu_s'])} s"
        if r["connect_background"] and r["connect_background"]["max"] > BACKGROUND_WARNING:
            text += f" (other load meanwhile up to {r['connect_background']['max']:.0%} of a core)"
        parts.append(text)
    if r["mode"] == "idle" and not r.get("storm") and r["rss_per_conn_kb"]:
        parts.append(f"{cell(r['rss_per_conn_kb'])} KB, {cell(r['threads_per_conn'])} threads per connection")
    if r["scenario"] == 6 and r["heartbeat_coverage"]:
        parts.append(
            f"{cell(r['heartbeat_coverage'], lambda v: f'{v:.0%}')} of connections got a heartbeat in the window "
            f"({cell(r['heartbeats'])} heartbeats)"
        )
    if r["stalled"]:
        codes = Counter(str(s["close_code"] or "still open") for s in r["stalled"])
        queued = statistics.median(s["bytes_buffered"] for s in r["stalled"]) / 1024
        parts.append(
            f"stalled client, once it reads again: {', '.join(f'{k} ×{v}' for k, v in codes.items())} "
            f"after {queued:,.0f} KB; server RSS grew {cell(r['rss_growth_mb'])} MB"
        )
    if "compared_with" in r:
        versus = [
            f"{what} {value:.2f}×"
            for what, value in (
                ("p99", r["p99_vs_baseline"]), ("deliveries/s", r["rate_vs_baseline"]),
                ("CPU per delivery", r["cpu_vs_baseline"]), ("delivering alone", r["net_cpu_vs_baseline"]),
            )
            if value is not None
        ]
        parts.append(f"{', '.join(versus)} scenario {r['compared_with']}")
    if r["extra"]:
        outcomes = Counter(e["outcome"] for e in r["extra"])
        times = [e["end_ms"] for e in r["extra"] if e["end_ms"] is not None]
        text = ", ".join(f"{k} ×{v}" for k, v in outcomes.items())
        if times:
            text += f" in {statistics.median(times):.0f} ms"
        parts.append(f"connection past the limit: {text}")
    if r["close_codes"]:
        parts.append("closes " + ", ".join(f"{k} ×{v}" for k, v in sorted(r["close_codes"].items())))
    if r["failed_connects"]:
        parts.append(f"{r['failed_connects']} connects failed")
    if r["short_open"]:
        parts.append(
            f"clients closed before the measured phase in {len(r['short_open'])}/{r['runs']} runs "
            f"({min(r['short_open']):,} open at the least)"
        )
    if r["generator_saturated"]:
        parts.append(f"generator saturated in {r['generator_saturated']}/{r['runs']} runs")
    if r["background_cpu"] and r["background_cpu"]["max"] > BACKGROUND_WARNING:
        parts.append(f"other load on the machine up to {r['background_cpu']['max']:.0%} of a core")
    if r.get("retried"):
        parts.append(f"{r['retried']} attempts made again for other load")
    if r["server_died"]:
        parts.append(f"server died in {r['server_died']} runs")
    if r["errors"]:
        parts.append(f"{len(r['errors'])} runs failed: {r['errors'][0]}")
    return "; ".join(parts)


def correctness(r: dict) -> str:
    """Format received of expected with lost, duplicate and reordered counts."""
    if not r["expected"]:
        return "–"
    text = f"{r['received']:,}/{r['expected']:,}"
    kinds = (("lost", "lost"), ("dup", "duplicates"), ("ooo", "out_of_order"), ("wrong room", "misrouted"))
    bad = [(n, r.get(k, 0)) for n, k in kinds if r.get(k, 0)]
    if bad:
        text += " (" + ", ".join(f"{n} {v:,}" for n, v in bad) + ")"
    return text


def table(rows: list[dict]) -> str:
    """Render the rows as one markdown table (with a Redis CPU column when a row ran on Redis)."""
    redis = any(r.get("redis_cpu_per_delivery_us") for r in rows)
    head = [
        "Scenario", "Server", "Deliveries/s", "Received/expected", "p50 ms", "p99 ms", "max ms",
        "Server CPU µs/delivery", *(["Redis CPU µs/delivery"] if redis else []), "CPU vs node", "Connect s", "Notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        versus = f"{r['cpu_vs_node']:.2f}×" if "cpu_vs_node" in r else "–"
        lines.append("| " + " | ".join([
            f"{r['scenario']}. {r['title']}", r["server"], cell(r["deliveries_per_s"]), correctness(r),
            cell(r["p50_ms"]), cell(r["p99_ms"]), cell(r["max_ms"]), cell(r["cpu_per_delivery_us"]),
            *([cell(r.get("redis_cpu_per_delivery_us"))] if redis else []),
            versus, cell(r["connect_s"]), notes(r),
        ]) + " |")
    return "\n".join(lines)


def change(before: dict | None, after: dict | None) -> str:
    """Format a before → after pair of medians with their ratio."""
    if not before or not after:
        return "–"
    text = f"{number(before['median'])} → {number(after['median'])}"
    if before["median"]:
        text += f" ({after['median'] / before['median']:.2f}×)"
    return text


def before_after(rows: list[dict]) -> str:
    """Render each row of a baseline server (an earlier commit) beside the working tree's row, or ""."""
    lines = []
    for old in rows:
        spec = SERVERS.get(old["server"])
        if spec is None or spec.ref is None:
            continue
        name = old["server"].removesuffix(f"-{spec.ref[:7]}")
        new = next((r for r in rows if r["scenario"] == old["scenario"] and r["server"] == name), None)
        if new is None:
            continue
        lines.append("| " + " | ".join([
            f"{new['scenario']}. {new['title']}", name, spec.ref[:7],
            change(old["total_cpu_us"], new["total_cpu_us"]), change(old["p99_ms"], new["p99_ms"]),
            change(old["rss_per_conn_kb"], new["rss_per_conn_kb"]) if old["mode"] == "idle" else "–",
        ]) + " |")
    if not lines:
        return ""
    head = ["Scenario", "Server", "Before", "CPU µs/delivery before → after", "p99 ms before → after",
            "KB per idle connection before → after"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])


def markdown(head: list[str], lines: list[list[str]]) -> str:
    """Render a head and rows of cells as a markdown table, or "" when there are no rows."""
    if not lines:
        return ""
    return "\n".join(["| " + " | ".join(x) + " |" for x in [head, ["---"] * len(head), *lines]])


def rooms(rows: list[dict]) -> str:
    """Render the rows of scenarios with rooms (but no worker scaling): CPU with Redis's, its idle share, p99."""
    lines = [
        [
            f"{r['scenario']}. {r['title']}", r["server"], cell(r["deliveries_per_s"]), correctness(r),
            cell(r["p99_ms"]), cell(r["cpu_per_delivery_us"]), cell(r.get("redis_cpu_per_delivery_us")),
            cell(r["total_cpu_us"]) + (f" ({r['cpu_vs_memory']:.2f}×)" if "cpu_vs_memory" in r else ""),
            cell(r["idle_cpu_us"]), cell(r["net_cpu_us"]),
            f"{r['cpu_vs_baseline']:.2f}× scenario {r['compared_with']}" if r.get("cpu_vs_baseline") else "–",
        ]
        for r in rows
        if r.get("rooms") and not r.get("scaling")
    ]
    head = [
        "Scenario", "Server", "Deliveries/s", "Received/expected", "p99 ms", "Worker CPU µs/message",
        "Redis CPU µs/message", "Worker + Redis (vs memory)", "of which idle connections", "delivering alone",
        "Per message vs fewer rooms",
    ]
    return markdown(head, lines)


def storms(rows: list[dict]) -> str:
    """Render the rows of the join storms: time until all joined, presence frames per client, CPU meanwhile."""
    lines = [
        [
            f"{r['scenario']}. {r['title']}", r["server"],
            f"{r['welcomed']:,}" if SERVERS.get(r["server"]) and SERVERS[r["server"]].chat else "no welcome",
            cell(r["joined_s"]), f"{r['joined_vs_node']:.2f}×" if "joined_vs_node" in r else "–",
            cell(r["presence_max"], lambda v: f"{v:,.0f}"),
            cell(r["presence_mean"], lambda v: f"{v:,.1f}"),
            f"{r['welcome_bytes_max']:,}" if r["welcome_bytes_max"] else "–", cell(r["connect_cpu_s"]),
        ]
        for r in rows
        if r.get("storm") and r.get("joined_s")
    ]
    head = [
        "Scenario", "Server", "Welcomed (least of the runs)", "All joined s", "vs node",
        "Presence frames per client, max",
        "mean", "Largest welcome, bytes", "Server CPU s during the storm",
    ]
    return markdown(head, lines)


def workers(rows: list[dict]) -> str:
    """Render the rows of the scenarios that compare gunicorn workers: capacity and its scaling, or ""."""
    lines = []
    for r in rows:
        spec = SERVERS.get(r["server"])
        if spec is None or not r.get("scaling"):
            continue
        lines.append("| " + " | ".join([
            f"{r['scenario']}. {r['title']}", r["server"], spec.backend, str(spec.workers),
            cell(r["deliveries_per_s"]), cell(r["total_cpu_us"]),
            f"{r['rate_vs_single']:.2f}×" if "rate_vs_single" in r else "–",
            cell(r["server_cores"]), cell(r["generator_cores"]),
        ]) + " |")
    if not lines:
        return ""
    head = ["Scenario", "Server", "Backend", "Workers", "Deliveries/s", "CPU µs/delivery (with Redis)",
            "Deliveries/s vs 1 worker", "Cores used by server + Redis", "Cores used by the generator"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])


CHART_PANELS = (
    ("deliveries_per_s", "Deliveries per second (higher is better)", "log"),
    ("p99_ms", "p99 latency, ms (lower is better)", "log"),
    ("cpu_per_delivery_us", "Server CPU µs per delivery (lower is better)", "log"),
    ("rss_per_conn_kb", "KB per idle connection (lower is better)", "linear"),
)


def chart(rows: list[dict], path: Path, caption: str = "") -> None:
    """Draw deliveries/s, p99 latency, CPU per delivery and memory per connection into a PNG.

    The first three panels show the scenarios that deliver messages, the last one
    the idle scenarios; a bar whose row needs a note is labelled with its flags.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    busy = [r for r in rows if r["deliveries_per_s"] and r["p99_ms"]]
    idle = [r for r in rows if not r["deliveries_per_s"] and r["rss_per_conn_kb"]]
    if not busy and not idle:
        return
    servers = list(dict.fromkeys(r["server"] for r in rows))
    colours = {server: plt.cm.tab10(i % 10) for i, server in enumerate(servers)}
    fig, axes = plt.subplots(1, len(CHART_PANELS), figsize=(20, 5.2), width_ratios=[3, 3, 3, 1.6])
    width = 0.8 / len(servers)
    for ax, (key, title, scale) in zip(axes, CHART_PANELS, strict=True):
        shown = idle if key == "rss_per_conn_kb" else busy
        scenarios = sorted({r["scenario"] for r in shown})
        for i, server in enumerate(servers):
            for j, sid in enumerate(scenarios):
                r = next((r for r in shown if r["scenario"] == sid and r["server"] == server), None)
                if not r or not r[key]:
                    continue
                x = j + (i - (len(servers) - 1) / 2) * width
                value = r[key]["median"]
                ax.bar(
                    x, value, width, color=colours[server],
                    yerr=[[value - r[key]["min"]], [r[key]["max"] - value]], capsize=2,
                )
                marks = flags(r) if key == "deliveries_per_s" else []
                if marks:
                    ax.annotate(
                        ", ".join(marks), (x, r[key]["max"]), xytext=(0, 3), textcoords="offset points",
                        rotation=90, ha="center", va="bottom", fontsize=6,
                    )
        ax.set_xticks(range(len(scenarios)), [f"scenario {sid}" for sid in scenarios])
        ax.set_title(title, fontsize=10)
        ax.set_yscale(scale)
        ax.margins(y=0.25)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in servers]
    fig.legend(handles, servers, loc="lower center", ncol=len(servers), fontsize=9, frameon=False)
    if caption:
        fig.suptitle(caption, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, **content) -> None:
    """Write the results as indented JSON."""
    path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
