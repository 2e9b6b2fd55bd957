"""A private PostgreSQL for the receiver's tests: one server per session, a database per test."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import PG_BIN, Server, demote, postgres_cluster, start_postgres

HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""

_numbers = itertools.count(1)


@dataclass
class PrivatePostgres:
    """A PostgreSQL we started, and its data directory (to start it again)."""

    cluster: Path
    server: Server

    @property
    def port(self) -> int:
        return self.server.port

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs ``sql`` as the superuser; returns psql's unaligned output."""
        done = subprocess.run(
            [f"{PG_BIN[-1]}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return done.stdout.strip()

    def new_database(self) -> str:
        """A fresh empty database; returns its URL (user postgres, no password: trust)."""
        name = f"central_{next(_numbers)}"
        self.psql(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stops the server (its port stays reserved until :meth:`start`)."""
        self.server.stop()

    def start(self) -> None:
        """Starts the server again on the same port."""
        self.server.close()
        self.server = start_postgres(self.cluster, port=self.server.port)


def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL, stopped and removed after (a fixture's body)."""
    with postgres_cluster() as cluster:
        # The superuser is trusted on loopback (the tests' own set-up); every other
        # role logs in with its password, as a receiver's role does in production.
        hba = cluster / "data" / "pg_hba.conf"
        hba.write_text(HBA)
        demote(hba, "postgres")
        postgres = PrivatePostgres(cluster, start_postgres(cluster))
        try:
            yield postgres
        finally:
            postgres.server.close()
