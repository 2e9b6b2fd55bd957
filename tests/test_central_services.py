"""Quorum across agents: a service checked by several agents is down when enough see it down.

The real Ingest, Incidents and watcher on trio's MockClock (the wall clock is
BASE_TIME plus virtual time), alerts through a webhook channel whose transport
records every delivery (test_central_incidents.py's Hook).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from agent.central.config import AgentSettings, CentralConfig, ServiceSettings
from agent.central.server import Central
from agent.central.services import MAX_SERVICES
from tests.central_support import (
    AGENT_KEY,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)
from tests.conftest import ConfigFactory
from tests.test_central_incidents import Hook, _config, send, wall_clock, watching
from tests.test_central_maintenance import _window
from tests.test_central_views import _render

AGENTS = ("a", "b", "c")


def _fleet(tmp_path: Path, *services: ServiceSettings, **overrides: Any) -> CentralConfig:
    """Agents a, b and c (one key), a webhook channel, the services given."""
    config = _config(tmp_path, grace_s=3600.0, **overrides)
    agents = {name: AgentSettings(name, (AGENT_KEY.public_key(),)) for name in AGENTS}
    return replace(config, agents=MappingProxyType(agents),
                   services=MappingProxyType({service.name: service for service in services}))


def _pg(status: str, **extra: Any) -> dict[str, Any]:
    return check_item("pg", status, service="orders-db", **extra)


def _redis(status: str) -> dict[str, Any]:
    return check_item("redis", status, service="cache")


@asynccontextmanager
async def _watching(tmp_path: Path, *services: ServiceSettings, config: CentralConfig | None = None
                    ) -> AsyncIterator[tuple[Central, Hook, dict[str, Messages]]]:
    """The receiver's watcher and dispatcher on the fleet, the channel's recorder, and a
    message builder per agent."""
    hook = Hook()
    async with watching(config or _fleet(tmp_path, *services), hook) as central:
        yield central, hook, {name: Messages(name) for name in AGENTS}


def _a_alone(central: Central, fleet: dict[str, Messages]) -> None:
    """Everyone sees orders-db and cache up, then a sees both down."""
    _everyone(central, fleet, _pg("up"), _redis("up"))
    send(central, fleet["a"].heartbeat([_pg("down"), _redis("down")]))


def _everyone(central: Any, fleet: dict[str, Messages], *checks: dict[str, Any]) -> None:
    """Each agent of the fleet reports the same checks."""
    for messages in fleet.values():
        send(central, messages.heartbeat(list(checks)))


def _sent(hook: Hook) -> list[tuple[str, str]]:
    return [(body["type"], body["incident"]["summary"]) for _, body in hook.received]


def _row(central: Any, agent: str, check: str) -> dict[str, Any]:
    return next(row for row in central.views.checks()
                if (row["agent"], row["name"]) == (agent, check))


def _service(central: Any, name: str) -> dict[str, Any]:
    return next(service for service in central.views.services_list()["services"]
                if service["name"] == name)


SERVICE_DOWN = "service orders-db down: seen down by 2 of 3 agents: a/pg, b/pg"


async def test_one_agent_of_three_is_shown_two_alert_once_and_recovery_resolves_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path) as (central, hook, fleet):
        _everyone(central, fleet, _pg("up"))
        send(central, fleet["a"].heartbeat([_pg("down")]))
        await trio.sleep(120)
        assert _sent(hook) == []  # a single vantage point: recorded, shown, not sent
        assert _row(central, "a", "pg")["status"] == "down"
        assert _row(central, "a", "pg")["held_because"] == "orders-db up from 2 of 3 agents"
        page = central.views.status_page()
        assert "down (orders-db up from 2 of 3 agents)" in page
        # Listed among the open incidents, and said to be held there.
        incident = page[page.index('<li class="incident check_down">'):]
        incident = incident[:incident.index("</li>")]
        assert "a: check pg is down" in incident and "recorded, not sent" in incident
        assert _service(central, "orders-db")["status"] == "degraded"

        send(central, fleet["b"].heartbeat([_pg("down")]))
        await trio.sleep(300)
        assert _sent(hook) == [("incident.trigger", SERVICE_DOWN)]
        service = _service(central, "orders-db")
        assert (service["status"], service["quorum"]) == ("down", 2)
        assert [(member["agent"], member["status"]) for member in service["members"]] == [
            ("a", "down"), ("b", "down"), ("c", "up")]
        assert _row(central, "b", "pg")["held_because"] == "service orders-db is down"
        assert ('class="overall down">service orders-db down, 2 of 3 checks down</p>'
                in central.views.status_page())

        send(central, fleet["a"].heartbeat([_pg("up")]))
        await trio.sleep(2)
        send(central, fleet["b"].heartbeat([_pg("up")]))
        await trio.sleep(300)
    assert _sent(hook) == [("incident.trigger", SERVICE_DOWN),
                           ("incident.resolve", SERVICE_DOWN)]


async def test_an_agent_that_alone_sees_everything_down_opens_one_incident_not_one_per_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path) as (central, hook, fleet):
        _a_alone(central, fleet)
        await trio.sleep(300)
        unreachable = ("agent a cannot reach its targets: a/pg, a/redis are down while other "
                       "agents see cache, orders-db up")
        assert _sent(hook) == [("incident.trigger", unreachable)]
        for check in ("pg", "redis"):
            assert _row(central, "a", check)["held_because"] == "agent a cannot reach its targets"
        assert "down (agent a cannot reach its targets)" in central.views.status_page()
        assert _service(central, "orders-db")["status"] == "up"  # a's view is set aside

        send(central, fleet["a"].heartbeat([_pg("up"), _redis("down")]))  # one target again
        await trio.sleep(300)
    assert _sent(hook) == [("incident.trigger", unreachable), ("incident.resolve", unreachable)]


async def test_an_agent_no_longer_alone_resolves_and_the_service_alerts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path) as (central, hook, fleet):
        _a_alone(central, fleet)
        await trio.sleep(5)
        send(central, fleet["b"].heartbeat([_pg("down"), _redis("up")]))
        await trio.sleep(5)
    events = [(event, summary.split(":")[0]) for event, summary in _sent(hook)]
    assert events == [("incident.trigger", "agent a cannot reach its targets"),
                      ("incident.resolve", "agent a cannot reach its targets"),
                      ("incident.trigger", "service orders-db down")]


async def test_members_in_maintenance_or_held_by_a_parent_do_not_count_as_down(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path) as (central, hook, fleet):
        _everyone(central, fleet, _pg("up"), check_item("uplink", "up"))
        _window(central, 3600, ("pg",), agent="a")
        send(central, fleet["a"].heartbeat([_pg("down"), check_item("uplink", "up")]))
        send(central, fleet["b"].heartbeat([_pg("down", depends_on=["uplink"]),
                                            check_item("uplink", "down")]))
        await trio.sleep(300)
        # Counted: c alone (up); a is in maintenance, b's pg waits for its uplink.
        assert [summary for _, summary in _sent(hook)] == [
            "b: check uplink is down (refused); holds the alerts of b/pg"]
        service = _service(central, "orders-db")
        assert (service["status"], service["reporting"]) == ("up", 1)
        assert {member["agent"]: member["counted"] for member in service["members"]} == {
            "a": False, "b": False, "c": True}


async def test_a_configured_quorum_and_members_named_in_central_toml(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    named = ServiceSettings("orders-db", (("a", "db"), ("b", "db"), ("c", "db")), quorum=1)
    async with _watching(tmp_path, named) as (central, hook, fleet):
        for messages in fleet.values():
            send(central, messages.heartbeat([check_item("db", "up")]))  # no service key
        send(central, fleet["c"].heartbeat([check_item("db", "down")]))
        await trio.sleep(5)
        assert _sent(hook) == [
            ("incident.trigger", "service orders-db down: seen down by 1 of 3 agents: c/db")]
        assert _service(central, "orders-db")["quorum"] == 1


async def test_a_quorum_larger_than_the_members_reporting_is_capped_at_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path, ServiceSettings("orders-db", quorum=5)) as (
            central, hook, fleet):
        _everyone(central, fleet, _pg("up"))
        for name in ("a", "b"):
            send(central, fleet[name].heartbeat([_pg("down")]))
        await trio.sleep(5)
        assert _sent(hook) == []
        send(central, fleet["c"].heartbeat([_pg("down")]))
        await trio.sleep(5)
        assert [summary for _, summary in _sent(hook)] == [
            "service orders-db down: seen down by 3 of 3 agents: a/pg, b/pg, c/pg"]
        service = _service(central, "orders-db")
        assert (service["quorum"], service["quorum_configured"]) == (3, 5)


async def test_a_service_of_nothing_is_unknown_and_never_alerts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path, ServiceSettings("nothing")) as (central, hook, fleet):
        send(central, fleet["a"].heartbeat([check_item("db", "down")]))
        await trio.sleep(5)
        assert _service(central, "nothing") == {
            "name": "nothing", "status": "unknown", "quorum": 0, "quorum_configured": None,
            "reporting": 0, "down": 0, "members": []}
        assert [summary for _, summary in _sent(hook)] == ["a: check db is down (refused)"]


async def test_a_silent_agent_is_not_a_vantage_point(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _fleet(tmp_path)
    agents = {name: replace(settings, grace_s=10.0) for name, settings in config.agents.items()}
    async with _watching(tmp_path, config=replace(config, agents=MappingProxyType(agents))) as (
            central, hook, fleet):
        send(central, fleet["c"].heartbeat([_pg("up")]))
        for name in ("a", "b"):
            send(central, fleet[name].heartbeat([_pg("down")]))
        await trio.sleep(5)
        assert [summary for _, summary in _sent(hook)] == [SERVICE_DOWN]
        await trio.sleep(60)  # every agent falls silent: nobody reports the service
        assert _service(central, "orders-db")["status"] == "unknown"
        # Unknown is not recovered: the service's incident stays open.
        assert [body["incident"]["kind"] for _, body in hook.received] == [
            "service_down", "agent_silent", "agent_silent", "agent_silent"]
        _everyone(central, fleet, _pg("up"))
        await trio.sleep(5)
    # a reports first: its silence ends, and its view (up) resolves the service.
    assert [(body["type"], body["incident"]["kind"], body["incident"]["agent"])
            for _, body in hook.received][4:] == [
        ("incident.resolve", "agent_silent", "a"), ("incident.resolve", "service_down", None),
        ("incident.resolve", "agent_silent", "b"), ("incident.resolve", "agent_silent", "c")]


async def test_a_service_key_of_ten_thousand_characters_is_refused_and_changes_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _watching(tmp_path) as (central, hook, fleet):
        headers, body = signed(fleet["a"].heartbeat([check_item("pg", "down",
                                                              service="s" * 10_000)]),
                               timestamp=wall_clock())
        answer = central.ingest.handle(headers, body)
        assert answer.status == 422
        assert answer.body["error"] == "invalid_message"
        assert len(str(answer.body["message"])) < 200
        await trio.sleep(5)
        assert central.views.services_list()["services"] == []
        assert hook.received == []


async def test_the_receiver_over_http_shows_services_in_the_api_the_page_and_metrics(
    central_config: ConfigFactory,
) -> None:
    """End to end on both backends: signed heartbeats in; /api/v1/services (behind the read
    token like /api/v1/checks), the status page and /metrics out."""
    token = "s3cret-read-token-0123456789"
    agents = {name: AgentSettings(name, (AGENT_KEY.public_key(),)) for name in AGENTS}
    named = ServiceSettings("cache", (("a", "redis"), ("b", "redis")))
    config = central_config(agents=MappingProxyType(agents), read_tokens=(token,),
                            services=MappingProxyType({"cache": named}), grace_s=3600.0)
    auth = {"authorization": f"Bearer {token}"}
    fleet = {name: Messages(name) for name in AGENTS}
    async with running_central(config) as (_, client):
        for name, pg in (("c", "up"), ("a", "down"), ("b", "down")):
            headers, body = signed(fleet[name].heartbeat([_pg(pg), check_item("redis", "up")]))
            assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        assert (await client.get("/api/v1/services")).status_code == 401
        listed = (await client.get("/api/v1/services", headers=auth)).json()["services"]
        page = (await client.get("/", headers=auth)).text
        metrics = (await client.get("/metrics", headers=auth)).text
        checks = (await client.get("/api/v1/checks", headers=auth)).json()["checks"]
        incidents = (await client.get("/api/v1/incidents", headers=auth)).json()["incidents"]

    assert [(service["name"], service["status"], service["quorum"], service["reporting"])
            for service in listed] == [("orders-db", "down", 2, 3), ("cache", "up", 2, 2)]
    assert listed[0]["members"] == [
        {"agent": agent, "check": "pg", "status": status, "counted": True, "note": None}
        for agent, status in (("a", "down"), ("b", "down"), ("c", "up"))]
    # The members' own incidents are open (recorded, held); the service's is what alerts.
    assert [(incident["kind"], incident["service"], incident["agent"])
            for incident in incidents] == [("check_down", None, "a"), ("check_down", None, "b"),
                                           ("service_down", "orders-db", None)]
    assert {(row["agent"], row["name"]): row["service"] for row in checks} == {
        (agent, check): service for agent in AGENTS
        for check, service in (("pg", "orders-db"), ("redis", "cache" if agent != "c" else None))}

    section = page[page.index('<section id="services">'):]
    section = section[:section.index("</section>")]
    assert 'data-service="orders-db"' in section
    assert '<span class="badge down">down</span> <span class="name">orders-db</span>' in section
    assert "down when 2 of 3 reporting see it down" in section
    for agent, status in (("a", "down"), ("b", "down"), ("c", "up")):
        assert (f'<span class="badge {status}">{status}</span> <a href="/checks/{agent}/pg">'
                f"{agent}/pg</a>") in section
    assert "down (service orders-db is down)" in page

    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    assert families["heartwire_service_up"].type == "gauge"
    assert {sample.labels["service"]: sample.value
            for sample in families["heartwire_service_up"].samples} == {
        "orders-db": 0.0, "cache": 1.0}


async def test_a_service_removed_from_the_config_resolves_and_releases_its_members(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    named = ServiceSettings("orders-db", (("a", "db"), ("b", "db")), quorum=1)
    async with _watching(tmp_path, named) as (central, hook, fleet):
        _everyone(central, fleet, check_item("db", "up"))
        send(central, fleet["a"].heartbeat([check_item("db", "down")]))
        await trio.sleep(5)
        central.apply_config(replace(central.config, services=MappingProxyType({})))
        await trio.sleep(5)
    # The service's alert ends; a/db is no member any more, so its own alert goes out.
    assert _sent(hook) == [
        ("incident.trigger", "service orders-db down: seen down by 1 of 2 agents: a/db"),
        ("incident.resolve", "service orders-db down: seen down by 1 of 2 agents: a/db"),
        ("incident.trigger", "a: check db is down (refused)")]


async def test_an_agent_naming_thousands_of_services_is_judged_within_bounds(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    checks = [check_item(f"c{index:04}", "up", service=f"s{index:04}") for index in range(2000)]
    async with _watching(tmp_path) as (central, hook, fleet):
        send(central, fleet["a"].heartbeat(checks))
        await trio.sleep(3)
        listed = central.views.services_list()["services"]
    assert len(listed) == MAX_SERVICES
    assert listed[-1]["name"] == f"s{MAX_SERVICES - 1:04}"
    assert sum("more than 500 services" in record.message for record in caplog.records) == 1
    assert hook.received == []


async def test_two_receivers_on_one_store_send_a_service_alert_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    first_hook, second_hook = Hook(), Hook()
    fleet = {name: Messages(name) for name in AGENTS}
    config = _fleet(tmp_path)
    async with watching(config, first_hook) as first, watching(config, second_hook) as second:
        _everyone(first, fleet, _pg("up"))
        send(first, fleet["a"].heartbeat([_pg("down")]))
        send(second, fleet["b"].heartbeat([_pg("down")]))
        await trio.sleep(30)
        send(second, fleet["a"].heartbeat([_pg("up")]))
        await trio.sleep(30)
    sent = sorted(_sent(first_hook) + _sent(second_hook))
    assert sent == [("incident.resolve", SERVICE_DOWN), ("incident.trigger", SERVICE_DOWN)]


async def test_a_flapping_service_is_summarised_like_a_flapping_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _fleet(tmp_path, flap_threshold=3, flap_window_s=3600.0)
    async with _watching(tmp_path, config=config) as (central, hook, fleet):
        _everyone(central, fleet, _pg("up"))
        for _ in range(6):  # six outages seen by a and b within twelve minutes
            for name in ("a", "b"):
                send(central, fleet[name].heartbeat([_pg("down")]))
            await trio.sleep(60)
            for name in ("a", "b"):
                send(central, fleet[name].heartbeat([_pg("up")]))
            await trio.sleep(60)
        events = [(body["type"], body["incident"]["kind"]) for _, body in hook.received]
        assert events == [("incident.trigger", "service_down"),
                          ("incident.resolve", "service_down")] * 3 + [
            ("incident.trigger", "check_flapping")]
        flapping = hook.received[-1][1]["incident"]
        assert flapping["service"] == "orders-db" and flapping["agent"] is None
        assert flapping["summary"] == ("service orders-db is flapping (4 outages within 1h); "
                                       "further changes are summarised")
        # It ends down: after a whole quiet window the flapping ends and the outage alerts.
        for name in ("a", "b"):
            send(central, fleet[name].heartbeat([_pg("down")]))
        for _ in range(2):
            await trio.sleep(1801)
            _everyone(central, {name: fleet[name] for name in ("a", "b")}, _pg("down"))
            send(central, fleet["c"].heartbeat([_pg("up")]))
        assert [(body["type"], body["incident"]["kind"]) for _, body in hook.received][7:] == [
            ("incident.resolve", "check_flapping"), ("incident.trigger", "service_down")]


async def test_the_services_render_in_chromium_and_a_hostile_member_name_stays_text(
    tmp_path: Path,
) -> None:
    agents = {name: AgentSettings(name, (AGENT_KEY.public_key(),)) for name in AGENTS}
    config = make_config(tmp_path, agents=MappingProxyType(agents), grace_s=3600.0)
    fleet = {name: Messages(name) for name in AGENTS}
    async with running_central(config) as (_, client):
        for name, status in (("a", "down"), ("b", "up"), ("c", "up")):
            headers, body = signed(fleet[name].heartbeat(
                [_pg(status), check_item("<b>odd</b>", "up", service="orders-db")]))
            assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        dom = await _render(str(client.base_url) + "/", tmp_path / "profile")
    assert "<script" not in dom and "<b>odd</b>" not in dom
    section = dom[dom.index('<section id="services">'):]
    section = section[:section.index("</section>")]
    assert '<span class="badge degraded">degraded</span>' in section
    assert "down when 4 of 6 reporting see it down" in section
    assert section.count('<li class="member">') == 6
    assert '<a href="/checks/a/%3Cb%3Eodd%3C%2Fb%3E">a/&lt;b&gt;odd&lt;/b&gt;</a>' in section
