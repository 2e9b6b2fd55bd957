"""Shared fixtures: certificates made by the tests themselves."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from agent.central.config import CentralConfig
from tests.central_postgres import PrivatePostgres, private_postgres
from tests.central_support import make_config
from tests.servers import Server

ConfigFactory = Callable[..., CentralConfig]


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for loopback servers, cancelled when the test ends."""
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    """One private PostgreSQL for the session (tests take a database each)."""
    yield from private_postgres()


@pytest.fixture(params=["sqlite", "postgres"])
def central_config(request: pytest.FixtureRequest, tmp_path: Path) -> ConfigFactory:
    """Makes receiver configs on each backend: SQLite, and a fresh private PostgreSQL database."""
    url = ""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_server").new_database()

    def make(**overrides: Any) -> CentralConfig:
        return make_config(tmp_path, storage_url=url, **overrides)

    return make


@pytest.fixture
def stop_after() -> Iterator[list[Server]]:
    """Servers a test started through a factory fixture; stopped when it ends."""
    servers: list[Server] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private certificate authority, trusted only through ``ca_file``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The private CA's certificate as a PEM file."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def issue(ca: trustme.CA, *, days_valid: float, days_ago: float = 1.0) -> trustme.LeafCert:
    """A certificate for localhost and 127.0.0.1, valid from ``days_ago`` for ``days_valid``."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=days_ago)
    return ca.issue_cert(
        "localhost", "127.0.0.1",
        not_before=not_before, not_after=not_before + datetime.timedelta(days=days_valid),
    )


def write_pem(cert: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    """The certificate chain and key as PEM files, for servers that read files."""
    chain, key = directory / "cert.pem", directory / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return chain, key
