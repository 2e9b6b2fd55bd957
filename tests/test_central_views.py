"""The status page and the JSON API, rendered by a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from tests.central_support import Messages, check_item, make_config, running_central, signed

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium and sets this, so a missing browser fails there instead of skipping.
REQUIRE_BROWSER = os.environ.get("HEARTWIRE_REQUIRE_BROWSER") == "1"


async def _render(url: str, profile: Path) -> str:
    if BROWSER is None:
        if REQUIRE_BROWSER:
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    command = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", url,
    ]
    with trio.fail_after(60):
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


async def _report(client: httpx.AsyncClient, messages: Messages) -> None:
    heartbeat = messages.heartbeat([
        check_item("postgres-primary", "up", latency_ms=0.41, group="Databases",
                   host="10.0.0.5", port=5432),
        check_item("redis-sessions", "down", latency_ms=None, group="Caches",
                   host="10.0.0.6", port=6379),
        check_item("<b>odd</b>", "up"),
    ])
    headers, body = signed(heartbeat)
    response = await client.post("/v1/ingest", content=body, headers=headers)
    assert response.status_code == 200


async def test_the_status_page_renders_in_chromium_grouped_without_javascript(
    tmp_path: Path,
) -> None:
    async with running_central(make_config(tmp_path)) as (central, client):
        await _report(client, Messages())
        dom = await _render(str(client.base_url) + "/", tmp_path / "profile")
        assert central.storage.count("incidents") == 1

    assert "<title>heartwire status</title>" in dom
    assert "<script" not in dom
    groups = re.findall(r'<section class="group"><h2>([^<]+)</h2>', dom)
    assert groups == ["Caches", "Databases", "Ungrouped"]
    databases = dom.split("<h2>Databases</h2>")[1].split("</section>")[0]
    assert "postgres-primary" in databases and "10.0.0.5:5432" in databases
    assert '<td class="status up">up</td>' in databases and "0.4 ms" in databases
    caches = dom.split("<h2>Caches</h2>")[1].split("</section>")[0]
    assert '<td class="status down">down</td>' in caches
    # The agent's last heartbeat and the open incident are on the page.
    assert re.search(r'data-agent="dc1".*?alive.*?2026-01-01T00:00:00.000Z', dom, re.S)
    incidents = dom.split('id="incidents"')[1].split("</section>")[0]
    assert "Open incidents (1)" in incidents
    assert "dc1: check redis-sessions is down (refused)" in incidents
    # Names are text, never markup.
    assert "&lt;b&gt;odd&lt;/b&gt;" in dom and "<b>odd</b>" not in dom


async def test_the_page_works_with_curl_too(tmp_path: Path) -> None:
    async with running_central(make_config(tmp_path)) as (_, client):
        await _report(client, Messages())
        page = await client.get("/")
        incidents = await client.get("/api/v1/incidents")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<meta http-equiv="refresh"' in page.text
    assert [item["kind"] for item in incidents.json()["incidents"]] == ["check_down"]


def test_chromium_is_where_ci_expects_it() -> None:
    if REQUIRE_BROWSER:
        assert BROWSER is not None
        version = subprocess.run([BROWSER, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False)
        assert "Chromium" in version.stdout


async def test_open_incidents_are_bounded_on_the_page_and_in_the_api(tmp_path: Path) -> None:
    from tests.central_support import HMAC_AGENT_SECRET

    config = make_config(tmp_path)
    async with running_central(config) as (central, client):
        heartbeat = Messages("hmac-agent").heartbeat(
            [check_item(f"c{i:04d}", "down") for i in range(1200)])
        headers, body = signed(heartbeat, HMAC_AGENT_SECRET)
        assert (await client.post("/v1/ingest", content=body, headers=headers)).status_code == 200
        assert central.storage.count("incidents") == 1200
        api = (await client.get("/api/v1/incidents")).json()["incidents"]
        assert len(api) == 1000 and api[0]["check"] == "c0000"
        page = (await client.get("/")).text
        assert page.count('class="incident ') == 500
