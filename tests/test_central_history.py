"""History on the real receiver: observations, hourly rollups, uptime, pruning, the API.

The rollup, uptime and pruning tests run on both backends (``central_config``:
SQLite, and a database of a private PostgreSQL), whose history tables are created
from one DDL and queried through one store.

Time is an injected wall clock the tests move; the watcher's sweep
(``Central.watch_once``) runs when a test says so, as it would on schedule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.central.config import HistorySettings
from agent.central.history import History
from agent.central.latency_histogram import BUCKETS, bucket_bounds, bucket_of, quantile
from agent.central.server import Central
from agent.central.storage import CheckRow, Storage, StorageSettings, open_storage
from agent.common.timefmt import rfc3339
from tests.central_fleet import Clock
from tests.central_support import (
    BASE_TIME,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)
from tests.conftest import ConfigFactory

HOUR = 3600.0
DAY = 86400.0


def observation(check: str, status: str, at: float, latency_ms: float | None) -> dict[str, Any]:
    return {"check": check, "status": status, "reason": "open" if status == "up" else "refused",
            "latency_ms": latency_ms, "dns_ms": None, "address": "127.0.0.1", "detail": None,
            "consecutive_failures": 0, "at": rfc3339(at)}


async def post(client: httpx.AsyncClient, message: dict[str, Any], clock: Clock) -> None:
    headers, body = signed(message, timestamp=clock.now)
    response = await client.post("/v1/ingest", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def heartbeat(client: httpx.AsyncClient, messages: Messages, clock: Clock,
                    checks: list[dict[str, Any]], interval_s: float = 30.0) -> None:
    await post(client, messages.heartbeat(checks, interval_s=interval_s), clock)


async def results(client: httpx.AsyncClient, messages: Messages, clock: Clock,
                  items: list[dict[str, Any]]) -> None:
    await post(client, messages.envelope("results", {"results": items}), clock)


async def history(client: httpx.AsyncClient, query: str = "", check: str = "db") -> Any:
    response = await client.get(f"/api/v1/checks/dc1/{check}/history{query}")
    assert response.status_code == 200, response.text
    return response.json()


async def checks_by_name(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v1/checks")
    return {row["name"]: row for row in response.json()["checks"]}


# -- the histogram --------------------------------------------------------------


def test_every_latency_falls_in_the_bucket_whose_bounds_hold_it() -> None:
    for latency in (0.0, 0.05, 0.1, 0.14, 0.2, 1.0, 3.3, 250.0, 9_999.0, 104_857.0, 1e9):
        low, high = bucket_bounds(bucket_of(latency))
        assert low <= latency < high or (latency < 0.1 and bucket_of(latency) == 0)
    assert bucket_of(math.inf) == BUCKETS - 1 and bucket_of(math.nan) == 0


def test_quantiles_are_within_the_documented_factor_of_the_exact_value() -> None:
    latencies = [0.3 + 0.7 * index for index in range(1000)]  # 0.3 .. 699.6 ms
    counts = [0] * BUCKETS
    for latency in latencies:
        counts[bucket_of(latency)] += 1
    for q in (0.5, 0.95):
        exact = sorted(latencies)[math.ceil(q * len(latencies)) - 1]
        estimate = quantile(counts, q, min(latencies), max(latencies))
        assert estimate is not None
        assert exact / 2 ** 0.25 <= estimate <= exact * 2 ** 0.25, (q, exact, estimate)
    assert quantile([0] * BUCKETS, 0.5, 0.0, 0.0) is None


# -- rollups --------------------------------------------------------------------


async def test_rollups_count_each_observation_once_per_hour_as_it_arrives(
    central_config: ConfigFactory,
) -> None:
    clock = Clock(BASE_TIME + 2 * HOUR)
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (central, client):
        # Hour 0: a results batch (send = "all") of four observations, one down.
        batch = [observation("db", "up", BASE_TIME + 60, 2.0),
                 observation("db", "up", BASE_TIME + 120, 4.0),
                 observation("db", "down", BASE_TIME + 180, None),
                 observation("db", "up", BASE_TIME + 240, 40.0)]
        await results(client, messages, clock, batch)
        # The same observations again under new message ids count nothing.
        await results(client, messages, clock, batch[1:3])
        # Hour 1: heartbeats carry each check's latest observation; repeating it adds nothing.
        latest = check_item("db", "up", at=rfc3339(BASE_TIME + HOUR + 5), latency_ms=8.0)
        await heartbeat(client, messages, clock, [latest])
        await heartbeat(client, messages, clock, [latest])
        await heartbeat(client, messages, clock, [
            check_item("db", "up", at=rfc3339(BASE_TIME + HOUR + 35), latency_ms=9.0)])

        body = await history(client, f"?since={int(BASE_TIME)}&until={int(BASE_TIME + 2 * HOUR)}"
                             "&step=1h")
        raw = await history(client, f"?since={int(BASE_TIME)}&step=raw")
        stored = central.history.store.rollups("dc1", "db", int(BASE_TIME), int(BASE_TIME + DAY))

    assert [point["at"] for point in body["points"]] == [rfc3339(BASE_TIME),
                                                        rfc3339(BASE_TIME + HOUR)]
    first, second = body["points"]
    assert (first["count"], first["failures"]) == (4, 1)
    assert first["latency_ms"]["min"] == 2.0 and first["latency_ms"]["max"] == 40.0
    assert first["latency_ms"]["mean"] == pytest.approx(46.0 / 3, abs=0.001)
    assert 2 ** -0.25 * 4.0 <= first["latency_ms"]["p50"] <= 4.0 * 2 ** 0.25
    assert first["latency_ms"]["p95"] == 40.0  # clamped to the maximum seen
    assert (second["count"], second["failures"]) == (2, 0)
    assert second["latency_ms"]["min"] == 8.0 and second["latency_ms"]["max"] == 9.0
    assert [row.total for row in stored] == [4, 2]
    assert [(point["status"], point["latency_ms"]) for point in raw["points"]] == [
        ("up", 2.0), ("up", 4.0), ("down", None), ("up", 40.0), ("up", 8.0), ("up", 9.0)]
    assert raw["step"] == "raw" and raw["truncated"] is False


async def test_a_step_of_a_day_merges_the_hours_histograms(central_config: ConfigFactory) -> None:
    clock = Clock(BASE_TIME + 3 * HOUR)
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (_, client):
        await results(client, messages, clock, [
            observation("db", "up", BASE_TIME + hour * HOUR + 10, 1.0 + hour) for hour in range(3)
        ])
        body = await history(client, f"?since={int(BASE_TIME)}&until={int(BASE_TIME + DAY)}"
                             "&step=1d")
    (point,) = body["points"]
    assert point["count"] == 3
    assert (point["latency_ms"]["min"], point["latency_ms"]["max"]) == (1.0, 3.0)


async def test_history_off_keeps_nothing(central_config: ConfigFactory) -> None:
    clock = Clock()
    config = central_config(history=HistorySettings(enabled=False))
    async with running_central(config, wall_clock=clock) as (central, client):
        await results(client, Messages(), clock, [observation("db", "up", BASE_TIME - 5, 1.0)])
        stored = central.history.store.observations("dc1", "db", 0, BASE_TIME + DAY, 10)
        row = (await checks_by_name(client))["db"]
    assert stored == []
    assert row["uptime"] == {"24h": None, "7d": None, "30d": None, "90d": None}


# -- uptime ---------------------------------------------------------------------


async def test_uptime_is_time_weighted_and_degraded_counts_as_up(
        central_config: ConfigFactory) -> None:
    clock = Clock()
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (central, client):
        for offset, status in ((0.0, "up"), (HOUR, "down"), (1.5 * HOUR, "degraded")):
            clock.now = BASE_TIME + offset
            await heartbeat(client, messages, clock, [
                check_item("db", status, at=rfc3339(clock.now))], interval_s=DAY)
            central.watch_once()
        clock.now = BASE_TIME + 2 * HOUR
        central.watch_once()
        row = (await checks_by_name(client))["db"]
    # Down for 30 of 120 minutes.
    assert row["uptime"] == {"24h": 75.0, "7d": 75.0, "30d": 75.0, "90d": 75.0}
    assert row["unknown"]["24h"] == 0.0


async def test_a_silent_agent_is_unknown_not_down(central_config: ConfigFactory) -> None:
    clock = Clock()
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (central, client):
        await heartbeat(client, messages, clock, [check_item("db", "up", at=rfc3339(clock.now))])
        central.watch_once()
        # Interval 30 s + grace 10 s: silent from +40 s; it speaks again at +100 s.
        clock.now = BASE_TIME + 70
        central.watch_once()
        clock.now = BASE_TIME + 100
        await heartbeat(client, messages, clock, [check_item("db", "up", at=rfc3339(clock.now))],
                        interval_s=DAY)
        central.watch_once()
        clock.now = BASE_TIME + 200
        central.watch_once()
        row = (await checks_by_name(client))["db"]
    assert row["uptime"]["24h"] == 100.0
    assert row["unknown"]["24h"] == 30.0  # 60 of 200 seconds


async def test_the_24h_window_forgets_an_outage_older_than_a_day(
        central_config: ConfigFactory) -> None:
    clock = Clock()
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (central, client):
        await heartbeat(client, messages, clock, [
            check_item("db", "down", at=rfc3339(clock.now))], interval_s=2 * DAY)
        clock.now = BASE_TIME + HOUR
        await heartbeat(client, messages, clock, [
            check_item("db", "up", at=rfc3339(clock.now))], interval_s=2 * DAY)
        # The watcher writes the counters down at every hour boundary.
        for hour in range(2, 27):
            clock.now = BASE_TIME + hour * HOUR + 1
            central.watch_once()
        clock.now = BASE_TIME + 26 * HOUR + 1
        row = (await checks_by_name(client))["db"]
        bars = central.history.daily_uptime("dc1", "db", clock.now, days=3)
    assert row["uptime"]["24h"] == 100.0
    assert row["uptime"]["7d"] == pytest.approx(100.0 * 25 / 26, abs=0.001)
    # Day one: down 1 h of 24; day two so far: up; the day before: nothing known.
    day_one = pytest.approx(100 * 23 / 24, abs=0.001)
    assert [uptime for _, uptime, _ in bars] == [None, day_one, 100.0]


# -- pruning --------------------------------------------------------------------


async def test_raw_rows_and_rollups_are_pruned_past_their_retention(
        central_config: ConfigFactory) -> None:
    clock = Clock()
    config = central_config(history=HistorySettings(raw_retention_s=DAY,
                                                           rollup_retention_s=3 * DAY))
    async with running_central(config, wall_clock=clock) as (central, client):
        await results(client, Messages(), clock, [observation("db", "up", BASE_TIME - 5, 1.0)])
        store = central.history.store

        def kept() -> tuple[int, int]:
            return (len(store.observations("dc1", "db", 0, BASE_TIME + 10 * DAY, 10)),
                    len(store.rollups("dc1", "db", 0, int(BASE_TIME + 10 * DAY))))

        central.watch_once()
        before = kept()
        clock.now = BASE_TIME + DAY + HOUR
        central.watch_once()
        after_a_day = kept()
        clock.now = BASE_TIME + 3 * DAY + 2 * HOUR
        central.watch_once()
        after_three = kept()
    assert (before, after_a_day, after_three) == ((1, 1), (0, 1), (0, 0))


# -- the API's parameters --------------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("?since=yesterday", "since must be an RFC 3339 time"),
    ("?until=2026-01-01T00:00:00", "until must be an RFC 3339 time"),
    ("?since=1767225600&until=1767225600", "since must be before until"),
    ("?since=0", "until - since must be at most 400 days"),
    ("?step=30m", 'step must be "raw" or a whole number of hours'),
    ("?step=90m", 'step must be "raw" or a whole number of hours'),
    ("?step=fast", 'step must be "raw" or a whole number of hours'),
    ("?limit=5", "unknown parameter 'limit'"),
    ("?step=raw&step=1h", "step is given twice"),
    ("?a&b&c&d", "the query string is malformed"),
    ("?since=%ff", "since must be an RFC 3339 time"),
    ("?" + "x" * 2000, "the query string exceeds 1024 bytes"),
])
async def test_a_bad_parameter_is_a_400_with_one_line(tmp_path: Path, query: str,
                                                       message: str) -> None:
    clock = Clock()
    async with running_central(make_config(tmp_path), wall_clock=clock) as (_, client):
        await heartbeat(client, Messages(), clock, [check_item("db", "up")])
        response = await client.get(f"/api/v1/checks/dc1/db/history{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_parameter"
    assert body["message"].startswith(message) and "\n" not in body["message"]


async def test_more_steps_than_the_cap_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    config = make_config(tmp_path, history=HistorySettings(rollup_retention_s=1000 * DAY))
    async with running_central(config, wall_clock=clock) as (_, client):
        await heartbeat(client, Messages(), clock, [check_item("db", "up")])
        response = await client.get(
            f"/api/v1/checks/dc1/db/history?since={int(BASE_TIME - 500 * DAY)}&step=1h")
    assert response.status_code == 400
    assert response.json()["message"] == "(until - since) / step must be at most 10000 points"


async def test_an_unknown_check_is_a_404(tmp_path: Path) -> None:
    async with running_central(make_config(tmp_path)) as (_, client):
        missing = await client.get("/api/v1/checks/dc1/nope/history")
        nested = await client.get("/api/v1/checks/dc1/a/b/history")
    assert (missing.status_code, nested.status_code) == (404, 404)
    assert missing.json()["error"] == "not_found"


async def test_raw_points_past_the_cap_say_where_to_continue(
    central_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.central import history_api
    monkeypatch.setattr(history_api, "MAX_POINTS", 2)
    clock = Clock(BASE_TIME + 60)
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (_, client):
        await results(client, messages, clock, [
            observation("db", "up", BASE_TIME + second, float(second)) for second in range(3)])
        first = await history(client, f"?since={int(BASE_TIME)}")
        rest = await history(client, f"?since={first['next_since']}")
    assert first["truncated"] is True and len(first["points"]) == 2
    assert [point["latency_ms"] for point in rest["points"]] == [2.0]
    assert rest["truncated"] is False


async def test_state_changes_are_listed_beside_the_points(central_config: ConfigFactory) -> None:
    clock = Clock()
    messages = Messages()
    async with running_central(central_config(), wall_clock=clock) as (_, client):
        await post(client, messages.state_change("db", "up", "down",
                                                 at=rfc3339(clock.now)), clock)
        body = await history(client)
    assert body["changes"] == [{"at": rfc3339(BASE_TIME), "previous": "unknown",
                                "current": "down"}]
    assert [point["status"] for point in body["points"]] == ["down"]


def test_checks_known_from_before_history_count_uptime_from_the_upgrade(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    storage = Storage.open_in(config.state_dir)  # a database without the history tables
    storage.save_check(CheckRow("dc1", "db", "up", "open", 0.4, None, None, None, None),
                       BASE_TIME - DAY)
    storage.close()
    central = Central(config, wall_clock=lambda: BASE_TIME)
    try:
        (state,) = central.history.store.uptime_states()
        uptime = central.history.uptime("dc1", "db", BASE_TIME + HOUR)
    finally:
        central.storage.close()
    assert (state.agent, state.check, state.status, state.first_seen) == (
        "dc1", "db", "up", BASE_TIME)
    assert uptime is not None and uptime.uptime["24h"] == 100.0


async def _metrics_uptime_24h(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    (line,) = [line for line in text.splitlines()
               if line.startswith("heartwire_check_uptime_ratio{") and 'window="24h"' in line]
    return float(line.rsplit(" ", 1)[1]) * 100


async def test_an_api_page_reads_its_uptime_fresh_metrics_at_most_once_a_minute(
    tmp_path: Path,
) -> None:
    clock = Clock()
    messages = Messages()
    async with running_central(make_config(tmp_path), wall_clock=clock) as (_, client):
        await heartbeat(client, messages, clock, [
            check_item("db", "up", at=rfc3339(clock.now))], interval_s=DAY)
        clock.now += 100
        first = (await checks_by_name(client))["db"]["uptime"]["24h"]
        metrics_first = await _metrics_uptime_24h(client)
        await heartbeat(client, messages, clock, [
            check_item("db", "down", at=rfc3339(clock.now))], interval_s=DAY)
        clock.now += 50
        # A page of /api/v1/checks (1,000 checks at most) reads its own checks' uptime;
        # /metrics lists every check, so it reuses a pass up to a minute old.
        page = (await checks_by_name(client))["db"]["uptime"]["24h"]
        metrics_cached = await _metrics_uptime_24h(client)
        clock.now += 50
        metrics_fresh = await _metrics_uptime_24h(client)
    assert (first, page) == (100.0, pytest.approx(66.667, abs=0.001))
    assert (metrics_first, metrics_cached) == (100.0, 100.0)
    assert metrics_fresh == pytest.approx(50.0)


async def test_history_check_pages_metrics_and_maintenance_need_the_read_token(
    tmp_path: Path,
) -> None:
    token = "s3cret-read-token-0123456789"
    paths = ("/checks/dc1/postgres", "/api/v1/checks/dc1/postgres/history",
             "/metrics", "/api/v1/maintenance")
    async with running_central(make_config(tmp_path, read_tokens=(token,))) as (_, client):
        headers, body = signed(Messages().heartbeat([check_item("postgres", "up")]))
        assert (await client.post("/v1/ingest", content=body, headers=headers)).status_code == 200
        for path in paths:
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert token not in refused.text
            assert (await client.get(path, headers={"authorization": "Bearer nope"})
                    ).status_code == 401, path
            granted = await client.get(path, headers={"authorization": f"Bearer {token}"})
            assert granted.status_code == 200, path
        # A path the routes do not know is refused the same way, so it tells nothing.
        assert (await client.get("/checks/dc1/nothing")).status_code == 401


def test_of_two_receivers_on_one_store_one_prunes_the_hour(tmp_path: Path) -> None:
    # Several receivers on one database each look hourly; the first to claim the
    # hour prunes, the other leaves it.
    config = make_config(tmp_path)
    pruned: list[float] = []

    class CountingHistory(History):
        def prune(self, now: float) -> int:
            pruned.append(now)
            return 0

    storage = open_storage(StorageSettings(tmp_path / "shared"))
    receivers = [CountingHistory(config, storage, lambda: BASE_TIME) for _ in range(2)]
    for hour in (1, 2):
        for receiver in receivers:
            receiver.tick(BASE_TIME + hour * 2 * HOUR)
    storage.close()
    assert pruned == [BASE_TIME + 2 * HOUR, BASE_TIME + 4 * HOUR]
