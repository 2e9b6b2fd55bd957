"""Dead man's switch, check incidents, flapping and alert delivery, on trio's MockClock.

The receiver reads one wall clock (``BASE_TIME + trio.current_time()`` here), so
virtual time drives heartbeat deadlines, grace periods and retries alike. Messages
go straight to the ingest logic (the HTTP layer has its own tests); alerts go to a
webhook channel whose transport records what was sent and when.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import trio

from agent.central.channels.webhook import WebhookSettings
from agent.central.config import AgentSettings, CentralConfig
from agent.central.server import Central
from tests.central_support import AGENT_KEY, BASE_TIME, Messages, check_item, make_config, signed


def wall_clock() -> float:
    return BASE_TIME + trio.current_time()


@dataclass
class Hook:
    """A webhook endpoint: answers from a plan, records (virtual time, body)."""

    plan: list[httpx.Response] = field(default_factory=list)
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(trio.current_time())
        response = self.plan.pop(0) if self.plan else httpx.Response(200)
        if response.is_success:
            self.received.append((trio.current_time(), json.loads(request.content)))
        return response

    def events(self) -> list[tuple[str, str]]:
        return [(body["type"], body["incident"]["kind"]) for _, body in self.received]


def _config(tmp_path: Path, **overrides: Any) -> CentralConfig:
    channels = MappingProxyType({"hook": WebhookSettings("hook", "https://hooks.test/in")})
    return make_config(tmp_path, channels=channels, **overrides)


@asynccontextmanager
async def watching(config: CentralConfig, hook: Hook) -> AsyncIterator[Central]:
    central = Central(config, wall_clock=wall_clock, transport=httpx.MockTransport(hook.handle))
    async with trio.open_nursery() as nursery:
        await nursery.start(central.watch)
        await nursery.start(central.dispatcher.run)
        yield central
        nursery.cancel_scope.cancel()
    await central.client.aclose()
    central.storage.close()
    central.reader.close()


def send(central: Central, message: dict[str, Any]) -> dict[str, object]:
    headers, body = signed(message, timestamp=wall_clock())
    answer = central.ingest.handle(headers, body)
    assert answer.status == 200, answer.body
    return answer.body


async def test_silence_alerts_after_interval_plus_grace_and_the_next_heartbeat_resolves(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path), hook) as central:
        send(central, messages.heartbeat([check_item("db", "up")], interval_s=30))
        await trio.sleep(39.9)  # interval 30 s + grace 10 s
        assert hook.received == []
        assert central.views.checks()[0]["status"] == "up"
        await trio.sleep(1.5)
        assert hook.events() == [("incident.trigger", "agent_silent")]
        alerted_at = hook.received[0][0]
        assert 40.0 <= alerted_at <= 41.0
        # While silent, checks show unknown, not their last status.
        assert central.views.checks()[0]["status"] == "unknown"
        assert central.views.checks()[0]["reported_status"] == "up"
        assert central.views.agents()[0]["state"] == "silent"

        await trio.sleep(100)  # still silent: no second alert
        assert len(hook.received) == 1
        send(central, messages.heartbeat([check_item("db", "up")], interval_s=30))
        await trio.sleep(0.1)
        assert hook.events()[-1] == ("incident.resolve", "agent_silent")
        assert "RESOLVED after" in hook.received[-1][1]["text"]
        assert central.views.checks()[0]["status"] == "up"


async def test_the_heartbeat_interval_and_per_agent_grace_set_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    config = _config(tmp_path)
    agents = dict(config.agents)
    agents["dc1"] = AgentSettings("dc1", (AGENT_KEY.public_key(),), grace_s=120.0)
    config = replace(config, agents=MappingProxyType(agents))
    async with watching(config, hook) as central:
        send(central, Messages().heartbeat(interval_s=5))
        await trio.sleep(124)
        assert hook.received == []
        await trio.sleep(2)
        assert hook.events() == [("incident.trigger", "agent_silent")]


async def test_a_check_down_alerts_once_per_incident_and_recovery_resolves(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, messages.state_change("db", "up", "down"))
        for second in range(5):  # heartbeats keep saying "down": still one incident
            await trio.sleep(10)
            send(central, messages.heartbeat(
                [check_item("db", "down", at=f"2026-01-01T00:00:1{second}.000Z")]))
        await trio.sleep(1)
        assert hook.events() == [("incident.trigger", "check_down")]
        assert hook.received[0][1]["incident"]["check"] == "db"
        send(central, messages.state_change("db", "down", "up", at="2026-01-01T00:01:00.000Z"))
        await trio.sleep(1)
        assert hook.events() == [("incident.trigger", "check_down"),
                                 ("incident.resolve", "check_down")]
        assert central.storage.open_incidents() == []


async def test_degraded_alerts_only_when_configured(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    for alert_on_degraded, expected in ((False, []), (True, [("incident.trigger", "check_down")])):
        hook = Hook()
        state = tmp_path / str(alert_on_degraded)
        config = _config(state, grace_s=3600.0, alert_on_degraded=alert_on_degraded)
        async with watching(config, hook) as central:
            send(central, Messages().state_change("db", "up", "degraded"))
            await trio.sleep(1)
        assert hook.events() == expected


def _flip(central: Central, messages: Messages, minute: int, current: str) -> None:
    previous = "up" if current == "down" else "down"
    send(central, messages.state_change("db", previous, current,
                                        at=f"2026-01-01T00:{minute:02d}:00.000Z"))


async def test_flapping_is_summarised_not_spammed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    config = _config(tmp_path, grace_s=36000.0, flap_threshold=3, flap_window_s=3600.0)
    async with watching(config, hook) as central:
        for minute in range(0, 20, 2):  # ten outages in twenty minutes
            _flip(central, messages, minute, "down")
            await trio.sleep(60)
            _flip(central, messages, minute + 1, "up")
            await trio.sleep(60)
        events = hook.events()
        assert events == [
            ("incident.trigger", "check_down"), ("incident.resolve", "check_down"),
        ] * 3 + [("incident.trigger", "check_flapping")]
        assert "flapping (4 outages within 1h)" in hook.received[-1][1]["text"]
        assert central.storage.count("incidents") == 11  # all recorded, few sent

        # It ends down; once no new outage opened for a whole window, flapping
        # resolves and the outage that is still open is sent as a real alert.
        _flip(central, messages, 30, "down")
        await trio.sleep(3599)
        assert len(hook.received) == 7
        await trio.sleep(2)
        assert hook.events()[7:] == [("incident.resolve", "check_flapping"),
                                     ("incident.trigger", "check_down")]


async def test_a_failing_channel_is_retried_with_backoff_until_delivered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook(plan=[httpx.Response(503), httpx.Response(500), httpx.Response(429,
                headers={"retry-after": "120"}), httpx.Response(502)])
    config = _config(tmp_path, grace_s=3600.0, retry_initial_s=10.0, retry_max_s=300.0)
    async with watching(config, hook) as central:
        send(central, Messages().state_change("db", "up", "down"))
        await trio.sleep(1000)
    # Full jitter below 10 s, 20 s, then Retry-After 120 s (longer than the 40 s
    # ceiling), then below 80 s.
    gaps = [later - earlier for earlier, later in itertools.pairwise(hook.attempts)]
    assert len(gaps) == 4
    ceilings = [10, 20, 120, 80]
    assert all(0 <= gap <= top + 1e-6 for gap, top in zip(gaps, ceilings, strict=True))
    assert 120 <= gaps[2]
    assert hook.events() == [("incident.trigger", "check_down")]


async def test_a_refusing_channel_does_not_block_the_alerts_behind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook(plan=[httpx.Response(400)])
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, messages.state_change("db", "up", "down"))
        await trio.sleep(1)
        send(central, messages.state_change("db", "down", "up", at="2026-01-01T00:01:00.000Z"))
        await trio.sleep(1)
        rows = central.storage.notifications("hook")
    assert [(row["event"], row["state"]) for row in rows] == [("trigger", "failed"),
                                                               ("resolve", "sent")]
    assert "400" in rows[0]["last_error"]


async def test_queued_alerts_survive_a_receiver_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    down = Hook(plan=[httpx.Response(503)] * 100)
    config = _config(tmp_path, grace_s=3600.0)
    async with watching(config, down) as central:
        send(central, Messages().state_change("db", "up", "down"))
        await trio.sleep(30)
    assert down.received == [] and len(down.attempts) >= 2

    up = Hook()
    async with watching(config, up):
        await trio.sleep(700)  # the stored next attempt comes due
    assert up.events() == [("incident.trigger", "check_down")]


async def test_an_agent_removed_from_the_config_is_no_longer_watched(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    config = _config(tmp_path)
    async with watching(config, hook) as central:
        send(central, Messages().heartbeat(interval_s=30))
        central.apply_config(replace(config, agents=MappingProxyType({})))
        await trio.sleep(600)
    assert hook.received == []


async def test_a_receiver_restart_does_not_count_its_own_downtime_as_silence(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    config = _config(tmp_path)  # grace 10 s
    async with watching(config, hook) as central:
        send(central, Messages().heartbeat(interval_s=30))
    await trio.sleep(3600)  # the receiver is down for an hour
    async with watching(config, hook):
        await trio.sleep(39)
        assert hook.received == []  # 30 s + 10 s from the restart, not from the heartbeat
        await trio.sleep(2)
        assert hook.events() == [("incident.trigger", "agent_silent")]


async def test_history_past_its_retention_is_pruned_on_the_hourly_schedule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    two_hours = 7200.0
    config = _config(tmp_path, dedup_retention_s=two_hours, state_history_retention_s=two_hours,
                     seq_gap_retention_s=two_hours, notification_retention_s=two_hours,
                     incident_retention_s=two_hours)
    messages = Messages()
    tables = ("messages", "state_history", "seq_gaps", "incidents", "notifications")
    async with watching(config, hook) as central:
        send(central, messages.heartbeat([check_item("db", "down")], interval_s=86400))
        send(central, messages.heartbeat([check_item("db", "up")], interval_s=86400, seq=5))
        await trio.sleep(1)
        assert hook.events() == [("incident.trigger", "check_down"),
                                 ("incident.resolve", "check_down")]
        kept = {table: central.storage.count(table) for table in tables}
        assert all(kept.values()), kept
        await trio.sleep(1.5 * 3600)  # younger than the retention: all kept
        assert {table: central.storage.count(table) for table in tables} == kept
        await trio.sleep(1.6 * 3600)  # the sweep at 3 h finds them older than 2 h
        assert {table: central.storage.count(table) for table in tables} == dict.fromkeys(
            tables, 0)
        assert central.storage.count("checks") == 1  # the latest state is not history


async def test_a_hostile_channel_answer_costs_one_delivery_not_the_dispatcher(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.central.channels.telegram import TelegramSettings

    answers = [
        httpx.Response(429, json={"ok": False, "parameters": {"retry_after": "soon"}}),
        httpx.Response(500, json=["not", "an", "object"]),
    ]
    seen: list[float] = []

    def telegram(request: httpx.Request) -> httpx.Response:
        seen.append(trio.current_time())
        return answers.pop(0) if answers else httpx.Response(200, json={"ok": True})

    channels = MappingProxyType({"tg": TelegramSettings("tg", "123:abc", "42",
                                                        "https://tg.test")})
    config = make_config(tmp_path, channels=channels, retry_initial_s=10.0, retry_max_s=60.0)
    central = Central(config, wall_clock=wall_clock, transport=httpx.MockTransport(telegram))
    with caplog.at_level(logging.WARNING):
        async with trio.open_nursery() as nursery:
            await nursery.start(central.watch)
            await nursery.start(central.dispatcher.run)
            send(central, Messages().heartbeat([check_item("db", "down")], interval_s=86400))
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
    await central.client.aclose()
    central.storage.close()
    central.reader.close()
    assert [row["state"] for row in central_notifications(tmp_path)] == ["sent"]
    assert len(seen) == 3
    assert 0 <= seen[1] - seen[0] <= 11  # a retry_after that is no number is ignored
    # Neither answer is unforeseen any more: the channel reads only what the Bot API
    # documents, so each is an ordinary retryable failure, logged without a traceback.
    assert not [record for record in caplog.records if record.exc_info]


def central_notifications(tmp_path: Path) -> list[dict[str, Any]]:
    from agent.central.storage import Storage

    storage = Storage.open_in(tmp_path / "state")
    try:
        return storage.notifications()
    finally:
        storage.close()


async def test_a_failing_store_pauses_the_watcher_and_the_dispatcher_it_ends_neither(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = Hook()
    with caplog.at_level(logging.INFO):
        async with watching(_config(tmp_path), hook) as central:
            send(central, Messages().heartbeat(interval_s=30))
            central.storage._db.execute("PRAGMA query_only = ON")  # a full disk, in effect
            await trio.sleep(120)  # the silence is due, but nothing can be written
            assert hook.received == []
            central.storage._db.execute("PRAGMA query_only = OFF")
            await trio.sleep(15)
            assert hook.events() == [("incident.trigger", "agent_silent")]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot use the store" in errors[0]  # once, not every sweep
    assert not [r for r in caplog.records if r.exc_info]
    assert "can use the store again" in caplog.text


def test_dispatch_backs_off_with_full_jitter_below_a_doubling_ceiling() -> None:
    """The receiver retries as the agent does (common.backoff): a random wait below
    retry_initial, a ceiling that doubles up to retry_max, a longer Retry-After kept."""
    import random

    from agent.central.dispatch import Dispatcher

    dispatcher = Dispatcher(None, {}, wall_clock=lambda: 0.0,  # type: ignore[arg-type]
                            retry_initial_s=10.0, retry_max_s=300.0, rng=random.Random(7))
    delays = [dispatcher.retry_delay(attempt) for attempt in range(1, 9) for _ in range(50)]
    ceilings = [min(300.0, 10.0 * 2 ** (attempt - 1)) for attempt in range(1, 9)
                for _ in range(50)]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    assert max(delays) > 150  # the ceiling does grow to retry_max
    assert all(120 <= dispatcher.retry_delay(2, 120) <= 300 for _ in range(20))
    assert dispatcher.retry_delay(1, 10_000) == 300.0
    assert dispatcher.retry_delay(1, float("nan")) <= 10
