"""Property-based fuzz of the receiver's ingest, through its real ASGI app and store.

Whatever the body and headers, signed or not: never a 500, never a traceback or an
error in the logs, and nothing stored from a message the receiver refused. A 2xx
only for a message the schema accepts. Bounded: a fixed number of examples per
property, each one request against a fresh receiver (fresh SQLite file).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.central.server import Central
from agent.outbound.messages import validate
from tests.central_support import AGENT_KEY, BASE_TIME, Messages, check_item, make_config

TABLES = ("messages", "agents", "checks", "state_history", "incidents", "seq_gaps",
          "notifications")
# Fixed and small: CI has two cores; each property runs in a few seconds.
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=40)
    | st.sampled_from(["msg_" + "a" * 32, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
                       "up", "down", "dc1", "x" * 300]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
PATHS = [
    ("type",), ("id",), ("seq",), ("agent",), ("timestamp",), ("data",),
    ("data", "interval_s"), ("data", "checks"), ("data", "runs"), ("data", "skipped"),
    ("data", "outbox"), ("data", "outbox", "depth"), ("data", "dropped", "results"),
    ("data", "rejected"), ("data", "test"), ("data", "started_at"), ("data", "version"),
    ("data", "checks", 0), ("data", "checks", 0, "name"), ("data", "checks", 0, "status"),
    ("data", "checks", 0, "port"), ("data", "checks", 0, "at"),
    ("data", "checks", 0, "latency_ms"), ("data", "checks", 0, "host"),
    ("data", "check"), ("data", "observation"), ("data", "observation", "at"),
    ("data", "observation", "dns_ms"), ("data", "results"), ("data", "current"),
]
# Bodies a parser chokes on: deep nesting (RecursionError), huge numbers, bare constants.
nasty_bodies = st.one_of(
    st.integers(1, 3000).map(lambda n: b'{"agent": "dc1", "x": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 3000).map(lambda n: b"[" * n),
    st.integers(300, 6000).map(lambda n: b'{"agent": "dc1", "seq": ' + b"9" * n + b"}"),
    st.sampled_from([b"NaN", b'{"agent": "dc1", "seq": Infinity}', b"\xff\xfe{}", b'"\\ud800"']),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


def _base_message(kind: str) -> dict[str, Any]:
    messages = Messages()
    if kind == "heartbeat":
        return messages.heartbeat([check_item("db", "up", port=5432, host="10.0.0.5")])
    if kind == "state_change":
        return messages.state_change("db", "up", "down")
    return messages.envelope("results", {"results": [
        messages.state_change("db", "up", "down")["data"]["observation"]]})


def _mutate(message: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    target: Any = message
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(target, dict) or (isinstance(target, list) and isinstance(last, int)
                                    and last < len(target)):
        if delete and isinstance(target, dict):
            target.pop(last, None)
        elif delete:
            del target[last]
        else:
            target[last] = value


def _signature_headers(msg_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp,
            "webhook-signature": AGENT_KEY.sign(content), "content-type": "application/json"}


@contextmanager
def _logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _post(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], dict[str, int]]:
    """One request to a fresh receiver's ASGI app: status, JSON answer, rows stored."""

    async def run(state_dir: Path) -> tuple[int, dict[str, Any], dict[str, int]]:
        central = Central(make_config(state_dir), wall_clock=lambda: BASE_TIME)
        try:
            transport = httpx.ASGITransport(app=central.app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
                # Raw bytes: the client must not tidy up what a hostile one would send.
                raw = [(name.encode(), value.encode()) for name, value in headers.items()]
                response = await client.post("/v1/ingest", content=body, headers=raw)
            counts = {table: central.storage.count(table) for table in TABLES}
            return response.status_code, response.json(), counts
        finally:
            await central.client.aclose()
            central.storage.close()
            central.reader.close()

    with tempfile.TemporaryDirectory() as directory:
        return trio.run(run, Path(directory))


def _assert_sound(status: int, answer: dict[str, Any], counts: dict[str, int],
                  records: list[logging.LogRecord], message: object = None) -> None:
    assert status < 500, answer
    assert [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR] == []
    if status != 200:
        assert 400 <= status < 500
        assert set(answer) == {"error", "message"}
        assert counts == dict.fromkeys(TABLES, 0), counts
    elif answer["status"] == "stored":
        assert isinstance(message, dict)
        validate(message)  # what was stored follows the schema
        assert counts["messages"] == 1


@FUZZ
@given(body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
       | nasty_bodies,
       headers=st.dictionaries(
           st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                            "content-type", "content-length-ish"]),
           header_text, max_size=4))
def test_unsigned_bodies_and_headers_never_make_a_500_or_store_anything(
    body: bytes, headers: dict[str, str]
) -> None:
    with _logs() as records:
        status, answer, counts = _post(headers, body)
    _assert_sound(status, answer, counts, records)
    assert status != 200


@FUZZ
@given(kind=st.sampled_from(["heartbeat", "state_change", "results"]),
       mutations=st.lists(st.tuples(st.sampled_from(PATHS), json_values, st.booleans()),
                          min_size=1, max_size=3),
       timestamp=st.sampled_from([str(int(BASE_TIME)), str(int(BASE_TIME) - 400), "9" * 5000,
                                  "1e9", "", "١٢٣"]))
def test_signed_mutated_messages_are_stored_only_when_valid_and_never_make_a_500(
    kind: str, mutations: list[tuple[tuple[Any, ...], Any, bool]], timestamp: str
) -> None:
    message = _base_message(kind)
    for path, value, delete in mutations:
        _mutate(message, path, value, delete)
    body = json.dumps(message).encode()
    msg_id = message.get("id") if isinstance(message.get("id"), str) else "msg_x"
    headers = _signature_headers(str(msg_id), timestamp, body)
    with _logs() as records:
        status, answer, counts = _post(headers, body)
    _assert_sound(status, answer, counts, records, message)


def test_the_fuzz_reaches_the_store_at_all() -> None:
    """The unmutated messages are stored: the properties above are not vacuous."""
    for kind in ("heartbeat", "state_change", "results"):
        message = _base_message(kind)
        body = json.dumps(message).encode()
        with _logs() as records:
            status, answer, counts = _post(
                _signature_headers(message["id"], str(int(BASE_TIME)), body), body)
        assert (status, answer["status"]) == (200, "stored"), answer
        _assert_sound(status, answer, counts, records, message)
