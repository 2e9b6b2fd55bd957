"""The served receiver: HTTPS through Hypercorn's own TLS options, clean shutdown."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.central_support import make_config, running_central, self_signed_certificate


async def test_hypercorn_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    config = make_config(tmp_path, certfile=cert, keyfile=key)
    async with running_central(config) as (_, client):
        url = str(client.base_url)
        assert url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trusted) as https:
            response = await https.get(url + "/healthz")
            assert response.status_code == 200 and response.text == "ok\n"
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError):  # the certificate is not trusted
                await untrusting.get(url + "/healthz")


async def test_the_store_is_closed_after_shutdown(tmp_path: Path) -> None:
    async with running_central(make_config(tmp_path)) as (central, client):
        assert (await client.get("/healthz")).status_code == 200
    assert (tmp_path / "state" / "central.sqlite3").exists()
    with pytest.raises(Exception, match="closed database"):
        central.storage.count("agents")


async def test_sighup_reload_registers_agents_added_meanwhile(tmp_path: Path) -> None:
    from agent.central import config as central_config
    from agent.central.server import Central
    from agent.cli.main import main
    from tests.central_support import AGENT_KEY, BASE_TIME, Messages, signed

    path = tmp_path / "central.toml"
    path.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n')
    central = Central(central_config.load(path), config_path=path, wall_clock=lambda: BASE_TIME)
    try:
        headers, body = signed(Messages("late").heartbeat())
        assert central.ingest.handle(headers, body).status == 403
        argv = ["central", "agents", "add", "late", "--config", str(path),
                "--public-key", AGENT_KEY.public_key().to_text()]
        assert main(argv) == 0
        path.write_text(path.read_text() + "[alerts]\ngrace = 5\n")
        assert central.reload()
        assert central.ingest.handle(headers, body).status == 200
        assert central.config.grace_for("late") == 5.0
        path.write_text("[alerts]\ngrace = 'soon'\n")
        assert not central.reload()  # an invalid file keeps the running config
        assert central.config.grace_for("late") == 5.0
    finally:
        await central.client.aclose()
        central.storage.close()


async def test_the_read_side_needs_the_token_when_one_is_configured(tmp_path: Path) -> None:
    import base64

    token = "s3cret-read-token-0123456789"
    config = make_config(tmp_path, read_tokens=(token,))
    async with running_central(config) as (_, client):
        for path in ("/", "/api/v1/agents", "/api/v1/checks", "/api/v1/incidents"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert token not in refused.text
            wrong = await client.get(path, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            bearer = await client.get(path, headers={"authorization": f"Bearer {token}"})
            assert bearer.status_code == 200, path
        basic = base64.b64encode(f"ops:{token}".encode()).decode()
        assert (await client.get("/", headers={"authorization": f"Basic {basic}"})
                ).status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # liveness stays public


def test_the_read_token_comes_from_a_private_file_never_inline(tmp_path: Path) -> None:
    from agent.central import config as central_config
    from agent.errors import ConfigError

    secret = tmp_path / "read-token"
    secret.write_text("a-long-enough-read-token\n")
    secret.chmod(0o600)
    path = tmp_path / "central.toml"
    path.write_text(f'[server]\nread_token_file = "{secret}"\n')
    assert central_config.load(path).read_tokens == ("a-long-enough-read-token",)
    assert "a-long-enough" not in repr(central_config.load(path))
    path.write_text('[server]\nread_token = "inline"\n')
    with pytest.raises(ConfigError, match="read_token"):
        central_config.load(path)
    secret.write_text("short\n")
    path.write_text(f'[server]\nread_token_file = "{secret}"\n')
    with pytest.raises(ConfigError, match="at least 16 characters"):
        central_config.load(path)


async def _exposure_warnings(config: Any, caplog: pytest.LogCaptureFixture) -> str:
    import logging

    from agent.central.server import Central

    caplog.clear()
    central = Central(config)
    try:
        with caplog.at_level(logging.WARNING, logger="heartwire.central"):
            central.warn_about_exposure()
    finally:
        await central.client.aclose()
        central.storage.close()
        central.reader.close()
    return caplog.text


async def test_a_public_plaintext_listener_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    public = await _exposure_warnings(make_config(tmp_path, listen=("0.0.0.0:0",)), caplog)
    assert "listening on 0.0.0.0:0 without TLS" in public
    assert "read_token_file" in public
    loopback = await _exposure_warnings(make_config(tmp_path), caplog)
    assert "without TLS" not in loopback
