"""A real PostgreSQL for tests: initdb into a temp folder, pg_ctl start on a free port, once per session."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

__all__ = ["PostgresServer", "clean_postgres_url", "postgres_url"]

#: The tables the chat's store creates, emptied between tests.
TABLES = ("chat_messages", "chat_claims", "chat_rooms", "chat_conversations", "chat_members", "chat_reads")


def binary(name: str) -> str:
    """Return the path of a PostgreSQL server program, or skip: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
        found = versions[-1] if versions else None
    if found is None:
        pytest.skip(f"{name} is not installed: apt-get install postgresql to run the PostgreSQL tests")
    return found


def as_owner(command: list[str]) -> list[str]:
    """Run command as nobody when we are root: initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """One PostgreSQL cluster in a temp folder, trusting local connections, on a free port."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="chat-postgres-"))
        self.data = self.directory / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.directory, "nobody")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        """initdb (no fsync: a test cluster need not survive a power cut) and start; wait until it accepts."""
        run = {"check": True, "capture_output": True, "timeout": 60}
        subprocess.run(as_owner([binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                 "-E", "UTF8", "--no-sync", "--no-instructions"]), **run)
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server on its data (again, after halt()); wait until it accepts."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(as_owner([binary("pg_ctl"), "-D", str(self.data), "-o", options,
                                 "-l", str(self.directory / "log"), "-w", "-t", "30", "start"]),
                       check=True, capture_output=True, timeout=60)
        return self

    def halt(self) -> None:
        """Stop the server at once, as a crash would (immediate mode), keeping its data for resume()."""
        subprocess.run(as_owner([binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        if self.data.exists():
            subprocess.run(as_owner([binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start one PostgreSQL for the session and yield its URL."""
    pytest.importorskip("psycopg")
    server = PostgresServer()
    try:
        yield server.start().url
    finally:
        server.stop()


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> str:
    """Return the session's PostgreSQL URL with the chat's tables emptied."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return postgres_url
