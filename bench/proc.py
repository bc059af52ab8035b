"""Read what a process tree costs from /proc, and start processes pinned to a CPU."""

import os
import platform
import resource
import shutil
import socket
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """CPU time, resident memory and threads of a process tree at one moment."""

    at: float
    cpu_s: float
    rss_kb: int
    threads: int
    pids: int


def parents() -> dict[int, list[int]]:
    """Return the children of every process, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """Return pid and all its descendants."""
    children = parents()
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def sample(pid: int) -> Sample:
    """Sum CPU time (user + system), VmRSS and threads over pid's process tree."""
    cpu, rss, threads, count = 0, 0, 0, 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{p}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        cpu += int(fields[11]) + int(fields[12])
        rss += int(status.get("VmRSS", "0 kB").split()[0])
        threads += int(status.get("Threads", "0"))
        count += 1
    return Sample(time.monotonic(), cpu / TICK, rss, threads, count)


def sockets_per_child(pid: int) -> list[int]:
    """Return how many sockets each child of pid (each gunicorn worker) has open, in pid order."""
    counts = []
    for child in sorted(parents().get(pid, [])):
        try:
            fds = os.listdir(f"/proc/{child}/fd")
        except OSError:
            continue
        count = 0
        for fd in fds:
            with suppress(OSError):
                count += os.readlink(f"/proc/{child}/fd/{fd}").startswith("socket:")
        counts.append(count)
    return counts


def busy_s() -> float:
    """Return the CPU time all cores have spent running processes (user, nice, system) since boot."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / TICK


def can_pin() -> bool:
    """Return whether there are two CPUs and taskset to pin server and generator apart."""
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(cmd: list[str], cpu: int) -> list[str]:
    """Prefix cmd with taskset so it runs on one CPU, where that is possible."""
    return ["taskset", "-c", str(cpu), *cmd] if can_pin() else cmd


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, timeout: float = 20.0) -> bool:
    """Wait until something answers HTTP on port; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.1)
    return False


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-file limit toward wanted; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def machine() -> dict:
    """Describe the CPU, core count and kernel of this machine."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
