"""Hostile ingest requests over real HTTP: every one a documented 4xx, none stored, no traceback."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from agent.central.config import AgentSettings
from agent.central.storage import Storage
from tests.central_support import (
    AGENT_KEY,
    BASE_TIME,
    Messages,
    check_item,
    make_config,
    running_central,
    signed,
)

INGEST = "/v1/ingest"
TABLES = ("messages", "agents", "checks", "state_history", "incidents", "seq_gaps")


def _stored_nothing(central: Any) -> None:
    for table in TABLES:
        assert central.storage.count(table) == 0, table


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert all(r.levelno < logging.ERROR for r in caplog.records), caplog.text


def _signed_raw(msg_id: str, body: bytes) -> dict[str, str]:
    """Headers signed over any id and body (a hostile agent holding its key can)."""
    timestamp = str(int(BASE_TIME))
    content = f"{msg_id}.{timestamp}.".encode() + body
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp,
            "webhook-signature": AGENT_KEY.sign(content), "content-type": "application/json"}


async def test_a_body_nested_a_thousand_deep_is_malformed_json_before_any_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"agent": "dc1", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    headers = {"webhook-id": "msg_" + "0" * 32, "webhook-timestamp": str(int(BASE_TIME)),
               "webhook-signature": "v1a,AAAA"}
    async with running_central(make_config(tmp_path)) as (central, client):
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                response = await client.post(INGEST, content=body, headers=headers)
                assert response.status_code == 400
                assert response.json()["error"] == "malformed_json"
        _stored_nothing(central)
    _no_traceback(caplog)


async def test_a_five_thousand_digit_timestamp_is_a_stale_timestamp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    headers, body = signed(Messages().heartbeat())
    headers["webhook-timestamp"] = "9" * 5000
    async with running_central(make_config(tmp_path)) as (central, client):
        with caplog.at_level(logging.DEBUG):
            response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "stale_timestamp"
        _stored_nothing(central)
    _no_traceback(caplog)


def _heartbeat_with(**data: Any) -> dict[str, Any]:
    message = Messages().heartbeat([check_item("db", "up")])
    message["data"].update(data)
    return message


def _check_with(**fields: Any) -> dict[str, Any]:
    return Messages().heartbeat([check_item("db", "up", **fields)])


def _without_runs() -> dict[str, Any]:
    message = _heartbeat_with()
    del message["data"]["runs"]
    return message


INVALID_MESSAGES = {
    "seq 2^63": lambda: Messages().heartbeat(seq=2**63),
    "port 10^30": lambda: _check_with(port=10**30),
    "negative port": lambda: _check_with(port=-1),
    "negative latency": lambda: _check_with(latency_ms=-0.5),
    "naive at": lambda: _check_with(at="2026-01-01T00:00:05"),
    "timestamp yesterday": lambda: {**Messages().heartbeat(), "timestamp": "yesterday"},
    "heartbeat without runs": _without_runs,
    "100 KB check name": lambda: Messages().heartbeat([check_item("x" * 100_000, "up")]),
    "zero interval": lambda: _heartbeat_with(interval_s=0),
    "boolean runs": lambda: _heartbeat_with(runs=True),
    "seq 0 without test": lambda: Messages().heartbeat(seq=0),
    "test flag on seq 5": lambda: _heartbeat_with(test=True),
    "10,001 checks": lambda: Messages().heartbeat(
        [check_item(f"c{i}", "up") for i in range(10_001)]),
}


@pytest.mark.parametrize("make_message", INVALID_MESSAGES.values(), ids=INVALID_MESSAGES.keys())
async def test_signed_messages_outside_the_schema_are_refused_with_422(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make_message: Any
) -> None:
    async with running_central(make_config(tmp_path)) as (central, client):
        headers, body = signed(make_message())
        with caplog.at_level(logging.DEBUG):
            response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_message"
        _stored_nothing(central)
    _no_traceback(caplog)


async def test_the_most_checks_per_heartbeat_is_configurable(tmp_path: Path) -> None:
    messages = Messages()
    async with running_central(make_config(tmp_path, max_checks=3)) as (central, client):
        for count, status in ((3, 200), (4, 422)):
            heartbeat = messages.heartbeat([check_item(f"c{i}", "up") for i in range(count)])
            headers, body = signed(heartbeat)
            response = await client.post(INGEST, content=body, headers=headers)
            assert response.status_code == status, response.text
        assert central.storage.count("checks") == 3


@pytest.mark.parametrize("msg_id", ["hello", "msg_a.b", "msg_" + "A" * 32])
async def test_ids_that_are_not_msg_and_32_hex_digits_are_refused(
    tmp_path: Path, msg_id: str
) -> None:
    message = {**Messages().heartbeat(), "id": msg_id}
    async with running_central(make_config(tmp_path)) as (central, client):
        body = json.dumps(message).encode()
        response = await client.post(INGEST, content=body, headers=_signed_raw(msg_id, body))
        assert response.status_code == 422, response.text
        _stored_nothing(central)


@pytest.mark.parametrize("number", [b"Infinity", b"NaN", b"1e999", b"-Infinity"])
async def test_an_infinite_interval_cannot_switch_the_dead_mans_switch_off(
    tmp_path: Path, number: bytes
) -> None:
    message = Messages().heartbeat()
    body = json.dumps(message).encode().replace(b'"interval_s": 30.0', b'"interval_s": ' + number)
    async with running_central(make_config(tmp_path)) as (central, client):
        response = await client.post(INGEST, content=body, headers=_signed_raw(message["id"], body))
        assert response.status_code == 400
        assert response.json()["error"] == "malformed_json"
        _stored_nothing(central)


async def test_a_naive_time_after_an_aware_one_is_refused_and_the_stored_row_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    messages = Messages()
    async with running_central(make_config(tmp_path)) as (central, client):
        headers, body = signed(messages.heartbeat([check_item("db", "up")]))
        assert (await client.post(INGEST, content=body, headers=headers)).status_code == 200
        naive = messages.heartbeat([check_item("db", "down", at="2026-01-01T00:00:09")])
        headers, body = signed(naive)
        with caplog.at_level(logging.DEBUG):
            response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == 422
        row = central.storage.check("dc1", "db")
        assert row is not None and row.status == "up"
        assert central.storage.count("messages") == 1
    _no_traceback(caplog)


async def test_a_naive_time_stored_by_an_older_receiver_compares_with_nothing(
    tmp_path: Path,
) -> None:
    messages = Messages()
    async with running_central(make_config(tmp_path)) as (central, client):
        headers, body = signed(messages.heartbeat([check_item("db", "up")]))
        assert (await client.post(INGEST, content=body, headers=headers)).status_code == 200
        central.storage._db.execute("UPDATE checks SET at = '2026-01-01T00:00:00'")
        headers, body = signed(messages.heartbeat([check_item("db", "down")]))
        assert (await client.post(INGEST, content=body, headers=headers)).status_code == 200
        row = central.storage.check("dc1", "db")
        assert row is not None and row.status == "down"


async def test_the_seq_0_test_heartbeat_is_acknowledged_and_stored_nowhere(
    tmp_path: Path,
) -> None:
    message = Messages().heartbeat(seq=0)
    message["data"]["test"] = True
    async with running_central(make_config(tmp_path)) as (central, client):
        headers, body = signed(message)
        response = await client.post(INGEST, content=body, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "test", "id": message["id"]}
        _stored_nothing(central)
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1a,", "v1a,AA")
        assert (await client.post(INGEST, content=body, headers=headers)).status_code == 401


async def test_dedup_is_per_agent_one_agent_cannot_shadow_anothers_message(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    agents = dict(config.agents)
    agents["dc2"] = AgentSettings("dc2", (AGENT_KEY.public_key(),))
    config = replace(config, agents=MappingProxyType(agents))
    first = Messages("dc1").heartbeat()
    second = {**Messages("dc2").heartbeat(), "id": first["id"]}
    async with running_central(config) as (central, client):
        for message in (first, second):
            headers, body = signed(message)
            response = await client.post(INGEST, content=body, headers=headers)
            assert response.json()["status"] == "stored", response.text
        assert central.storage.count("messages") == 2
        assert central.storage.agents()[1].last_heartbeat_at is not None


def test_a_receiver_starts_on_yesterdays_database_and_keeps_its_message_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "central.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE messages (msg_id TEXT PRIMARY KEY, agent TEXT NOT NULL,
            seq INTEGER NOT NULL, type TEXT NOT NULL, received_at REAL NOT NULL);
        CREATE INDEX messages_received_at ON messages (received_at);
        CREATE TABLE agents (id TEXT PRIMARY KEY, first_seen REAL NOT NULL,
            last_heartbeat_at REAL, interval_s REAL, last_seq INTEGER NOT NULL DEFAULT 0,
            version TEXT, started_at TEXT, heartbeat_json TEXT);
        INSERT INTO messages VALUES ('msg_00000000000000000000000000000001', 'dc1', 7,
            'heartbeat', 1767225600.0);
    """)
    old.commit()
    old.close()
    storage = Storage(path)
    try:
        assert storage.has_message("dc1", "msg_00000000000000000000000000000001")
        assert not storage.has_message("dc2", "msg_00000000000000000000000000000001")
        with storage.transaction():
            storage.record_message("dc2", "msg_00000000000000000000000000000001", 1,
                                   "heartbeat", BASE_TIME)
        assert storage.count("messages") == 2
        (synchronous,) = storage._db.execute("PRAGMA synchronous").fetchone()
        assert synchronous == 2  # FULL: an acknowledged message is on disk
    finally:
        storage.close()
    reopened = Storage(path)  # the migration runs once
    assert reopened.count("messages") == 2
    reopened.close()


async def test_a_failing_store_is_a_503_with_retry_after_not_a_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_central(make_config(tmp_path)) as (central, client):
        central.storage._db.execute("PRAGMA query_only = ON")  # every write now fails
        headers, body = signed(Messages().heartbeat())
        with caplog.at_level(logging.DEBUG):
            response = await client.post(INGEST, content=body, headers=headers)
        central.storage._db.execute("PRAGMA query_only = OFF")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert response.json()["error"] == "storage_unavailable"
        _stored_nothing(central)
        response = await client.post(INGEST, content=body, headers=headers)
        assert response.json()["status"] == "stored"  # the retry goes through
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
