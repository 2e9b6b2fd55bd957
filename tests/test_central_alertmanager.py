"""The Alertmanager channel: the real receiver posting to a loopback Alertmanager API v2."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import trio

from agent.central import config as central_config
from agent.central.channels.alertmanager import AlertmanagerChannel, AlertmanagerSettings
from agent.central.config import AgentSettings
from agent.central.server import Central
from agent.common.timefmt import rfc3339
from agent.errors import ConfigError
from tests.alertmanager_fake import FakeAlertmanager, running_alertmanager
from tests.central_fleet import Clock
from tests.central_support import (
    AGENT_KEY,
    BASE_TIME,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)


async def _wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):  # 10 s at most
        if condition():
            return
        await trio.sleep(0.02)
    pytest.fail(f"no {what} within 10 s")


async def _report(client: httpx.AsyncClient, messages: Messages, clock: Clock,
                  status: str) -> None:
    headers, body = signed(messages.heartbeat([check_item(
        "db", status, at=rfc3339(clock.now), group="Databases", host="10.0.0.5", port=5432)],
        interval_s=3600), timestamp=clock.now)
    assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success


def _config(tmp_path: Path, fake: FakeAlertmanager) -> Any:
    settings = AlertmanagerSettings("am", fake.url, labels=(("team", "storage"),),
                                    token="s3cret-token", external_url="https://status.example")
    return make_config(tmp_path, channels=MappingProxyType({"am": settings}))


def _channel(central: Central) -> AlertmanagerChannel:
    channel = central.dispatcher.channels["am"]
    assert isinstance(channel, AlertmanagerChannel)
    return channel


async def test_an_incident_fires_and_resolves_one_alertmanager_alert(tmp_path: Path) -> None:
    clock = Clock()
    messages = Messages()
    with running_alertmanager(clock) as fake:
        async with running_central(_config(tmp_path, fake), wall_clock=clock) as (_, client):
            await _report(client, messages, clock, "down")
            await _wait_for(lambda: len(fake.posts) == 1, "the trigger")
            firing = fake.listing()
            clock.now += 125
            await _report(client, messages, clock, "up")
            await _wait_for(lambda: len(fake.posts) == 2, "the resolve")
            resolved = fake.listing()

    (trigger,), (resolve,) = fake.posts
    assert trigger["labels"] == {
        "alertname": "HeartwireCheckDown", "agent": "dc1", "check": "db", "group": "Databases",
        "target": "10.0.0.5:5432", "severity": "critical", "incident": "1", "team": "storage"}
    assert trigger["annotations"] == {"summary": "dc1: check db is down (refused)",
                                      "description": "ALERT: dc1: check db is down (refused)"}
    assert trigger["startsAt"] == rfc3339(BASE_TIME)
    # Alertmanager expires an alert it stops hearing of: four refresh periods ahead.
    assert trigger["endsAt"] == rfc3339(BASE_TIME + 240)
    assert trigger["generatorURL"] == "https://status.example/checks/dc1/db"
    # The resolve names the same alert (same labels) and ends it when it recovered.
    assert resolve["labels"] == trigger["labels"]
    assert resolve["endsAt"] == rfc3339(BASE_TIME + 125)
    assert resolve["annotations"]["description"] == \
        "RESOLVED after 2m05s: dc1: check db is down (refused)"
    assert [alert["status"]["state"] for alert in firing] == ["active"]
    assert [alert["status"]["state"] for alert in resolved] == ["resolved"]
    assert fake.authorization == ["Bearer s3cret-token"] * 2


async def test_a_service_alert_carries_the_service_label_and_names_no_single_agent(
    tmp_path: Path,
) -> None:
    clock = Clock()
    fleet = {name: Messages(name) for name in ("a", "b")}
    with running_alertmanager(clock) as fake:
        config = _config(tmp_path, fake)
        agents = {name: AgentSettings(name, (AGENT_KEY.public_key(),)) for name in fleet}
        config = replace(config, agents=MappingProxyType(agents))
        async with running_central(config, wall_clock=clock) as (_, client):
            for name, status in (("b", "up"), ("a", "down"), ("b", "down")):
                headers, body = signed(fleet[name].heartbeat([check_item(
                    "pg", status, service="orders-db", host="10.0.0.9", port=5432)],
                    interval_s=3600), timestamp=clock.now)
                assert (await client.post("/v1/ingest", content=body, headers=headers)
                        ).is_success
            await _wait_for(lambda: len(fake.posts) == 1, "the service's trigger")
            clock.now += 60
            headers, body = signed(fleet["a"].heartbeat([check_item(
                "pg", "up", service="orders-db")], interval_s=3600), timestamp=clock.now)
            assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
            await _wait_for(lambda: len(fake.posts) == 2, "the service's resolve")
    (trigger,), (resolve,) = fake.posts
    assert trigger["labels"] == {
        "alertname": "HeartwireServiceDown", "service": "orders-db", "severity": "critical",
        "incident": "3", "team": "storage"}
    assert trigger["annotations"]["summary"] == (
        "service orders-db down: seen down by 2 of 2 agents: a/pg, b/pg")
    assert trigger["generatorURL"] == "https://status.example/#services"
    assert resolve["labels"] == trigger["labels"]


async def test_firing_alerts_are_refreshed_until_they_resolve(tmp_path: Path) -> None:
    clock = Clock()
    messages = Messages()
    with running_alertmanager(clock) as fake:
        async with running_central(_config(tmp_path, fake), wall_clock=clock) as (central, client):
            await _report(client, messages, clock, "down")
            await _wait_for(lambda: len(fake.posts) == 1, "the trigger")
            channel = _channel(central)
            # Past resolve_timeout without a refresh, Alertmanager would call it resolved.
            clock.now += 300
            expired = fake.listing()
            read_in: list[int] = []
            check_of = channel.check_of

            def recording_check_of(agent: str, check: str) -> object:
                read_in.append(threading.get_ident())
                return check_of(agent, check)

            channel.check_of = recording_check_of  # type: ignore[assignment]
            refreshed = await channel.refresh(central.storage.open_incidents)
            channel.check_of = check_of
            active = fake.listing()
            await _report(client, messages, clock, "up")
            await _wait_for(lambda: len(fake.posts) == 3, "the resolve")
            after_resolve = await channel.refresh(central.storage.open_incidents)
    assert [alert["status"]["state"] for alert in expired] == ["resolved"]
    assert refreshed == 1 and fake.posts[1][0]["endsAt"] == rfc3339(BASE_TIME + 300 + 240)
    # A refresh reads the store in the receiver's reader thread, never on the loop.
    assert read_in and threading.get_ident() not in read_in
    assert [alert["status"]["state"] for alert in active] == ["active"]
    assert after_resolve == 0 and len(fake.posts) == 3


async def test_the_receiver_refreshes_on_its_own_schedule(tmp_path: Path) -> None:
    clock = Clock()
    with running_alertmanager(clock) as fake:
        settings = AlertmanagerSettings("am", fake.url, resend_every_s=0.2)
        config = make_config(tmp_path, channels=MappingProxyType({"am": settings}))
        async with running_central(config, wall_clock=clock) as (_, client):
            await _report(client, Messages(), clock, "down")
            await _wait_for(lambda: len(fake.posts) >= 3, "two refreshes")
    assert all(post[0]["labels"]["check"] == "db" for post in fake.posts)


@pytest.mark.parametrize(("status", "state", "attempts"), [(400, "failed", 1),
                                                          (503, "pending", 1)])
async def test_a_refusal_is_permanent_and_a_5xx_is_retried(
    tmp_path: Path, status: int, state: str, attempts: int
) -> None:
    clock = Clock()
    with running_alertmanager(clock) as fake:
        fake.refuse = status
        async with running_central(_config(tmp_path, fake), wall_clock=clock) as (central, client):
            await _report(client, Messages(), clock, "down")
            await _wait_for(lambda: central.storage.notifications("am")[0]["attempts"] >= 1,
                            "the first attempt")
            (row,) = central.storage.notifications("am")
    assert (row["state"], row["attempts"]) == (state, attempts)
    assert f"alertmanager am answered {status}" in row["last_error"]


def test_the_config_table_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    token = tmp_path / "am-token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    path.write_text(
        '[channels.am]\nkind = "alertmanager"\nurl = "http://127.0.0.1:9093/"\n'
        f'resend_every = "30s"\ntoken_file = "{token}"\nseverity = "page"\n'
        '[channels.am.labels]\nteam = "db"\n')
    settings = central_config.load(path).channels["am"]
    assert isinstance(settings, AlertmanagerSettings)
    assert (settings.url, settings.resend_every_s, settings.token, settings.severity,
            settings.labels) == ("http://127.0.0.1:9093", 30.0, "t0ken", "page", (("team", "db"),))
    assert "t0ken" not in repr(settings)
    for body, message in [
        ('url = "ftp://x"\n', "channels.am.url: expected an http(s):// URL, got 'ftp://x'"),
        ('url = "http://x"\nresend_every = "1s"\n',
         "channels.am.resend_every: must be at least 5s"),
        ('url = "http://x"\n[channels.am.labels]\nagent = "x"\n',
         "channels.am.labels.agent: must be a Prometheus label name not set by heartwire"),
    ]:
        path.write_text(f'[channels.am]\nkind = "alertmanager"\n{body}')
        with pytest.raises(ConfigError) as caught:
            central_config.load(path)
        assert message in str(caught.value)
