"""``heartwire send-test`` against real loopback servers (HTTP, HTTPS, nothing)."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path

import httpx
import pytest

from agent.cli import main as cli
from agent.common.signing import Ed25519SigningKey, verify
from tests.certs import make_pki
from tests.netutil import refused_reason
from tests.receiver import free_port, running_receiver
from tests.test_central_e2e import running

KEY = Ed25519SigningKey.generate()


def _write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    key_file = tmp_path / "agent.key"
    key_file.write_text(KEY.to_text())
    key_file.chmod(0o600)
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[agent]
id = "agent-1"

[destinations.main]
kind = "native"
url = "{url}"
signing_key_file = "{key_file}"
connect_timeout = "2s"
timeout = "2s"
{extra}
""")
    return path


def _send_test(path: Path) -> int:
    # cli.main runs trio.run itself: keep it off this test's event loop.
    return cli.main(["send-test", "--config", str(path)])


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_send_test_reports_each_step_and_sends_a_signed_heartbeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_receiver(ok_body=b"stored") as receiver:
        code = _send_test(_write_config(tmp_path, receiver.url + "/v1/ingest"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"main (native) {receiver.url}/v1/ingest: OK" in out
    assert "dns      ok    127.0.0.1 -> 127.0.0.1" in out
    assert f"connect  ok    127.0.0.1:{receiver.port}" in out
    assert "tls      skip  plain http" in out
    assert "http     ok    POST /v1/ingest -> 200 OK" in out
    assert "body           'stored'" in out
    (request,) = receiver.snapshot()
    verify(request.headers, request.body, [KEY.public_key()])
    body = json.loads(request.body)
    assert (body["type"], body["seq"], body["data"]["test"]) == ("heartbeat", 0, True)


def test_send_test_names_the_failing_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    code = _send_test(_write_config(tmp_path, f"http://127.0.0.1:{port}/in"))
    out = capsys.readouterr().out
    assert code == cli.EXIT_DOWN
    assert "FAILED" in out and f"connect  FAIL  127.0.0.1:{port}" in out
    # ... and why: trio's "all attempts to connect ... failed" alone does not say.
    assert re.search(refused_reason(port), out)


def test_send_test_verifies_tls_with_the_configured_ca_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.cert_file, pki.key_file)
    with running_receiver(tls=server_tls) as receiver:
        url = receiver.url + "/in"
        # Without the CA: the public bundle does not know it, so the handshake fails.
        assert _send_test(_write_config(tmp_path, url)) == cli.EXIT_DOWN
        out = capsys.readouterr().out
        assert "tls      FAIL" in out and "CERTIFICATE_VERIFY_FAILED" in out
        assert receiver.snapshot() == []
        assert _send_test(_write_config(tmp_path, url, f'ca_file = "{pki.ca_file}"')) == 0
        out = capsys.readouterr().out
    assert "tls      ok    TLSv1.3, certificate verified for 127.0.0.1" in out
    assert "http     ok    POST /in -> 200 OK" in out
    assert len(receiver.snapshot()) == 1


def test_send_test_without_destinations_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[checks.a]\nhost = "127.0.0.1"\nport = 1\n')
    assert _send_test(path) == cli.EXIT_UNKNOWN
    assert "no [destinations.*] are configured" in capsys.readouterr().err


def test_send_test_passes_against_the_real_receiver_which_stores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`heartwire central` as a process: the seq-0 heartbeat is verified, answered 2xx
    and leaves no trace (docs/protocol.md)."""
    central_toml = tmp_path / "central.toml"
    central_toml.write_text(
        f'[storage]\nstate_dir = "{tmp_path / "central-state"}"\n'
        f'[agents.agent-1]\nkeys = ["{KEY.public_key().to_text()}"]\n')
    with running("central", "--config", str(central_toml), "--listen", "127.0.0.1:0") \
            as central:
        base = central.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        code = _send_test(_write_config(tmp_path, f"{base}/v1/ingest"))
        out = capsys.readouterr().out
        with httpx.Client(base_url=base, timeout=5) as api:
            agents = api.get("/api/v1/agents").json()["agents"]
            checks = api.get("/api/v1/checks").json()["checks"]
    assert code == 0, out
    assert "http     ok    POST /v1/ingest -> 200 " in out
    assert "'status': 'test'" in out.replace('"', "'")
    assert [(a["id"], a["state"]) for a in agents] == [("agent-1", "never reported")]
    assert checks == []
    assert not [line for line in central.lines if "rejected message" in line]


# Secrets as each kind carries them in its URLs (formats from the services' docs).
PING_KEY = "fqOOd6-F4MMNuCEnzTU01w"
HC_UUID = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
KUMA_TOKEN = "kumaPushTok3n"
GATUS_KEY = "agents_secret-agent"
GATUS_TOKEN = "gatusBearerTok3n"
BETTERSTACK_TOKEN = "bsHeartbeatTok3n"
URL_PASSWORD = "s3cretPassw0rd"
QUERY_TOKEN = "queryTok3nValue"
ALL_SECRETS = (PING_KEY, HC_UUID, KUMA_TOKEN, GATUS_KEY, GATUS_TOKEN, BETTERSTACK_TOKEN,
               URL_PASSWORD, QUERY_TOKEN)


def _secret_destinations(base: str) -> str:
    netloc_base = base.replace("http://", f"http://operator:{URL_PASSWORD}@")
    return f"""
[destinations.hc_slug]
kind = "healthchecks"
url = "{base}"
ping_key_env = "HW_TEST_PING_KEY"
check = "agent-slug"

[destinations.hc_uuid]
kind = "healthchecks"
url = "{base}"
check = "{HC_UUID}"

[destinations.kuma]
kind = "uptime-kuma"
url = "{base}"
push_token = "{KUMA_TOKEN}"

[destinations.gatus]
kind = "gatus"
url = "{base}"
token_env = "HW_TEST_GATUS_TOKEN"
key = "{GATUS_KEY}"

[destinations.betterstack]
kind = "betterstack"
url = "{base}/api/v1/heartbeat/{BETTERSTACK_TOKEN}"

[destinations.basic_auth]
kind = "native"
url = "{netloc_base}/v1/ingest?token={QUERY_TOKEN}"
signing_key_file = "{{key_file}}"
"""


def test_send_test_prints_no_secret_of_any_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_TEST_PING_KEY", PING_KEY)
    monkeypatch.setenv("HW_TEST_GATUS_TOKEN", GATUS_TOKEN)
    # A hostile (or merely chatty) server that echoes each request back in its body.
    with running_receiver(["echo"] * 7) as receiver:
        path = _write_config(tmp_path, receiver.url + "/in")
        key_file = tmp_path / "agent.key"
        path.write_text(path.read_text() + _secret_destinations(receiver.url).replace(
            "{key_file}", str(key_file)))
        _send_test(path)
        paths = [request.path for request in receiver.snapshot()]
    captured = capsys.readouterr()
    output = captured.out + captured.err
    # Every destination was really asked, with its secret on the wire...
    assert len(paths) == 7, output
    for secret in (PING_KEY, HC_UUID, KUMA_TOKEN, GATUS_KEY, BETTERSTACK_TOKEN, QUERY_TOKEN):
        assert any(secret in p for p in paths), (secret, paths)
    # ... and none of them was printed.
    assert "<redacted>" in output
    assert [secret for secret in ALL_SECRETS if secret in output] == [], output


def test_send_test_tries_every_receiver_of_a_failover_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A standby receiver that is down or misconfigured is found by send-test, not at
    the outage it is there for: each URL of the list gets its own report, and the
    standby's password is redacted like the primary's."""
    central_toml = tmp_path / "central.toml"
    central_toml.write_text(
        f'[storage]\nstate_dir = "{tmp_path / "central-state"}"\n'
        f'[agents.agent-1]\nkeys = ["{KEY.public_key().to_text()}"]\n')
    standby_port = free_port()
    with running("central", "--config", str(central_toml), "--listen", "127.0.0.1:0") \
            as central:
        base = central.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        standby = f"http://agent:standby-pw-123@127.0.0.1:{standby_port}/v1/ingest"
        path = _write_config(tmp_path, "x")
        path.write_text(path.read_text().replace(
            'url = "x"', f'url = ["{base}/v1/ingest", "{standby}"]'))
        code = _send_test(path)
    out = capsys.readouterr().out
    assert code == cli.EXIT_DOWN, out
    assert f"main (native) {base}/v1/ingest: OK" in out
    assert (f"main (native, failover 1) http://agent:<redacted>@127.0.0.1:{standby_port}"
            f"/v1/ingest: FAILED") in out
    assert f"connect  FAIL  127.0.0.1:{standby_port}" in out
    assert "standby-pw-123" not in out
