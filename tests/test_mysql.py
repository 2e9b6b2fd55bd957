"""The MySQL probe against a private MariaDB server (its own datadir and port)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from agent.checks import mysql
from agent.model import Observation, Outcome, Reason, Target
from tests.servers import (
    Server,
    free_port,
    hold_connections,
    probe_until,
    require,
    serve_reply,
    start,
    target,
)

# MariaDB's smallest max_connections; one more connection is kept for an administrator.
MIN_MAX_CONNECTIONS = 10


@pytest.fixture(scope="module")
def datadir() -> Iterator[Path]:
    require("mariadb-install-db", "mariadbd", "mariadb")
    base = Path(tempfile.mkdtemp(prefix="heartwire-mariadb-"))
    try:
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={base / 'data'}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


StartMariadb = Callable[..., Server]


@pytest.fixture
def start_mariadb(datadir: Path, stop_after: list[Server]) -> StartMariadb:

    def start_mariadb(*settings: str) -> Server:
        port = free_port()
        argv = ["mariadbd", "--no-defaults", f"--datadir={datadir / 'data'}", f"--port={port}",
                "--bind-address=127.0.0.1", f"--socket={datadir / 'mysqld.sock'}",
                f"--pid-file={datadir / 'mysqld.pid'}", "--user=root",
                "--innodb-buffer-pool-size=8M", "--skip-log-bin", *settings]
        server = start(argv, port, datadir / "mariadb.log")
        stop_after.append(server)
        return server

    return start_mariadb


async def test_reads_the_handshake(start_mariadb: StartMariadb) -> None:
    server = start_mariadb()
    observation = await mysql.probe(target(server.port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["mysql_protocol"] == 10
    assert "MariaDB" in str(observation.facts["mysql_version"])
    assert not str(observation.facts["mysql_version"]).startswith("5.5.5-")


async def test_stopped_server_is_refused(start_mariadb: StartMariadb) -> None:
    server = start_mariadb()
    server.stop()
    observation = await mysql.probe(target(server.port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_exhausted_max_connections_is_too_many_connections(
    start_mariadb: StartMariadb,
) -> None:
    server = start_mariadb(f"--max-connections={MIN_MAX_CONNECTIONS}", "--skip-grant-tables")
    holders = hold_connections(
        ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{server.port}", "-uroot",
         "-e", "SELECT SLEEP(30)"],
        MIN_MAX_CONNECTIONS + 1,
    )
    try:
        observation = await probe_until(_probe, target(server.port), "too_many_connections")
        assert (observation.outcome, observation.reason) == (
            Outcome.FAILED, "too_many_connections")
        assert observation.detail == "Too many connections"
        assert observation.facts["mysql_error"] == 1040
    finally:
        server.stop()
        for holder in holders:
            holder.wait(timeout=30)


async def _probe(check: Target) -> Observation:
    return await mysql.probe(check, timeout=5)


async def test_not_a_mysql_server(nursery: trio.Nursery) -> None:
    port = await serve_reply(nursery, b"HTTP/1.1 400 Bad Request\r\n\r\n")
    observation = await mysql.probe(target(port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "unexpected_reply")
