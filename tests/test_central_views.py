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

from agent.common.timefmt import rfc3339
from tests.central_fleet import Clock, build_fleet, fleet_config
from tests.central_support import (
    BASE_TIME,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)

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
    assert '<span class="badge up">up</span>' in databases and "0.41 ms" in databases
    caches = dom.split("<h2>Caches</h2>")[1].split("</section>")[0]
    assert '<span class="badge down">down</span>' in caches
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


# -- the page with history: overall line, badges, relative times, charts --------


async def _render_fleet(tmp_path: Path, paths: list[str]) -> list[str]:
    clock = Clock()
    async with running_central(fleet_config(tmp_path), wall_clock=clock) as (central, client):
        build_fleet(central, clock)
        doms = [await _render(str(client.base_url) + path, tmp_path / f"profile{index}")
                for index, path in enumerate(paths)]
        shots = os.environ.get("HEARTWIRE_SCREENSHOTS")
        if shots:  # for a person to look at; never committed
            for index, path in enumerate(paths):
                slug = path.strip("/").replace("/", "-") or "status"
                for name, size in (("desktop", "1280,1800"), ("phone", "390,2400")):
                    await _screenshot(str(client.base_url) + path,
                                      Path(shots) / f"{slug}-{name}.png", size,
                                      tmp_path / f"shot{index}{name}")
    return doms


async def _screenshot(url: str, out: Path, size: str, profile: Path) -> None:
    assert BROWSER is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-background-networking", f"--window-size={size}",
               f"--user-data-dir={profile}", f"--screenshot={out}", url]
    with trio.fail_after(60):
        await trio.run_process(command, capture_stdout=True, capture_stderr=True)


async def test_the_page_says_the_overall_state_in_one_line_and_draws_history(
    tmp_path: Path,
) -> None:
    (dom,) = await _render_fleet(tmp_path, ["/"])
    assert "<script" not in dom
    overall = re.search(r'<p id="overall" class="overall (\w+)">([^<]+)</p>', dom)
    assert overall is not None
    # redis-sessions is down; edge1 is silent, so vpn-gateway is unknown, not down.
    assert overall.groups() == ("down", "1 of 7 checks down, 1 degraded, 1 agent silent")
    # Times read "... ago" and carry the exact time.
    assert '<time datetime="2026-01-02T23:48:30.000Z" title="2026-01-02T23:48:30.000Z">11 min ago' \
        "</time>" in dom
    incidents = dom.split('id="incidents"')[1].split("</section>")[0]
    assert "Open incidents (2)" in incidents
    assert re.search(r'badge down">down</span> <span class="summary">dc1: check '
                     r"redis-sessions is down \(refused\)</span> <span class=\"when\">"
                     r'<span class="lasted">for 1[78] min</span>', incidents)
    assert re.search(r'badge silent">silent</span> <span class="summary">edge1: no heartbeat',
                     incidents)
    assert re.search(r'badge resolved">resolved</span> <span class="summary">dc1: check '
                     r'redis-sessions is down \(refused\)</span> <span class="when"><span '
                     r'class="lasted">lasted 2 h</span>', incidents)
    groups = re.findall(r'<section class="group"><h2>([^<]+)</h2>', dom)
    assert groups == ["Caches", "Databases", "Mail", "Network", "Web", "Ungrouped"]
    card = dom.split('data-check="dc1/redis-sessions"')[1].split('<div class="check')[0]
    assert '<span class="badge down">down</span>' in card
    # A chart of the last 24 hours (one line per percentile) and 90 daily bars.
    assert card.count("<polyline") == 2
    bars = card.split('<svg class="bars"')[1].split("</svg>")[0]
    # 87 days without data are one bar as wide as 87, then the two days known, then
    # today (just begun, nothing yet).
    assert bars.count("<rect") == 4
    assert re.search(r'<rect class="none" x="0" width="347"[^>]*><title>2025-10-06 to '
                     r"2025-12-31: no data</title>", bars)
    assert bars.endswith('<rect class="none" x="356" width="3" height="24"><title>2026-01-03: '
                         "no data</title></rect>")
    assert "2026-01-02: " in bars and "% up" in bars
    # Yesterday's 2-hour outage shows in yesterday's bar (22 of 24 hours up).
    assert re.search(r'<rect class="bad"[^>]*><title>2026-01-01: 91\.66[0-9]% up</title>', bars)
    silent_card = dom.split('data-check="edge1/vpn-gateway"')[1].split('<div class="check')[0]
    assert '<span class="badge unknown">unknown</span>' in silent_card
    assert "agent silent" in silent_card
    assert "&lt;b&gt;odd&lt;/b&gt;" in dom and "<b>odd</b>" not in dom
    assert 'href="/checks/dc1/redis-sessions"' in dom


async def test_the_check_page_lists_its_incidents_with_their_duration(tmp_path: Path) -> None:
    (dom,) = await _render_fleet(tmp_path, ["/checks/dc1/redis-sessions"])
    assert "<script" not in dom
    assert re.search(r'<h1><span class="badge down">down</span> redis-sessions', dom)
    incidents = dom.split('id="incidents"')[1].split("</section>")[0]
    assert "Incidents (2)" in incidents
    assert re.search(r'class="lasted">for 1[78] min</span>', incidents)
    assert 'class="lasted">lasted 2 h</span>' in incidents
    assert dom.count('<svg class="chart"') == 2  # 24 hours and 30 days
    assert re.search(r'title="uptime over 24h">9[0-9]\.[0-9]{2}% <small>24h</small>', dom)


async def test_an_unknown_check_page_is_a_404(tmp_path: Path) -> None:
    async with running_central(make_config(tmp_path)) as (_, client):
        missing = await client.get("/checks/dc1/nothing")
        bad = await client.get("/checks/dc1")
    assert (missing.status_code, bad.status_code) == (404, 404)
    assert missing.headers["content-type"] == "text/html; charset=utf-8"
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
        assert "Open incidents (at least 500)" in page
        assert page.count('class="incident ') == 50
        assert 'href="/api/v1/incidents">' in page


# -- a young check's chart: its life so far, not a sliver of 24 hours ----------


async def test_a_young_checks_chart_spans_its_life_so_far_and_says_so(tmp_path: Path) -> None:
    clock = Clock()
    messages = Messages("dc1")
    async with running_central(fleet_config(tmp_path), wall_clock=clock) as (central, client):
        # Two minutes of heartbeats every 10 s, as the demo's agent sends them (a state
        # change only when a check flips); down for 20 s in the middle.
        for step in range(12):
            clock.now = BASE_TIME + 10.0 * step
            down = 6 <= step < 8
            item = check_item("young", "down" if down else "up", at=rfc3339(clock.now - 1.0),
                              latency_ms=None if down else 0.5 + (step % 4) / 10)
            headers, body = signed(messages.heartbeat([item], interval_s=10.0),
                                   timestamp=clock.now)
            assert central.ingest.handle(headers, body).status == 200
            central.watch_once()
        clock.now = BASE_TIME + 122.0
        page = (await client.get("/")).text
        check_page = (await client.get("/checks/dc1/young")).text
        dom = await _render(str(client.base_url) + "/", tmp_path / "profile")
        shots = os.environ.get("HEARTWIRE_SCREENSHOTS")
        if shots:  # for a person to look at; never committed
            await _screenshot(str(client.base_url) + "/", Path(shots) / "young-desktop.png",
                              "1280,900", tmp_path / "shot")
            await _screenshot(str(client.base_url) + "/checks/dc1/young",
                              Path(shots) / "young-check-desktop.png", "1280,1100",
                              tmp_path / "shot2")

    card = dom.split('data-check="dc1/young"')[1]
    assert "response time, last 5 min (first seen 2 min ago) · latest 5 s: p50 " in card
    assert '<div class="axis"><span>5 min ago</span><span>now</span></div>' in card
    chart = card.split('<svg class="chart"')[1].split("</svg>")[0]
    # Lines, not dots, though most 5 s steps hold no heartbeat; the outage breaks them:
    # two runs of each percentile, covering the right two fifths of the chart (two of
    # five minutes), not its last 0.14 %.
    assert "<circle" not in chart
    runs = re.findall(r'<polyline class="p50" points="([^"]+)"', chart)
    assert [len(run.split()) for run in runs] == [6, 4], runs
    xs = [float(point.split(",")[0]) for run in runs for point in run.split()]
    assert 200 < min(xs) < 215 and 330 < max(xs) <= 360, xs
    # The check's page: the same young chart, and 30 days beside it.
    assert "response time, last 5 min (first seen 2 min ago)" in check_page
    assert "<span>30 days ago</span>" in check_page
    assert page.count('<svg class="chart"') == 1


async def test_an_old_checks_chart_still_spans_24_hours(tmp_path: Path) -> None:
    (dom,) = await _render_fleet(tmp_path, ["/"])
    card = dom.split('data-check="dc1/redis-sessions"')[1].split('<div class="check')[0]
    assert "response time, last 24 h · latest hour: p50 " in card
    assert "first seen" not in card
    assert '<div class="axis"><span>24 h ago</span><span>now</span></div>' in card


async def test_a_young_check_denser_than_its_chart_reads_gets_the_24_hour_chart(
    tmp_path: Path,
) -> None:
    from agent.central.page import MAX_CHART_OBSERVATIONS

    clock = Clock()
    async with running_central(fleet_config(tmp_path), wall_clock=clock) as (central, client):
        headers, body = signed(Messages("dc1").heartbeat([check_item("dense", "up")]))
        assert central.ingest.handle(headers, body).status == 200
        clock.now = BASE_TIME + 1000.0
        # More observations in its first 20 minutes than a chart reads.
        spacing = 1000.0 / (MAX_CHART_OBSERVATIONS + 10)
        with central.storage.transaction():
            for index in range(MAX_CHART_OBSERVATIONS + 10):
                central.history.store.add_observation("dc1", "dense", BASE_TIME + index * spacing,
                                                      "up", 0.5, "open")
        page = (await client.get("/")).text
    card = page.split('data-check="dc1/dense"')[1]
    assert "response time, last 24 h" in card and "first seen" not in card
