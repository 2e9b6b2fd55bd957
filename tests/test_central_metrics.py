"""``GET /metrics`` on the real receiver, read with Prometheus' own text parser."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.central_fleet import END, Clock, build_fleet, fleet_config
from tests.central_support import (
    HMAC_AGENT_SECRET,
    Messages,
    check_item,
    running_central,
    signed,
)


def _samples(text: str) -> dict[str, list[Sample]]:
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = (family.type, family.samples)
    assert all(kind in ("gauge", "counter", "histogram") for kind, _ in families.values())
    return {name: samples for name, (_, samples) in families.items()}


def _value(samples: list[Sample], name: str | None = None, **labels: str) -> float:
    matching = [sample.value for sample in samples
                if all(sample.labels.get(key) == value for key, value in labels.items())
                and (name is None or sample.name == name)]
    assert len(matching) == 1, (labels, matching)
    return matching[0]


async def test_metrics_give_checks_agents_uptime_and_the_receivers_counters(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with running_central(fleet_config(tmp_path), wall_clock=clock) as (central, client):
        build_fleet(central, clock)
        # Through HTTP, so the receiver's own counters see them: one stored, one
        # duplicate, one refused.
        message = Messages("dc1").heartbeat([])
        headers, body = signed(message, timestamp=clock.now)
        for _ in range(2):
            assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        headers, body = signed(Messages("dc1").heartbeat([]), HMAC_AGENT_SECRET,
                               timestamp=clock.now)  # not dc1's key
        refused = await client.post("/v1/ingest", content=body, headers=headers)
        assert refused.status_code == 401
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = _samples(response.text)

    up = metrics["heartwire_check_up"]
    assert _value(up, agent="dc1", check="postgres-primary", group="Databases") == 1.0
    assert _value(up, agent="dc1", check="redis-sessions") == 0.0
    assert _value(up, agent="dc2", check="smtp-relay") == 1.0  # degraded counts as up
    assert _value(up, agent="edge1", check="vpn-gateway") == 0.0  # silent: unknown
    assert _value(up, check="<b>odd</b>", group="") == 1.0
    status = metrics["heartwire_check_status"]
    assert _value(status, check="redis-sessions", status="down") == 1.0
    assert _value(status, check="redis-sessions", status="up") == 0.0
    assert _value(status, check="vpn-gateway", status="unknown") == 1.0
    assert len(status) == 4 * len(up)
    latency = metrics["heartwire_check_latency_seconds"]
    assert 0.0002 < _value(latency, check="postgres-primary") < 0.002
    assert not [sample for sample in latency if sample.labels["check"] == "redis-sessions"]
    uptime = metrics["heartwire_check_uptime_ratio"]
    assert _value(uptime, check="postgres-primary", window="30d") == 1.0
    assert 0.95 < _value(uptime, check="redis-sessions", window="24h") < 0.99
    heartbeats = metrics["heartwire_agent_last_heartbeat_timestamp_seconds"]
    assert END - 700 < _value(heartbeats, agent="edge1") < END - 600
    silent = metrics["heartwire_agent_silent"]
    assert (_value(silent, agent="edge1"), _value(silent, agent="dc1")) == (1.0, 0.0)
    messages = metrics["heartwire_messages"]
    assert _value(messages, outcome="stored") == 1.0
    assert _value(messages, outcome="duplicate") == 1.0
    assert _value(messages, outcome="bad_signature") == 1.0
    duration = metrics["heartwire_ingest_duration_seconds"]
    assert _value(duration, "heartwire_ingest_duration_seconds_count") == 3.0
    assert _value(duration, "heartwire_ingest_duration_seconds_bucket", le="+Inf") == 3.0


async def test_label_values_are_escaped(tmp_path: Path) -> None:
    clock = Clock()
    group = 'say "hi"\\ and\nbye'
    async with running_central(fleet_config(tmp_path), wall_clock=clock) as (_, client):
        headers, body = signed(Messages("dc1").heartbeat([
            check_item("db", "up", group=group)]), timestamp=clock.now)
        assert (await client.post("/v1/ingest", content=body, headers=headers)).is_success
        text = (await client.get("/metrics")).text
    assert _value(_samples(text)["heartwire_check_up"], check="db", group=group) == 1.0
