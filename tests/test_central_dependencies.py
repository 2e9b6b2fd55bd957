"""Dependencies: while a parent is down, its children's outages are recorded, not paged.

The real Ingest and Incidents behind the receiver's watcher, on trio's MockClock (the
wall clock is BASE_TIME plus virtual time), with the webhook recorder of
test_central_incidents.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import trio
import trio.testing

from agent.central.channels.webhook import WebhookSettings
from agent.central.config import AgentSettings, CentralConfig
from tests.central_support import AGENT_KEY, Messages, check_item, running_central, signed
from tests.conftest import ConfigFactory
from tests.test_central_incidents import Hook, _config, send, watching


def _beat(messages: Messages, uplink: str, db: str) -> dict[str, Any]:
    return messages.heartbeat([check_item("db", db, depends_on=["uplink"]),
                               check_item("uplink", uplink)])


def _events(hook: Hook) -> list[tuple[str, str | None]]:
    return [(event, check) for event, check, _ in _summaries(hook)]


def _summaries(hook: Hook) -> list[tuple[str, str | None, str]]:
    return [(body["type"], body["incident"]["check"], body["incident"]["summary"])
            for _, body in hook.received]


async def test_a_child_down_while_its_parent_is_down_alerts_only_when_the_parent_recovers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, _beat(messages, "up", "up"))
        # The parent first, its child 10 s later (its own schedule): the parent's alert
        # waits dependency_wait (30 s) for it, and names it.
        send(central, _beat(messages, "down", "up"))
        await trio.sleep(10)
        assert hook.received == []
        send(central, _beat(messages, "down", "down"))
        await trio.sleep(25)
        sent = _summaries(hook)
        assert sent[0][:2] == ("incident.trigger", "uplink") and len(sent) == 1
        assert sent[0][2].endswith("; holds the alerts of dc1/db")
        db = next(row for row in central.views.checks() if row["name"] == "db")
        assert db["status"] == "down"
        assert db["held_by"] == "dc1/uplink"
        assert "down (parent dc1/uplink is down)" in central.views.status_page()
        await trio.sleep(300)
        assert len(hook.received) == 1
        send(central, _beat(messages, "up", "down"))  # the parent recovers, the child not
        await trio.sleep(2)
        assert _events(hook) == [
            ("incident.trigger", "uplink"), ("incident.resolve", "uplink"),
            ("incident.trigger", "db")]
        send(central, _beat(messages, "up", "up"))
        await trio.sleep(2)
        assert _summaries(hook)[-1][:2] == ("incident.resolve", "db")


async def test_a_child_that_recovers_with_its_parent_is_never_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, _beat(messages, "down", "down"))
        await trio.sleep(60)
        send(central, _beat(messages, "up", "up"))
        await trio.sleep(5)
        assert _events(hook) == [
            ("incident.trigger", "uplink"), ("incident.resolve", "uplink")]
        db = next(row for row in central.views.checks() if row["name"] == "db")
        assert db["held_by"] is None


def _gateway_config(tmp_path: Path) -> CentralConfig:
    config = _config(tmp_path, grace_s=3600.0)
    agents = dict(config.agents)
    agents["dc1"] = replace(agents["dc1"], depends_on=(("gw", "vpn"),))
    agents["gw"] = AgentSettings("gw", (AGENT_KEY.public_key(),))
    return replace(config, agents=MappingProxyType(agents))


async def test_an_agent_depends_on_another_agents_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    dc1, gw = Messages(), Messages("gw")
    async with watching(_gateway_config(tmp_path), hook) as central:
        send(central, gw.heartbeat([check_item("vpn", "down")]))
        send(central, dc1.heartbeat([check_item("db", "down")]))
        await trio.sleep(35)  # the gateway's alert waits dependency_wait for dc1's
        assert _events(hook) == [("incident.trigger", "vpn")]
        db = next(row for row in central.views.checks() if row["agent"] == "dc1")
        assert db["held_by"] == "gw/vpn"
        send(central, gw.heartbeat([check_item("vpn", "up")]))
        await trio.sleep(2)
        assert _events(hook)[1:] == [
            ("incident.resolve", "vpn"), ("incident.trigger", "db")]


async def test_two_receivers_on_one_store_release_a_held_child_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    first_hook, second_hook = Hook(), Hook()
    messages = Messages()
    config = _config(tmp_path, grace_s=3600.0)
    async with watching(config, first_hook) as first, watching(config, second_hook) as second:
        send(first, _beat(messages, "down", "down"))
        await trio.sleep(40)
        send(second, _beat(messages, "up", "down"))  # the parent recovers at the other one
        await trio.sleep(5)
        triggers = [check for hook in (first_hook, second_hook)
                    for event, check in _events(hook) if event == "incident.trigger"]
    assert sorted(triggers) == ["db", "uplink"]


async def test_a_silent_parent_agent_holds_its_childrens_alerts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    dc1, gw = Messages(), Messages("gw")
    config = _gateway_config(tmp_path)
    agents = dict(config.agents)
    agents["gw"] = replace(agents["gw"], grace_s=10.0)
    async with watching(replace(config, agents=MappingProxyType(agents)), hook) as central:
        send(central, gw.heartbeat([check_item("vpn", "up")]))
        await trio.sleep(45)
        assert _events(hook) == [("incident.trigger", None)]  # gw's silence
        send(central, dc1.heartbeat([check_item("db", "down")]))
        await trio.sleep(60)
        assert len(hook.received) == 1
        db = next(row for row in central.views.checks() if row["agent"] == "dc1")
        assert db["held_by"] == "gw"
        send(central, gw.heartbeat([check_item("vpn", "up")]))
        await trio.sleep(2)
        assert _events(hook)[1:] == [("incident.resolve", None), ("incident.trigger", "db")]


async def test_the_receiver_over_http_holds_a_child_and_sends_it_after_its_parent(
    central_config: ConfigFactory,
) -> None:
    """End to end on both backends: signed heartbeats in, page and API out, real time."""
    hook = Hook()
    messages = Messages()
    channels = MappingProxyType({"hook": WebhookSettings("hook", "https://hooks.test/in")})
    config = central_config(channels=channels, grace_s=3600.0, dependency_wait_s=0.5)
    async with running_central(config, transport=httpx.MockTransport(hook.handle),
                               wall_clock=time.time) as (_, client):
        for uplink, db in (("up", "up"), ("down", "down")):
            headers, body = signed(_beat(messages, uplink, db), timestamp=time.time())
            assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        checks = (await client.get("/api/v1/checks")).json()["checks"]
        assert {row["name"]: row["held_by"] for row in checks} == {
            "db": "dc1/uplink", "uplink": None}
        for page in ("/", "/checks/dc1/db"):
            assert "down (parent dc1/uplink is down)" in (await client.get(page)).text
        for _ in range(200):  # the parent's alert, after its wait: at most 10 s
            if hook.received:
                break
            await trio.sleep(0.05)
        headers, body = signed(_beat(messages, "up", "down"), timestamp=time.time())
        assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        for _ in range(200):  # the watcher releases within a second: at most 10 s
            if len(hook.received) >= 3:
                break
            await trio.sleep(0.05)
    assert _events(hook) == [("incident.trigger", "uplink"), ("incident.resolve", "uplink"),
                             ("incident.trigger", "db")]
    assert _summaries(hook)[0][2].endswith("; holds the alerts of dc1/db")


async def test_a_parent_names_ten_of_the_alerts_it_holds_and_counts_the_rest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    children = [check_item(f"app{index:02}", "down", depends_on=["uplink"])
                for index in range(12)]
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, messages.heartbeat([*children, check_item("uplink", "down")]))
        await trio.sleep(35)
    sent = _summaries(hook)
    assert len(sent) == 1
    named = ", ".join(f"dc1/app{index:02}" for index in range(10))
    assert sent[0][2].endswith(f"; holds the alerts of {named} and 2 more")


async def test_a_parent_back_within_its_wait_pages_no_one(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A parent's blip shorter than dependency_wait is recorded, not paged; a child
    still down once its parent is back alerts on its own."""
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, _beat(messages, "down", "up"))
        await trio.sleep(10)
        send(central, _beat(messages, "up", "up"))
        await trio.sleep(60)
        assert hook.received == []
        assert [(row.check, row.resolved_at is not None)
                for row in central.storage.incidents()] == [("uplink", True)]
        send(central, _beat(messages, "down", "down"))
        await trio.sleep(10)
        send(central, _beat(messages, "up", "down"))
        await trio.sleep(5)
        assert hook.received == []  # the child's own alert waits as well
        await trio.sleep(20)
        assert _events(hook) == [("incident.trigger", "db")]


async def test_without_a_wait_a_parent_alerts_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    config = _config(tmp_path, grace_s=3600.0, dependency_wait_s=0.0)
    async with watching(config, hook) as central:
        send(central, _beat(Messages(), "down", "up"))
        await trio.sleep(0.5)
        assert _events(hook) == [("incident.trigger", "uplink")]


async def test_a_check_nothing_depends_on_alerts_without_waiting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, Messages().heartbeat([check_item("uplink", "down")]))
        await trio.sleep(0.5)
        assert _events(hook) == [("incident.trigger", "uplink")]


async def test_a_child_down_just_before_its_parent_is_held_by_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The child's outage reaches the receiver first (its check ran first): its alert
    waits too, so the parent that reports down within the wait holds it."""
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, _beat(messages, "up", "down"))
        await trio.sleep(10)
        assert hook.received == []
        send(central, _beat(messages, "down", "down"))
        await trio.sleep(60)
        sent = _summaries(hook)
        assert [(event, check) for event, check, _ in sent] == [("incident.trigger", "uplink")]
        assert sent[0][2].endswith("; holds the alerts of dc1/db")
        send(central, _beat(messages, "up", "down"))
        await trio.sleep(5)
        assert _events(hook)[1:] == [("incident.resolve", "uplink"), ("incident.trigger", "db")]
