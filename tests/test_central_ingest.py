"""The ingest endpoint over real HTTP (Hypercorn on loopback): verification, dedup, gaps."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from agent.central.config import AgentSettings
from agent.common.signing import Ed25519SigningKey, sign_headers
from tests.central_support import (
    AGENT_KEY,
    BASE_TIME,
    HMAC_AGENT_SECRET,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)
from tests.conftest import ConfigFactory

INGEST = "/v1/ingest"


def _stored_nothing(central: Any) -> None:
    for table in ("messages", "agents", "checks", "state_history", "incidents"):
        assert central.storage.count(table) == 0, table


async def test_a_signed_heartbeat_is_stored_and_shown(central_config: ConfigFactory) -> None:
    messages = Messages()
    heartbeat = messages.heartbeat([check_item("db", "up", group="Databases", host="10.0.0.5",
                                               port=5432)])
    async with running_central(central_config()) as (_, client):
        headers, body = signed(heartbeat)
        response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "stored", "id": heartbeat["id"]}

        agents = (await client.get("/api/v1/agents")).json()["agents"]
        dc1 = next(agent for agent in agents if agent["id"] == "dc1")
        assert dc1["state"] == "alive"
        assert dc1["last_heartbeat"] == "2026-01-01T00:00:00.000Z"
        assert dc1["interval_s"] == 30.0
        checks = (await client.get("/api/v1/checks")).json()["checks"]
        assert checks == [{
            "agent": "dc1", "name": "db", "group": "Databases", "host": "10.0.0.5",
            "port": 5432, "status": "up", "reported_status": "up", "reason": "open",
            "latency_ms": 0.4, "at": "2026-01-01T00:00:00.000Z",
            # Nothing is known of a time span yet: seen once, at this very moment.
            "uptime": {"24h": None, "7d": None, "30d": None, "90d": None},
            "unknown": {"24h": None, "7d": None, "30d": None, "90d": None},
            "maintenance": False, "held_by": None, "service": None, "held_because": None,
        }]


async def test_hmac_agents_and_rotated_keys_are_accepted(tmp_path: Path) -> None:
    new_key = Ed25519SigningKey.generate()
    config = make_config(tmp_path)
    agents = dict(config.agents)
    agents["dc1"] = AgentSettings("dc1", (AGENT_KEY.public_key(), new_key.public_key()))
    config = replace(config, agents=MappingProxyType(agents))
    async with running_central(config) as (central, client):
        for message, key in (
            (Messages("hmac-agent").heartbeat(), HMAC_AGENT_SECRET),
            (Messages("dc1").heartbeat(), new_key),
        ):
            headers, body = signed(message, key)
            response = await client.post(INGEST, content=body, headers=headers)
            assert response.status_code == 200, response.text
        assert central.storage.count("messages") == 2


def _forged(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers, body = signed(message)
    return headers, body.replace(b'"interval_s": 30.0', b'"interval_s": 3000.0')


def _wrong_key(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return signed(message, Ed25519SigningKey.generate())


def _stale(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return signed(message, timestamp=BASE_TIME - 301)


def _unknown_agent(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return signed({**message, "agent": "intruder"})


def _malformed(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = b'{"type": "heartbeat", '
    return sign_headers(message["id"], int(BASE_TIME), body, [AGENT_KEY]), body


def _oversized(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    padded = {**message, "data": {**message["data"], "padding": "x" * 5000}}
    return signed(padded)


def _missing_header(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers, body = signed(message)
    del headers["webhook-signature"]
    return headers, body


def _id_mismatch(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(message).encode()
    return sign_headers("msg_" + "f" * 32, int(BASE_TIME), body, [AGENT_KEY]), body


def _invalid(message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return signed({**message, "data": {**message["data"], "interval_s": "soon"}})


@pytest.mark.parametrize(
    ("make_request", "status", "code"),
    [
        (_forged, 401, "bad_signature"),
        (_wrong_key, 401, "bad_signature"),
        (_stale, 401, "stale_timestamp"),
        (_unknown_agent, 403, "unknown_agent"),
        (_malformed, 400, "malformed_json"),
        (_oversized, 413, "body_too_large"),
        (_missing_header, 400, "missing_header"),
        (_id_mismatch, 400, "id_mismatch"),
        (_invalid, 422, "invalid_message"),
    ],
)
async def test_each_bad_request_is_rejected_with_its_own_error_and_nothing_is_stored(
    central_config: ConfigFactory, caplog: pytest.LogCaptureFixture, make_request: Any,
    status: int, code: str,
) -> None:
    config = central_config(max_body_bytes=4096)
    async with running_central(config) as (central, client):
        headers, body = make_request(Messages().heartbeat([check_item("db", "down")]))
        with caplog.at_level(logging.WARNING, logger="heartwire.central.ingest"):
            response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == status
        assert response.json()["error"] == code
        assert response.json()["message"]
        _stored_nothing(central)
    rejection = [record.getMessage() for record in caplog.records
                 if "rejected message" in record.getMessage()]
    assert len(rejection) == 1
    assert code in rejection[0]
    if code not in ("malformed_json", "unknown_agent"):
        assert "from agent dc1" in rejection[0]


async def test_a_replayed_message_is_acknowledged_but_applied_once(
    central_config: ConfigFactory,
) -> None:
    messages = Messages()
    change = messages.state_change("db", "up", "down")
    async with running_central(central_config()) as (central, client):
        headers, body = signed(change)
        first = await client.post(INGEST, content=body, headers=headers)
        # An agent retry re-signs the same message a little later.
        headers, body = signed(change, timestamp=BASE_TIME + 5)
        second = await client.post(INGEST, content=body, headers=headers)
        assert first.json()["status"] == "stored"
        assert second.status_code == 200
        assert second.json() == {"status": "duplicate", "id": change["id"]}
        assert central.storage.count("messages") == 1
        assert central.storage.state_history("dc1", "db") == [("unknown", "down")]
        assert central.storage.count("incidents") == 1


async def test_a_seq_gap_is_recorded(central_config: ConfigFactory) -> None:
    messages = Messages()
    async with running_central(central_config()) as (central, client):
        for message in (messages.heartbeat(), messages.heartbeat(seq=5), messages.heartbeat()):
            headers, body = signed(message)
            assert (await client.post(INGEST, content=body, headers=headers)).status_code == 200
        assert [gap[:2] for gap in central.storage.seq_gaps("dc1")] == [(2, 5)]
        agents = (await client.get("/api/v1/agents")).json()["agents"]
        assert next(a for a in agents if a["id"] == "dc1")["seq_gaps"] == 1
        assert next(a for a in agents if a["id"] == "dc1")["last_seq"] == 6


async def test_older_news_does_not_overwrite_a_newer_status(central_config: ConfigFactory) -> None:
    messages = Messages()
    async with running_central(central_config()) as (central, client):
        newer = messages.state_change("db", "down", "up", at="2026-01-01T00:00:09.000Z")
        older = messages.state_change("db", "up", "down", at="2026-01-01T00:00:01.000Z")
        for message in (newer, older):
            headers, body = signed(message)
            assert (await client.post(INGEST, content=body, headers=headers)).status_code == 200
        row = central.storage.check("dc1", "db")
        assert row is not None and row.status == "up"
        assert central.storage.count("incidents") == 0


async def test_other_routes_and_methods(tmp_path: Path) -> None:
    async with running_central(make_config(tmp_path)) as (_, client):
        assert (await client.get(INGEST)).status_code == 405
        assert (await client.get("/nowhere")).json()["error"] == "not_found"
        assert (await client.get("/healthz")).text == "ok\n"
        assert (await client.post("/api/v1/agents")).status_code == 405
