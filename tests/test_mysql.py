"""The MySQL probe against a private MariaDB server (its own datadir and port)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
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
    holding_connections,
    probe_until,
    require,
    serve_reply,
    start,
    target,
)

# MariaDB's smallest max_connections; one more connection is kept for an administrator.
MIN_MAX_CONNECTIONS = 10
NETNS_ADDRESS = "10.77.0.1"


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
    with holding_connections(
        ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{server.port}", "-uroot",
         "-e", "SELECT SLEEP(60)"],
        MIN_MAX_CONNECTIONS + 1,
    ):
        observation = await probe_until(_probe, target(server.port), "too_many_connections")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "too_many_connections")
    assert observation.detail == "Too many connections"
    assert observation.facts["mysql_error"] == 1040


async def _probe(check: Target) -> Observation:
    return await mysql.probe(check, timeout=5)


async def test_not_a_mysql_server(nursery: trio.Nursery) -> None:
    port = await serve_reply(nursery, b"HTTP/1.1 400 Bad Request\r\n\r\n")
    observation = await mysql.probe(target(port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "unexpected_reply")


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of our own where 10.77.0.1 is a local, non-loopback address."""
    require("ip")
    name = f"heartwire-mysql-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{NETNS_ADDRESS}/32", "dev", "lo"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _socket_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            return True
    except OSError:
        return False


def test_host_without_a_grant_is_up_but_not_allowed(
    netns: str, datadir: Path, stop_after: list[Server], tmp_path: Path
) -> None:
    # MariaDB exempts loopback clients from host checks: in our own namespace the
    # agent connects from 10.77.0.1, for which the fresh server has no account.
    unix_socket = datadir / "netns.sock"
    argv = ["ip", "netns", "exec", netns, "mariadbd", "--no-defaults",
            f"--datadir={datadir / 'data'}", "--port=3306", f"--bind-address={NETNS_ADDRESS}",
            f"--socket={unix_socket}", f"--pid-file={datadir / 'netns.pid'}", "--user=root",
            "--innodb-buffer-pool-size=8M", "--skip-log-bin", "--skip-name-resolve"]
    stop_after.append(start(argv, 3306, datadir / "netns.log",
                            ready=lambda: _socket_answers(unix_socket)))
    config = tmp_path / "agent.toml"
    config.write_text(f'[checks.db]\nkind = "mysql"\nhost = "{NETNS_ADDRESS}"\nport = 3306\n')
    # The probe must run inside the namespace too: the CLI, as a process, does.
    completed = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "agent", "check", "--json",
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    [row] = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr
    assert (row["status"], row["reason"]) == ("up", "host_not_allowed")
    assert row["detail"] == (
        f"Host '{NETNS_ADDRESS}' is not allowed to connect to this MariaDB server"
    )
    assert row["facts"]["mysql_error"] == 1130


def test_error_packets_with_and_without_sqlstate() -> None:
    # ERR packets as MariaDB sends them before the client's capabilities are known
    # (no SQL state, like the 1043 "Bad handshake" it sends), and as MySQL sends
    # them once CLIENT_PROTOCOL_41 is agreed ("#" and five characters).
    blocked = mysql.classify_error(
        b"\xff\x69\x04Host '10.0.0.9' is blocked because of many connection errors"
    )
    assert (blocked.outcome, blocked.reason) == (Outcome.DEGRADED, "host_blocked")
    assert blocked.detail == "Host '10.0.0.9' is blocked because of many connection errors"
    too_many = mysql.classify_error(b"\xff\x10\x04#08004Too many connections")
    assert (too_many.outcome, too_many.reason, too_many.detail) == (
        Outcome.FAILED, "too_many_connections", "Too many connections")
    other = mysql.classify_error(b"\xff\x13\x04Bad handshake")
    assert (other.reason, other.facts["mysql_error"]) == ("server_error", 1043)
