"""The PostgreSQL probe against a private cluster (initdb + postgres in a temp dir)."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from agent.checks import postgres
from agent.model import Observation, Outcome, Reason, Target
from tests.conftest import issue, write_pem
from tests.servers import (
    PG_BIN,
    Server,
    demote,
    free_port,
    holding_connections,
    postgres_cluster,
    probe_until,
    start,
    target,
)
from tests.servers import start_postgres as start_private_postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """An initialised data directory owned by the postgres user (initdb refuses root)."""
    with postgres_cluster() as base:
        yield base


StartPostgres = Callable[..., Server]


@pytest.fixture
def start_postgres(cluster: Path, stop_after: list[Server]) -> StartPostgres:

    def start_private(*settings: str) -> Server:
        server = start_private_postgres(cluster, *settings)
        stop_after.append(server)
        return server

    return start_private



async def test_asks_for_a_password_and_never_sends_one(
    start_postgres: StartPostgres, cluster: Path
) -> None:
    hba = cluster / "hba_scram.conf"
    hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n")
    demote(hba, "postgres")
    server = start_postgres("-c", f"hba_file={hba}")
    observation = await postgres.probe(target(server.port, {}, postgres.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["pg_auth"] == "sasl"


async def test_unknown_role_is_auth_required(start_postgres: StartPostgres) -> None:
    server = start_postgres()
    observation = await postgres.probe(target(server.port, {}, postgres.read_options), timeout=5)
    # trust authentication lets any existing role in; ours does not exist.
    assert (observation.outcome, observation.reason) == (Outcome.OK, "auth_required"), observation
    assert observation.facts["pg_ssl"] is False
    assert observation.facts["pg_sqlstate"] == "28000"
    assert 'role "heartwire" does not exist' in (observation.detail or "")


async def test_known_role_on_trust_is_answered(start_postgres: StartPostgres) -> None:
    server = start_postgres()
    options = {"user": "postgres"}
    observation = await postgres.probe(target(server.port, options, postgres.read_options),
                                       timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["pg_auth"] == "trust"


async def test_sslrequest_alone(start_postgres: StartPostgres) -> None:
    server = start_postgres()
    options = {"startup": False}
    observation = await postgres.probe(target(server.port, options, postgres.read_options),
                                       timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered")
    assert "pg_auth" not in observation.facts


async def test_stopped_server_is_refused(start_postgres: StartPostgres) -> None:
    server = start_postgres()
    server.stop()
    observation = await postgres.probe(target(server.port, {}, postgres.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def _probe(check: Target) -> Observation:
    return await postgres.probe(check, timeout=5)


async def test_exhausted_max_connections_is_too_many_connections(
    start_postgres: StartPostgres, cluster: Path
) -> None:
    server = start_postgres("-c", "max_connections=2", "-c", "superuser_reserved_connections=0")
    with holding_connections(
        [f"{PG_BIN[-1]}/psql", "-h", str(cluster), "-p", str(server.port), "-U", "postgres",
         "-c", "SELECT pg_sleep(60)"],
        2,
        user="postgres",
    ):
        check = target(server.port, {}, postgres.read_options)
        observation = await probe_until(_probe, check, "too_many_connections")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "too_many_connections")
    assert observation.detail == "sorry, too many clients already"
    assert observation.facts["pg_sqlstate"] == "53300"


async def test_tls_after_the_servers_s(
    start_postgres: StartPostgres, cluster: Path, ca: trustme.CA, ca_file: Path
) -> None:
    tls_dir = cluster / "tls"
    tls_dir.mkdir(exist_ok=True)
    chain, key = write_pem(issue(ca, days_valid=10), tls_dir)
    demote(tls_dir, "postgres")
    server = start_postgres("-c", "ssl=on", "-c", f"ssl_cert_file={chain}",
                            "-c", f"ssl_key_file={key}")

    plain = await postgres.probe(target(server.port, {}, postgres.read_options), timeout=5)
    # Only TLS may follow an S: without TLS settings the probe stops there.
    assert (plain.outcome, plain.reason) == (Outcome.OK, "answered"), plain
    assert plain.facts["pg_ssl"] is True and "pg_auth" not in plain.facts

    options = {"tls": True, "ca_file": str(ca_file), "cert_expiry_warning": "30d"}
    over_tls = await postgres.probe(target(server.port, options, postgres.read_options),
                                    timeout=5)
    # The StartupMessage went over TLS (the role is unknown), and the certificate's
    # 9 days left are under the 30-day warning.
    assert (over_tls.outcome, over_tls.reason) == (Outcome.DEGRADED, "cert_expiring"), over_tls
    assert over_tls.facts["pg_sqlstate"] == "28000"
    assert over_tls.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")


async def test_tls_required_but_not_offered(start_postgres: StartPostgres) -> None:
    server = start_postgres()
    options = {"tls": True, "insecure": True}
    observation = await postgres.probe(target(server.port, options, postgres.read_options),
                                       timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "tls_unavailable")


async def test_standby_refusing_connections_is_degraded(
    cluster: Path, stop_after: list[Server]
) -> None:
    # A standby with no primary to follow stays in recovery; with hot_standby off it
    # answers every StartupMessage with SQLSTATE 57P03.
    standby = cluster / "standby"
    shutil.copytree(cluster / "data", standby, symlinks=True)
    (standby / "postmaster.pid").unlink(missing_ok=True)
    (standby / "standby.signal").touch()
    demote(standby, "postgres")
    port = free_port()
    argv = [f"{PG_BIN[-1]}/postgres", "-D", str(standby), "-p", str(port), "-k", str(cluster),
            "-c", "listen_addresses=127.0.0.1", "-c", "hot_standby=off"]
    server = start(argv, port, cluster / "standby.log", user="postgres")
    server.stop_signal = signal.SIGINT
    stop_after.append(server)
    observation = await probe_until(_probe, target(server.port, {}, postgres.read_options),
                                    "cannot_connect_now")
    assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "cannot_connect_now")
    assert observation.facts["pg_sqlstate"] == "57P03"
    assert observation.detail == "the database system is not accepting connections"
