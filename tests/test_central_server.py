"""The served receiver: HTTPS through Hypercorn's own TLS options, clean shutdown."""

from __future__ import annotations

import ssl
from pathlib import Path

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
