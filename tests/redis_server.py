"""Real redis-server processes for tests: one shared per session, and restartable ones for chaos."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
import redis
from ports import bus_free_port, free_port

__all__ = ["RedisCluster", "RedisServer", "clean_cluster_url", "clean_redis_url", "cluster_url", "redis_binary",
           "redis_cluster", "redis_url"]


def redis_binary() -> str:
    """Return the path of redis-server, or skip the test when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not on PATH: install it (apt-get install redis-server) to run the Redis tests")
    return path


class RedisServer:
    """Run one redis-server on a fixed port, with an fsync-always AOF when persistent."""

    def __init__(self, persistent: bool = False, directory: Path | None = None, cluster: bool = False) -> None:
        self.binary = redis_binary()
        self.port = bus_free_port() if cluster else free_port()
        self.cluster = cluster
        self.persistent = persistent
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="chat-redis-")
        self.directory = Path(directory if directory is not None else self._tmp.name)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        clustering = (
            ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
             "--cluster-node-timeout", "2000"]
            if self.cluster else []
        )
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            *persistence, *clustering, "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning",
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start redis-server and wait until it answers PING."""
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    text = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {text}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop redis-server (SIGKILL to crash it) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> RedisServer:
        """Stop redis-server and start it again on the same port with the same data directory."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop redis-server and remove its data directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class RedisCluster:
    """Run a Redis Cluster of three primaries (each with replicas replicas) on free ports, each node restartable."""

    def __init__(self, persistent: bool = True, replicas: int = 0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="chat-cluster-")
        self.replicas = replicas
        self.nodes = []
        for index in range(3 * (1 + replicas)):
            directory = Path(self._tmp.name) / f"node{index}"
            directory.mkdir()
            self.nodes.append(RedisServer(persistent, directory, cluster=True))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start the nodes, join them into one cluster, and wait until every node agrees every slot is served."""
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "redis-cli"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )
        self.wait_ok(timeout)
        self.wait_synced(timeout)
        return self

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until every running replica has its primary's data (a replica that never synced never takes over)."""
        deadline = time.monotonic() + timeout
        for node in self.running():
            while True:
                client = self.client(node)
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                if info["role"] == "master" or info.get("master_link_status") == "up":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica on {node.port} did not sync")
                time.sleep(0.05)

    def client(self, node: RedisServer) -> redis.Redis:
        """Return a plain client of one node (close it after use)."""
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, socket_connect_timeout=2)

    def running(self) -> list[RedisServer]:
        """Return the nodes whose process runs."""
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def ask(self, node: RedisServer, *command: str) -> object:
        """Run one command on node and return its answer."""
        client = self.client(node)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def view(self, node: RedisServer) -> dict[int, int]:
        """Return which primary (by port) serves each slot range start, as node sees it."""
        return {int(start): int(primary[1]) for start, end, primary, *_ in self.ask(node, "CLUSTER", "SLOTS")}

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports cluster_state:ok, all slots ok, and all see the same primaries."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                infos = [self.ask(node, "CLUSTER", "INFO") for node in self.running()]
                views = [self.view(node) for node in self.running()]
                ready = all(b"cluster_state:ok" in info and b"cluster_slots_ok:16384" in info for info in infos)
                if ready and all(view == views[0] for view in views):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ready")
            time.sleep(0.05)

    def node_for(self, key: str) -> RedisServer:
        """Return the node that serves key's slot."""
        slot = self.slot(key)
        for start, end, primary, *_ in self.ask(self.running()[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no node serves the slot of {key}")

    def slot(self, key: str) -> int:
        """Return the cluster slot of key."""
        return int(self.ask(self.running()[0], "CLUSTER", "KEYSLOT", key))

    def node_id(self, node: RedisServer) -> str:
        """Return a node's cluster id."""
        return self.ask(node, "CLUSTER", "MYID").decode()

    def primaries(self) -> list[RedisServer]:
        """Return the running nodes that are primaries."""
        return [node for node in self.running() if self.ask(node, "ROLE")[0] == b"master"]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """Return a running replica of primary."""
        wanted = self.node_id(primary)
        for node in self.running():
            if node is not primary:
                info = self.ask(node, "CLUSTER", "NODES").decode()
                mine = next(line for line in info.splitlines() if "myself" in line).split()
                if "slave" in mine[2] and mine[3] == wanted:
                    return node
        raise RuntimeError(f"no replica of {primary.port}")

    def migrate(self, slot: int, target: RedisServer) -> None:
        """Move one slot to target the standard way: IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE on all."""
        source = next(node for node in self.nodes if node.port == self.view_slot(slot))
        target_id, source_id = self.node_id(target), self.node_id(source)
        self.ask(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        self.ask(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while True:
            names = self.ask(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            if not names:
                break
            self.ask(source, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *names)
        for node in [target, source, *[n for n in self.primaries() if n not in (target, source)]]:
            self.ask(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def view_slot(self, slot: int) -> int:
        """Return the port of the primary that serves slot, as the first running node sees it."""
        for start, end, primary, *_ in self.ask(self.running()[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def flushall(self) -> None:
        """Empty every primary."""
        for node in self.primaries():
            self.ask(node, "FLUSHALL")

    def cleanup(self) -> None:
        """Stop every node and remove their data."""
        for node in self.nodes:
            node.stop()
        self._tmp.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Start one three-primary Redis Cluster for the session."""
    redis_binary()
    running = RedisCluster().start()
    try:
        yield running
    finally:
        running.cleanup()


@pytest.fixture(scope="session")
def cluster_url(redis_cluster: RedisCluster) -> str:
    """Return the session cluster's redis+cluster:// URL."""
    return redis_cluster.url


@pytest.fixture
def clean_cluster_url(redis_cluster: RedisCluster) -> str:
    """Return the session cluster's URL after emptying every node."""
    redis_cluster.wait_ok()
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Start one non-persistent redis-server for the session and yield its URL."""
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """Return the session's redis URL after FLUSHALL."""
    flushall(redis_url)
    return redis_url


def flushall(url: str) -> None:
    """Make a redis-server forget everything, as a restart without persistence would."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()
