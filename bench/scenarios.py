"""Define the load scenarios, at full size and in a quick variant."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Scenario:
    """One load shape: how many clients, who sends, how fast, for how long."""

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

    @property
    def connections(self) -> int:
        """Return how many connections are open at once during the measured phase."""
        return self.clients + (1 if self.stall else 0)

    @property
    def delivers(self) -> bool:
        """Return whether messages are sent, so throughput and latency mean something."""
        return self.mode != "idle"

    def loadgen(self, url: str, run: str, protocol: str = "ws") -> dict:
        """Return the configuration for bench/loadgen.js."""
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
        }


FULL = {
    1: Scenario(1, "100 clients, 10 senders flat out", 100, "flat", senders=10),
    2: Scenario(2, "1000 clients, 1 sender at 200 msg/s", 1000, "rate", senders=1, rate=200),
    3: Scenario(3, "1000 clients, 1 sender at 100 msg/s", 1000, "rate", senders=1, rate=100),
    4: Scenario(4, "1000 idle connections", 1000, "idle", duration=1.0),
    5: Scenario(5, "scenario 3 plus 1 client that stops reading", 1000, "rate", senders=1, rate=100, stall=True),
    6: Scenario(6, "2000 connections with heartbeats, then a 2001st", 2000, "idle", limit=2000),
    7: Scenario(7, "scenario 1 plus 1 client that stops reading", 100, "flat", senders=10, stall=True),
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
    }
