"""Benchmark the chat server (memory and Redis, and earlier commits) against Node.js ws, websockets, picows,
Flask-SocketIO and a tutorial server."""

import argparse
import dataclasses
import datetime
import logging
import subprocess
import sys
import time
from pathlib import Path

from bench import baseline, deps, proc, report, runner, servers
from bench.scenarios import FULL, QUICK, scenarios
from bench.servers import SERVERS

RESULTS = Path(__file__).resolve().parent / "results"
OPEN_FILES = 20000


def id_list(text: str) -> list[int]:
    """Parse a comma-separated list of scenario numbers."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of scenario numbers: {text}") from None
    unknown = set(ids) - set(FULL)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios: {', '.join(map(str, sorted(unknown)))}")
    return ids


def name_list(text: str) -> list[str]:
    """Parse a comma-separated list of server names (checked once the baselines are known)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario and server (default 3, quick 1)")
    parser.add_argument(
        "--scenarios", type=id_list, default=None,
        help=f"e.g. 1,2 (default: all; quick: {','.join(map(str, QUICK))})",
    )
    parser.add_argument(
        "--servers", type=name_list, default=None,
        help="e.g. chat,node (default: all but chat-redis-w2, each scenario taking those that fit it)",
    )
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="REF",
        help="also measure this project at commit REF, as chat-<commit>, chat-gevent-<commit>, ... (repeatable)",
    )
    parser.add_argument(
        "--at", metavar="REF", default=None,
        help="run chat, chat-gevent, ... at commit REF (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--max-background", type=float, default=None, metavar="SHARE",
        help="make a run again (3 tries, the quietest kept) when other processes used more than SHARE of a core",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="give every chat server this setting, e.g. CHAT_STORE_URL=none (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="small client counts and short runs, every server once")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("CHAT_"):
            parser.error(f"--env wants CHAT_NAME=VALUE, not {item!r}")
        servers.CHAT_ENV[name] = value
    if args.at is not None:
        try:
            servers.CURRENT = baseline.resolve(args.at)
        except baseline.UnknownCommit as exc:
            parser.error(str(exc))
    added = []
    for ref in args.baseline:
        try:
            added += servers.add_baseline(ref)
        except baseline.UnknownCommit as exc:
            parser.error(str(exc))
    if args.servers is None:
        old = [name for name in added if SERVERS[name].backend == "memory" and SERVERS[name].workers == 1]
        args.servers = [*servers.DEFAULT, *old]
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)} (known: {', '.join(SERVERS)})")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.scenarios is None:
        args.scenarios = list(QUICK) if args.quick else list(FULL)
    return args


def node_version() -> str:
    """Return the version of node on PATH."""
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def tree_state() -> dict:
    """Return the commit chat, chat-gevent, ... run at and which of the server's files differ from it."""
    if servers.CURRENT is not None:
        return {"commit": servers.CURRENT, "changed": [], "exported": True}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=servers.ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "chat", "app.py", "gunicorn.conf.py", "requirements.txt"],
        cwd=servers.ROOT, capture_output=True, text=True,
    )
    return {"commit": head.stdout.strip(), "changed": changed.stdout.splitlines()}


def main(argv: list[str]) -> int:
    """Run the benchmark and write the table, JSON and chart."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        deps.ensure(peers=any(SERVERS[name].peers_venv for name in args.servers))
    except (deps.MissingTool, subprocess.CalledProcessError) as exc:
        print(f"bench: cannot install what the benchmark needs: {exc}", file=sys.stderr)
        return 2
    table = scenarios(args.quick)
    chosen = {sid: table[sid] for sid in args.scenarios}
    files = proc.raise_open_files(OPEN_FILES)
    machine = {**proc.machine(), "node": node_version(), "open_files": files}
    tree = tree_state()
    print(f"machine: {machine['nproc']} × {machine['cpu']}, kernel {machine['kernel']}, "
          f"Python {machine['python']}, Node {machine['node']}", flush=True)
    where = f"commit {tree['commit'][:7]}, exported" if servers.CURRENT else f"working tree at {tree['commit'][:7]}"
    print(f"chat server: {where}" + (f", with {len(tree['changed'])} changed files" if tree["changed"] else "")
          + (f"; settings {servers.CHAT_ENV}" if servers.CHAT_ENV else ""), flush=True)
    for name in args.servers:
        if SERVERS[name].ref:
            print(f"{name}: commit {SERVERS[name].ref}, from {SERVERS[name].root}", flush=True)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    runs = runner.run_all(
        args.servers, list(chosen.values()), args.repeat, args.out / "logs",
        progress=lambda line: print(line, flush=True), max_background=args.max_background,
    )
    rows = report.summarise(runs, chosen, args.servers)
    text = report.table(rows)
    print()
    pinning = "Server pinned to CPU 1, load generator to CPU 0. " if proc.can_pin() else "No CPU pinning. "
    print(f"Machine: {machine['nproc']} × {machine['cpu']}, Linux {machine['kernel']}. {pinning}"
          f"Median [min–max] of {args.repeat} runs{' (quick)' if args.quick else ''}.")
    print()
    print(text)
    for extra in (report.before_after(rows), report.rooms(rows), report.workers(rows), report.storms(rows)):
        if extra:
            print()
            print(extra)
    print()
    print(report.LEGEND)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(
        args.out / "latest.json",
        machine=machine,
        started=started.isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - clock),
        options={
            "repeat": args.repeat, "quick": args.quick, "servers": args.servers, "baseline": args.baseline,
            "at": args.at, "env": servers.CHAT_ENV, "max_background": args.max_background,
        },
        tree=tree,
        scenarios={sid: dataclasses.asdict(s) for sid, s in chosen.items()},
        summary=rows,
        table=text,
        runs=runs,
    )
    caption = f"{machine['nproc']} × {machine['cpu']}: median, bars min–max of {args.repeat} runs"
    report.chart(rows, args.out / "chart.png", caption=caption)
    print(f"\nwrote {args.out / 'latest.json'} and {args.out / 'chart.png'}")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
