"""Define the load scenarios, at full size and in a quick variant, and which servers each one fits."""

import time
from dataclasses import dataclass, replace

import jwt

from bench.servers import JWT_SECRET, Server


@dataclass(frozen=True)
class Scenario:
    """One load shape: how many clients in how many rooms, who sends, how fast, for how long.

    ``rooms`` > 0 spreads the clients over that many rooms (client i in room
    i mod rooms, sender i sending into its own); ``query`` is added to every
    connection's URL to a chat server; ``concurrency`` is the handshakes in flight while the
    clients connect; ``storm`` marks a scenario about that connect phase (the
    time until every client has joined, the presence frames each received).
    Which servers run it: ``chat_only`` for this project's servers alone,
    ``worker`` for those under that gunicorn worker class alone, ``threads``
    False to leave out servers that hold a thread per connection, and
    ``scaling`` for a scenario that compares gunicorn workers: only it runs
    servers with several workers, and it runs servers (and Redis) on every
    CPU instead of pinning them. ``compare`` names the scenario whose row of
    the same server this one's is compared with. ``quiet`` > 0 measures
    the server's CPU for that many seconds with every client connected and
    nobody sending, before the measured phase: what holding the connections
    costs (heartbeats), so that it can be told apart from what delivering costs.
    """

    id: int
    title: str
    clients: int
    mode: str
    senders: int = 0
    rate: int = 0
    duration: float = 6.0
    window: int = 20
    stall: bool = False
    limit: int | None = None
    rooms: int = 0
    query: str = ""
    concurrency: int = 100
    storm: bool = False
    chat_only: bool = False
    worker: str | None = None
    threads: bool = True
    scaling: bool = False
    compare: int | None = None
    quiet: float = 0.0
    #: Every changes-th message a sender also sends a change (a reaction or an edit) to its latest message.
    changes: int = 0

    @property
    def connections(self) -> int:
        """Return how many connections are open at once during the measured phase."""
        return self.clients + (1 if self.stall else 0)

    @property
    def delivers(self) -> bool:
        """Return whether messages are sent, so throughput and latency mean something."""
        return self.mode != "idle"

    def fits(self, server: Server) -> bool:
        """Tell whether this scenario runs against server."""
        if server.workers > 1 and not self.scaling:
            return False
        if (self.rooms or self.chat_only or self.worker or self.scaling) and not server.chat:
            return False
        if self.worker is not None and server.worker != self.worker:
            return False
        return self.threads or not server.threaded

    def loadgen(self, url: str, run: str, protocol: str = "ws", chat: bool = False) -> dict:
        """Return the configuration for bench/loadgen.js against this project's server (chat) or a peer.

        The chat server greets each joiner, so the generator waits for the
        welcomes; the query (v=2) is for it alone, since the peers route on the
        whole path.
        """
        return {
            "url": url,
            "protocol": protocol,
            "run": run,
            "clients": self.clients,
            "senders": self.senders,
            "mode": self.mode,
            "rate": self.rate,
            "duration": self.duration,
            "window": self.window,
            "stall": self.stall,
            "extra": self.limit is not None,
            "rooms": self.rooms,
            "query": self.query if chat else "",
            "connectConcurrency": self.concurrency,
            "changes": self.changes if chat else 0,
            "welcome": chat,
            "settleMax": 60 if self.storm else 30,
        }


def storm(sid: int, clients: int, v2: bool = True, **options) -> Scenario:
    """Return a join storm: clients into one room, 200 handshakes in flight, then a second of idling."""
    version = "" if v2 else "v1 "
    return Scenario(
        sid, f"storm: {clients:,} {version}clients into one room, 200 handshakes in flight", clients, "idle",
        duration=1.0, concurrency=200, storm=True, query="v=2" if v2 else "", chat_only=not v2, **options,
    )


def changing(sid: int, clients: int, senders: int, **options) -> Scenario:
    """Return scenario 1's shape where a tenth of what senders send is reactions and edits (v3, identified)."""
    token = jwt.encode({"sub": "bench", "name": "bench", "exp": int(time.time()) + 86_400}, JWT_SECRET,
                       algorithm="HS256")
    return Scenario(
        sid, f"{clients} v3 clients, {senders} senders flat out, 10% of it reactions and edits", clients, "flat",
        senders=senders, query=f"v=3&token={token}", changes=9, chat_only=True, compare=1, **options,
    )


FULL = {
    1: Scenario(1, "100 clients, 10 senders flat out", 100, "flat", senders=10),
    2: Scenario(2, "1000 clients, 1 sender at 200 msg/s", 1000, "rate", senders=1, rate=200),
    3: Scenario(3, "1000 clients, 1 sender at 100 msg/s", 1000, "rate", senders=1, rate=100),
    4: Scenario(4, "1000 idle connections", 1000, "idle", duration=1.0),
    5: Scenario(5, "scenario 3 plus 1 client that stops reading", 1000, "rate", senders=1, rate=100, stall=True,
                compare=3),
    6: Scenario(6, "2000 connections with heartbeats, then a 2001st", 2000, "idle", limit=2000),
    7: Scenario(7, "scenario 1 plus 1 client that stops reading", 100, "flat", senders=10, stall=True, compare=1),
    8: Scenario(8, "2000 rooms × 1 client, 200 msg/s over them", 2000, "rate", senders=2000, rate=200,
                duration=10.0, rooms=2000, worker="gevent", quiet=5.0),
    9: Scenario(9, "10,000 rooms × 1 client, 200 msg/s over them", 10_000, "rate", senders=10_000, rate=200,
                duration=10.0, rooms=10_000, worker="gevent", compare=8, quiet=5.0),
    10: Scenario(10, "workers: 100 clients, 10 senders flat out", 100, "flat", senders=10, worker="gevent",
                 scaling=True),
    11: Scenario(11, "workers: 2000 rooms × 1 client, each flat out", 2000, "flat", senders=2000, window=2,
                 rooms=2000, worker="gevent", scaling=True),
    12: storm(12, 1000),
    13: storm(13, 5000, threads=False),
    14: storm(14, 10_000, threads=False),
    15: storm(15, 1000, v2=False),
    16: Scenario(16, "10,000 idle connections", 10_000, "idle", duration=1.0, threads=False),
    17: changing(17, 100, 10),
}


# What --quick runs unless told otherwise: flat out, fan-out at a fixed rate, idle memory.
QUICK = (1, 2, 4)


def scenarios(quick: bool = False) -> dict[int, Scenario]:
    """Return the scenarios by id, shrunk to a few seconds each when quick."""
    if not quick:
        return dict(FULL)
    return {
        1: replace(FULL[1], title="20 clients, 2 senders flat out", clients=20, senders=2, duration=1.5),
        2: replace(FULL[2], title="100 clients, 1 sender at 200 msg/s", clients=100, duration=1.5),
        3: replace(FULL[3], title="100 clients, 1 sender at 100 msg/s", clients=100, duration=2.0),
        4: replace(FULL[4], title="100 idle connections", clients=100),
        5: replace(FULL[5], title="scenario 3 plus 1 client that stops reading", clients=100, duration=2.0),
        6: replace(
            FULL[6], title="200 connections with heartbeats, then a 201st", clients=200, limit=200, duration=5.5
        ),
        7: replace(FULL[7], title="scenario 1 plus 1 client that stops reading", clients=20, senders=2, duration=2.0),
        8: replace(FULL[8], title="200 rooms × 1 client, 200 msg/s over them", clients=200, senders=200, rooms=200,
                   duration=2.0),
        9: replace(FULL[9], title="1000 rooms × 1 client, 200 msg/s over them", clients=1000, senders=1000,
                   rooms=1000, duration=2.0),
        10: replace(FULL[10], title="workers: 20 clients, 2 senders flat out", clients=20, senders=2, duration=1.5),
        11: replace(FULL[11], title="workers: 200 rooms × 1 client, each flat out", clients=200, senders=200,
                    rooms=200, duration=1.5),
        12: storm(12, 200),
        13: storm(13, 500, threads=False),
        14: storm(14, 1000, threads=False),
        15: storm(15, 200, v2=False),
        16: replace(FULL[16], title="1000 idle connections", clients=1000),
        17: changing(17, 20, 2, duration=1.5),
    }
