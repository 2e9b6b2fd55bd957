"""The TLS probe against a real TLS server on loopback with certificates made here."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from agent.checks import tls
from agent.common.tables import Table
from agent.errors import ConfigError
from agent.model import Outcome, Reason
from tests.conftest import issue
from tests.servers import serve_loopback, serve_reply, target


async def _hold(stream: trio.SSLStream[trio.SocketStream]) -> None:
    # A client that rejects our certificate aborts the handshake: that is expected.
    try:
        await stream.do_handshake()
        await stream.receive_some(16)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve_tls(
    nursery: trio.Nursery, cert: trustme.LeafCert
) -> tuple[int, trio.CancelScope]:
    """A TLS server presenting ``cert``; returns its port and the scope that stops it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[int]) -> None:
        with scope:
            listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")
            port = listeners[0].transport_listener.socket.getsockname()[1]
            task_status.started(port)
            await trio.serve_listeners(_hold, listeners)

    port = await nursery.start(serve)
    return port, scope


async def test_handshake_with_custom_ca_reports_version_and_expiry(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=31, days_ago=1))
    check = target(port, {"ca_file": str(ca_file), "server_name": "localhost"}, tls.read_options)
    observation = await tls.probe(check, timeout=5)
    assert observation.outcome is Outcome.OK, observation
    assert observation.reason == "answered"
    assert observation.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert observation.facts["cert_days_left"] == pytest.approx(30, abs=0.1)
    assert observation.address == "127.0.0.1"
    assert observation.latency_ms is not None


async def test_ip_address_is_verified_against_the_certificate(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=31))
    observation = await tls.probe(target(port, {"ca_file": str(ca_file)}, tls.read_options),
                                  timeout=5)
    assert observation.outcome is Outcome.OK, observation


async def test_certificate_close_to_expiry_is_degraded(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=3, days_ago=1))
    options = {"ca_file": str(ca_file), "cert_expiry_warning": "14d"}
    observation = await tls.probe(target(port, options, tls.read_options), timeout=5)
    assert observation.outcome is Outcome.DEGRADED
    assert observation.reason == "cert_expiring"
    assert observation.facts["cert_days_left"] == pytest.approx(2, abs=0.1)
    assert "14d" in (observation.detail or "")


async def test_expired_certificate_is_tls_expired_verified_or_not(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=5, days_ago=10))
    verified = await tls.probe(target(port, {"ca_file": str(ca_file)}, tls.read_options),
                               timeout=5)
    assert (verified.outcome, verified.reason) == (Outcome.FAILED, "tls_expired")
    insecure = await tls.probe(target(port, {"insecure": True}, tls.read_options), timeout=5)
    assert (insecure.outcome, insecure.reason) == (Outcome.FAILED, "tls_expired")
    assert insecure.facts["cert_days_left"] == pytest.approx(-5, abs=0.1)


async def test_unknown_ca_is_untrusted_unless_insecure(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=30))
    untrusted = await tls.probe(target(port, {}, tls.read_options), timeout=5)
    assert (untrusted.outcome, untrusted.reason) == (Outcome.FAILED, "tls_untrusted")
    assert "certificate" in (untrusted.detail or "")
    insecure = await tls.probe(target(port, {"insecure": True}, tls.read_options), timeout=5)
    assert insecure.outcome is Outcome.OK


async def test_wrong_server_name_is_a_hostname_mismatch(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=30))
    options = {"ca_file": str(ca_file), "server_name": "db.example.com"}
    observation = await tls.probe(target(port, options, tls.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "tls_hostname_mismatch")


async def test_stopped_server_is_refused(
    nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    port, scope = await serve_tls(nursery, issue(ca, days_valid=30))
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    observation = await tls.probe(target(port, {"ca_file": str(ca_file)}, tls.read_options),
                                  timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_plaintext_service_is_a_tls_error(nursery: trio.Nursery) -> None:
    port = await serve_reply(nursery, b"220 plain SMTP here\r\n")
    observation = await tls.probe(target(port, {"insecure": True}, tls.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "tls_error")


async def test_silent_service_times_out_within_the_total_deadline(
    nursery: trio.Nursery,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await serve_loopback(nursery, silent)
    started = trio.current_time()
    observation = await tls.probe(target(port, {"insecure": True}, tls.read_options),
                                  timeout=0.3)
    assert trio.current_time() - started < 1.0
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")
    assert observation.detail == "connected, but still waiting for the TLS handshake after 0.3s"
    assert observation.latency_ms is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "test.toml: checks.t.ca_file: no such file: "
         "/nonexistent/ca.pem"),
        ({"cert_expiry_warning": "soon"}, "test.toml: checks.t.cert_expiry_warning: expected "
         'a duration such as "250ms", "5s", "2m", "1h" or a number of seconds, got \'soon\''),
        ({"insecure": "yes"}, "test.toml: checks.t.insecure: expected true or false, "
         "got a string 'yes'"),
    ],
)
def test_bad_tls_options_name_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        tls.read_options(Table(options, "test.toml", "checks.t"))
    assert str(error.value) == message


def test_tls_keys_on_a_check_without_tls_are_an_error() -> None:
    table = Table({"ca_file": "/etc/ssl/ca.pem"}, "test.toml", "checks.t")
    with pytest.raises(ConfigError) as error:
        tls.read_tls_settings(table, enabled=False)
    assert str(error.value) == (
        "test.toml: checks.t.ca_file: is a TLS setting, but this check does not use TLS"
    )


def test_not_after_is_read_from_der(ca: trustme.CA) -> None:
    cert = issue(ca, days_valid=10, days_ago=2)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    not_after = tls.certificate_not_after(der)
    assert not_after is not None
    assert tls.certificate_not_after(b"\x30\x03garbage") is None


def test_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as error:
        tls.read_options(Table({"ca_file": str(garbage)}, "test.toml", "checks.t"))
    assert str(error.value).startswith(
        "test.toml: checks.t.ca_file: not a PEM file of CA certificates: "
    )


async def test_ca_file_gone_after_loading_is_a_tls_error(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=30))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    check = target(port, {"ca_file": str(ca_file)}, tls.read_options)
    assert (await tls.probe(check, timeout=5)).outcome is Outcome.OK
    ca_file.unlink()
    observation = await tls.probe(check, timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "tls_error")
    assert f"cannot load ca_file {ca_file}" in (observation.detail or "")


async def test_replaced_ca_file_is_read_again(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    port, _ = await serve_tls(nursery, issue(ca, days_valid=30))
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # some other CA
    check = target(port, {"ca_file": str(ca_file)}, tls.read_options)
    assert (await tls.probe(check, timeout=5)).reason == "tls_untrusted"
    ca.cert_pem.write_to_path(str(ca_file))
    os.utime(ca_file, ns=(0, 10**18))  # a modification time of its own, whatever the clock
    assert (await tls.probe(check, timeout=5)).outcome is Outcome.OK
