"""A private PostgreSQL for the receiver's tests: one server per session, a database per test."""

from __future__ import annotations

import base64
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agent.common.signing import PUBLIC_KEY_PREFIX, Ed25519SigningKey
from tests.central_support import AGENT_KEY
from tests.servers import PG_BIN, Server, demote, postgres_cluster, start_postgres

HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""

_numbers = itertools.count(1)
# A receiver process starting on a busy two-core machine.
READY_TIMEOUT_S = 60.0


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


def public_key_text(key: Ed25519SigningKey) -> str:
    """The ``whpk_`` text of a signing key's public half."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(key.public_key().raw).decode()


def write_config(directory: Path, url: str, webhook: str, *, grace: str = "2s",
                 agents: dict[str, str] | None = None) -> Path:
    """A receiver config on ``url`` ("" for SQLite): one webhook, short grace and lease.

    Args:
        agents: agent id to ``whpk_`` key (default: dc1 with the tests' key).
    """
    assert isinstance(AGENT_KEY, Ed25519SigningKey)
    agents = agents or {"dc1": public_key_text(AGENT_KEY)}
    storage = f'url = "{url}"\n' if url else ""
    tables = "".join(f'[agents.{agent}]\nkeys = ["{key}"]\n' for agent, key in agents.items())
    path = directory / "central.toml"
    path.write_text(f"""
[storage]
{storage}state_dir = "{directory / 'state'}"

[alerts]
grace = "{grace}"
flap_threshold = 1000
retry_initial = "1s"
retry_max = "2s"
delivery_lease = "4s"

{tables}
[channels.hook]
kind = "webhook"
url = "{webhook}"
""")
    return path


@dataclass
class Cluster:
    """Receiver processes sharing one config (one database), on ports of their own.

    Each one's log goes to a file beside the config (a pipe nobody reads would
    fill and stall it).
    """

    config: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def log(self, index: int) -> Path:
        return self.config.parent / f"receiver{index}.log"

    def start(self, index: int) -> None:
        """Starts receiver ``index`` and waits until it answers /healthz."""
        with self.log(index).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "agent", "central", "--config", str(self.config),
                 "--listen", f"127.0.0.1:{self.ports[index]}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes[index] = process
        give_up = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < give_up and process.poll() is None:
            try:
                if httpx.get(self.url(index) + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        tail = self.log(index).read_text(errors="replace")[-2000:]
        raise AssertionError(f"receiver {index} did not start:\n{tail}")

    def kill(self, index: int) -> None:
        """SIGKILL: no drain, no goodbye."""
        process = self.processes.pop(index)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for index in list(self.processes):
            self.kill(index)
