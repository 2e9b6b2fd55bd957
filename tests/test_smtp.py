"""The SMTP probe against a real SMTP server (aiosmtpd), plain and with STARTTLS."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

from agent.checks import smtp
from agent.common.tables import Table
from agent.errors import ConfigError
from agent.model import Outcome, Reason
from tests.conftest import issue, write_pem
from tests.servers import Server, free_port, running, serve_reply, start, target


def start_aiosmtpd(directory: Path, *tls_args: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
            "-l", f"127.0.0.1:{port}", *tls_args]
    return start(argv, port, directory / f"smtp-{port}.log")


@pytest.fixture
def plain_smtp(tmp_path: Path) -> Iterator[Server]:
    with running(start_aiosmtpd(tmp_path)) as server:
        yield server


@pytest.fixture
def starttls_smtp(tmp_path: Path, ca: trustme.CA) -> Iterator[Server]:
    chain, key = write_pem(issue(ca, days_valid=5), tmp_path)
    tls_args = ("--tlscert", str(chain), "--tlskey", str(key), "--no-requiretls")
    with running(start_aiosmtpd(tmp_path, *tls_args)) as server:
        yield server


async def test_greeting_ehlo_quit(plain_smtp: Server) -> None:
    observation = await smtp.probe(target(plain_smtp.port, {}, smtp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert "Python SMTP" in str(observation.facts["smtp_banner"])


async def test_stopped_server_is_refused(plain_smtp: Server) -> None:
    plain_smtp.stop()
    observation = await smtp.probe(target(plain_smtp.port, {}, smtp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_starttls_reports_the_tls_facts(starttls_smtp: Server, ca_file: Path) -> None:
    options = {"starttls": True, "ca_file": str(ca_file), "server_name": "localhost"}
    observation = await smtp.probe(target(starttls_smtp.port, options, smtp.read_options),
                                   timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert observation.facts["cert_days_left"] == pytest.approx(4, abs=0.1)


async def test_starttls_certificate_close_to_expiry_is_degraded(
    starttls_smtp: Server, ca_file: Path
) -> None:
    options = {"starttls": True, "ca_file": str(ca_file), "cert_expiry_warning": "14d"}
    observation = await smtp.probe(target(starttls_smtp.port, options, smtp.read_options),
                                   timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "cert_expiring")


async def test_starttls_on_a_server_without_it(plain_smtp: Server) -> None:
    options = {"starttls": True, "insecure": True}
    observation = await smtp.probe(target(plain_smtp.port, options, smtp.read_options),
                                   timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "starttls_unavailable")


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"421 4.3.2 mx1.example.com Service not available, closing channel\r\n",
         "service_unavailable"),
        (b"554 5.7.1 mx1.example.com no SMTP service here\r\n", "service_refused"),
    ],
)
async def test_refusing_greeting_is_down_with_the_servers_text(
    nursery: trio.Nursery, greeting: bytes, reason: str
) -> None:
    # aiosmtpd cannot refuse at greeting time: this loopback server sends the
    # RFC 5321 section 3.1 / 4.2.3 replies itself, then hangs up as a real one does.
    port = await serve_reply(nursery, greeting)
    observation = await smtp.probe(target(port, {}, smtp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, reason)
    assert observation.detail == greeting.decode().strip()


def test_starttls_and_tls_together_are_an_error() -> None:
    with pytest.raises(ConfigError) as error:
        smtp.read_options(Table({"starttls": True, "tls": True}, "test.toml", "checks.t"))
    assert str(error.value) == (
        "test.toml: checks.t.starttls: tls = true already speaks TLS from the first byte"
    )


async def test_implicit_tls_smtps(tmp_path: Path, ca: trustme.CA, ca_file: Path) -> None:
    chain, key = write_pem(issue(ca, days_valid=30), tmp_path)
    server = start_aiosmtpd(tmp_path, "--smtpscert", str(chain), "--smtpskey", str(key))
    with running(server):
        options = {"tls": True, "ca_file": str(ca_file)}
        observation = await smtp.probe(target(server.port, options, smtp.read_options),
                                       timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert "tls_version" in observation.facts
