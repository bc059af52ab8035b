"""Benchmark the chat server against Node.js ws, websockets, picows, Flask-SocketIO and a tutorial server."""

import argparse
import dataclasses
import datetime
import logging
import subprocess
import sys
import time
from pathlib import Path

from bench import deps, proc, report, runner
from bench.scenarios import FULL, QUICK, scenarios
from bench.servers import SERVERS

RESULTS = Path(__file__).resolve().parent / "results"
OPEN_FILES = 16384


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
    """Parse a comma-separated list of server names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown servers: {', '.join(sorted(unknown))}")
    return names


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario and server (default 3, quick 1)")
    parser.add_argument(
        "--scenarios", type=id_list, default=None,
        help=f"e.g. 1,2 (default: all; quick: {','.join(map(str, QUICK))})",
    )
    parser.add_argument("--servers", type=name_list, default=list(SERVERS), help="e.g. chat,node (default: all)")
    parser.add_argument("--quick", action="store_true", help="small client counts and short runs, every server once")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.scenarios is None:
        args.scenarios = list(QUICK) if args.quick else list(FULL)
    return args


def node_version() -> str:
    """Return the version of node on PATH."""
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


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
    print(f"machine: {machine['nproc']} × {machine['cpu']}, kernel {machine['kernel']}, "
          f"Python {machine['python']}, Node {machine['node']}", flush=True)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    runs = runner.run_all(
        args.servers, list(chosen.values()), args.repeat, args.out / "logs",
        progress=lambda line: print(line, flush=True),
    )
    rows = report.summarise(runs, chosen, args.servers)
    text = report.table(rows)
    print()
    pinning = "Server pinned to CPU 1, load generator to CPU 0. " if proc.can_pin() else "No CPU pinning. "
    print(f"Machine: {machine['nproc']} × {machine['cpu']}, Linux {machine['kernel']}. {pinning}"
          f"Median [min–max] of {args.repeat} runs{' (quick)' if args.quick else ''}.")
    print()
    print(text)
    print()
    print(report.LEGEND)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(
        args.out / "latest.json",
        machine=machine,
        started=started.isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - clock),
        options={"repeat": args.repeat, "quick": args.quick, "servers": args.servers},
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
