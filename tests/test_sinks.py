"""Third-party destinations: the exact requests their documented APIs expect.

Each test delivers a heartbeat and a state change through the real delivery loop
to a loopback server standing in for the service, then asserts method, path,
query and body of what it received.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from agent.delivery import Deliverer, Delivery
from agent.destinations import DestinationConfig
from agent.keyfiles import SecretSource
from agent.sinks import make_sink
from agent.spool import STATE_CHANGE, AsyncOutbox, open_outbox
from tests.receiver import Recorded, running_receiver

HEARTBEAT_DATA = {"checks": [
    {"name": "db", "status": "up", "reason": "open", "latency_ms": 0.5, "at": "x"},
    {"name": "cache", "status": "unknown", "reason": None, "latency_ms": None, "at": None},
    {"name": "unmapped", "status": "up", "reason": "open", "latency_ms": 1.0, "at": "x"},
]}
DOWN = {"check": "db", "previous": "up", "current": "down", "observation": {
    "check": "db", "status": "down", "reason": "refused", "latency_ms": None, "dns_ms": None,
    "address": "10.0.0.5", "detail": "Connection refused", "consecutive_failures": 2,
    "at": "x"}}


async def _deliver(tmp_path: Path, destination: DestinationConfig, secret: str | None,
                   ok_body: bytes) -> list[Recorded]:
    outbox = AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["d"],
                                     max_messages=100, max_bytes=10**6))
    with running_receiver(ok_body=ok_body) as receiver:
        destination = DestinationConfig(**{**_fields(destination), "url": _rebase(
            destination.url, receiver.url)}, check_monitor_tokens={
                k: _rebase(v, receiver.url) for k, v in destination.check_monitor_tokens.items()})
        deliverer = Deliverer("d", make_sink(destination, secret),
                              httpx.AsyncClient(trust_env=False), outbox, max_backoff_s=0.05,
                              rng=random.Random(0), base_backoff_s=0.01)
        await outbox.enqueue_heartbeat(lambda counts, depth: HEARTBEAT_DATA)
        await outbox.enqueue_many([(STATE_CHANGE, DOWN, None)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Delivery([deliverer]).run)
            with trio.fail_after(10):
                while deliverer.stats.delivered < 2:  # noqa: ASYNC110 - real sockets
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    await outbox.aclose()
    assert deliverer.stats.failures == 0
    return receiver.snapshot()


def _fields(destination: DestinationConfig) -> dict[str, object]:
    return {name: getattr(destination, name) for name in destination.__slots__
            if name not in ("url", "check_monitor_tokens")}


def _rebase(url: str, base: str) -> str:
    return url.replace("https://svc.test", base)


def _calls(requests: list[Recorded]) -> list[tuple[str, str, dict[str, list[str]], bytes]]:
    return [(r.method, urlsplit(r.path).path, parse_qs(urlsplit(r.path).query,
                                                        keep_blank_values=True), r.body)
            for r in requests]


async def test_healthchecks_slug_pings_with_create_and_fail(tmp_path: Path) -> None:
    destination = DestinationConfig(
        name="d", kind="healthchecks", url="https://svc.test", monitor_token="agent-1",
        check_monitor_tokens={"db": "db-primary", "cache": "cache"}, create=True,
        token=SecretSource("env", "PING_KEY"))
    requests = await _deliver(tmp_path, destination, "pk-123", b"OK")
    assert [r.path for r in requests] == [
        "/pk-123/agent-1?create=1",
        "/pk-123/db-primary?create=1",
        "/pk-123/db-primary/fail?create=1",
    ]
    assert {r.method for r in requests} == {"POST"}
    assert [r.body for r in requests] == [
        b"agent-1: 3 checks, 1 unknown, 2 up",
        b"db up: open, 0.5 ms",
        b"db down: refused (Connection refused)",
    ]
    assert requests[0].headers["content-type"] == "text/plain; charset=utf-8"


async def test_healthchecks_uuid_pings_need_no_key_and_take_created(tmp_path: Path) -> None:
    uuid = "5bfa5f5e-7a2b-4d2a-9f0e-2f3a4b5c6d7e"
    destination = DestinationConfig(name="d", kind="healthchecks", url="https://svc.test",
                                    monitor_token=uuid, create=True,
                                    check_monitor_tokens={"db": uuid.replace("5b", "6c")})
    requests = await _deliver(tmp_path, destination, None, b"Created")
    assert [r.path for r in requests] == [
        f"/{uuid}", f"/{uuid.replace('5b', '6c')}", f"/{uuid.replace('5b', '6c')}/fail"]


async def test_uptime_kuma_push_urls(tmp_path: Path) -> None:
    destination = DestinationConfig(name="d", kind="uptime-kuma", url="https://svc.test",
                                    monitor_token="AgentTok1",
                                    check_monitor_tokens={"db": "DbTok22"})
    requests = await _deliver(tmp_path, destination, None, b'{"ok":true}')
    assert _calls(requests) == [
        ("GET", "/api/push/AgentTok1",
         {"status": ["up"], "msg": ["agent-1: 3 checks, 1 unknown, 2 up"], "ping": [""]}, b""),
        ("GET", "/api/push/DbTok22",
         {"status": ["up"], "msg": ["up: open, 0.5 ms"], "ping": ["0.500"]}, b""),
        ("GET", "/api/push/DbTok22",
         {"status": ["down"], "msg": ["down: refused (Connection refused)"], "ping": [""]},
         b""),
    ]


async def test_uptime_kuma_not_ok_answer_is_not_delivered() -> None:
    sink = make_sink(DestinationConfig(name="d", kind="uptime-kuma", url="https://k"), None)
    request = httpx.Request("GET", "https://k/api/push/x")
    rejected = httpx.Response(200, json={"ok": False, "msg": "Monitor not found or not active."},
                              request=request)
    assert "Monitor not found" in (sink.not_recorded(rejected) or "")
    assert sink.not_recorded(httpx.Response(200, json={"ok": True}, request=request)) is None


async def test_gatus_external_endpoint_with_bearer_token(tmp_path: Path) -> None:
    destination = DestinationConfig(name="d", kind="gatus", url="https://svc.test",
                                    monitor_token="agents_agent-1",
                                    check_monitor_tokens={"db": "core_db"},
                                    token=SecretSource("env", "T"))
    requests = await _deliver(tmp_path, destination, "s3cret", b"")
    assert _calls(requests) == [
        ("POST", "/api/v1/endpoints/agents_agent-1/external", {"success": ["true"]}, b""),
        ("POST", "/api/v1/endpoints/core_db/external",
         {"success": ["true"], "duration": ["1ms"]}, b""),
        ("POST", "/api/v1/endpoints/core_db/external",
         {"success": ["false"], "error": ["down: refused (Connection refused)"]}, b""),
    ]
    assert {r.headers["authorization"] for r in requests} == {"Bearer s3cret"}


async def test_betterstack_heartbeat_and_fail_urls(tmp_path: Path) -> None:
    destination = DestinationConfig(
        name="d", kind="betterstack", url="https://svc.test/api/v1/heartbeat/AGENT",
        check_monitor_tokens={"db": "https://svc.test/api/v1/heartbeat/DB"})
    requests = await _deliver(tmp_path, destination, None, b"")
    assert [(r.method, r.path) for r in requests] == [
        ("POST", "/api/v1/heartbeat/AGENT"),
        ("POST", "/api/v1/heartbeat/DB"),
        ("POST", "/api/v1/heartbeat/DB/fail"),
    ]
