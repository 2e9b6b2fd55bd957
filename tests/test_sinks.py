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
import pytest
import trio

from agent.common.keyfiles import SecretSource
from agent.config.destinations import DestinationConfig, secrets_of
from agent.outbound.delivery import Deliverer, Delivery
from agent.outbound.messages import STATE_CHANGE
from agent.outbound.sinks import Answer, make_sink
from agent.outbound.sinks.base import agent_summary
from agent.outbound.spool import AsyncOutbox, open_outbox
from tests.receiver import Recorded, running_receiver
from tests.saas import Service, running_service

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
    def answer(body: str) -> Answer:
        return Answer(200, "OK", httpx.Headers({"content-type": "application/json"}), body, "k")

    rejected = answer('{"ok":false,"msg":"Monitor not found or not active."}')
    assert "Monitor not found" in (sink.not_recorded(rejected) or "")
    assert sink.not_recorded(answer('{"ok":true}')) is None
    assert "Uptime Kuma answered 200" in (sink.not_recorded(answer('{"ok": tru')) or "")


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


# -- each ping of a message on its own, against the documented wire formats ------

AGENT_UUID = "0f3c8a1e-2b4d-4c6e-8f0a-1b2c3d4e5f60"  # not known to the service
DB_UUID = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
DB_UP = {"checks": [{"name": "db", "status": "up", "reason": "open", "latency_ms": 0.5,
                     "at": "x"}]}


async def _deliver_to(service: Service, destination: DestinationConfig, beats: int = 1,
                      beat: dict[str, object] = DB_UP, *, then_down: bool = True) -> Deliverer:
    """Delivers ``beats`` heartbeats (each once the previous is done), then a state change."""
    outbox = AsyncOutbox(open_outbox(service_dir(destination), agent_id="agent-1",
                                     destinations=["d"], max_messages=100, max_bytes=10**6))
    deliverer = Deliverer("d", make_sink(destination, None), httpx.AsyncClient(trust_env=False),
                          outbox, max_backoff_s=0.05, rng=random.Random(0), base_backoff_s=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Delivery([deliverer]).run)
        for done in range(1, beats + 1 + then_down):
            if done <= beats:
                await outbox.enqueue_heartbeat(lambda counts, depth: beat)
            else:
                await outbox.enqueue_many([(STATE_CHANGE, DOWN, None)])
            with trio.fail_after(10):
                while deliverer.stats.delivered + deliverer.stats.rejected < done:  # noqa: ASYNC110
                    await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    await outbox.aclose()
    return deliverer


def service_dir(destination: DestinationConfig) -> Path:
    return Path(destination.config_file)


async def test_healthchecks_an_unknown_agent_uuid_holds_back_no_check_ping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_service("healthchecks", Service(uuids={DB_UUID})) as hc:
        destination = DestinationConfig(name="d", kind="healthchecks", url=hc.url,
                                        monitor_token=AGENT_UUID, config_file=str(tmp_path),
                                        check_monitor_tokens={"db": DB_UUID})
        deliverer = await _deliver_to(hc, destination, beats=2)
    # Each heartbeat: the agent's ping refused (404 not found, not retried), the
    # check's ping sent anyway; then the state change.
    assert hc.answered() == [
        (f"/{AGENT_UUID}", 404), (f"/{DB_UUID}", 200),
        (f"/{AGENT_UUID}", 404), (f"/{DB_UUID}", 200),
        (f"/{DB_UUID}/fail", 200),
    ]
    assert (deliverer.stats.delivered, deliverer.stats.rejected) == (3, 0)
    refusals = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(refusals) == 1, caplog.text  # once per monitor, not at every heartbeat
    assert "HTTP 404" in refusals[0].getMessage() and "not found" in refusals[0].getMessage()
    assert AGENT_UUID not in caplog.text


async def test_healthchecks_a_message_whose_every_ping_is_refused_is_rejected(
    tmp_path: Path,
) -> None:
    with running_service("healthchecks", Service()) as hc:
        destination = DestinationConfig(name="d", kind="healthchecks", url=hc.url,
                                        monitor_token=AGENT_UUID, config_file=str(tmp_path),
                                        check_monitor_tokens={"db": DB_UUID})
        deliverer = await _deliver_to(hc, destination)
    assert [status for _, status in hc.answered()] == [404, 404, 404]
    assert (deliverer.stats.delivered, deliverer.stats.rejected) == (0, 2)


async def test_uptime_kuma_a_paused_agent_monitor_holds_back_no_check_ping(
    tmp_path: Path,
) -> None:
    with running_service("uptime-kuma", Service(push_tokens={"DbTok22"})) as kuma:
        destination = DestinationConfig(name="d", kind="uptime-kuma", url=kuma.url,
                                        monitor_token="PausedTok", config_file=str(tmp_path),
                                        check_monitor_tokens={"db": "DbTok22"})
        deliverer = await _deliver_to(kuma, destination)
    assert kuma.answered() == [("/api/push/PausedTok", 404), ("/api/push/DbTok22", 200),
                               ("/api/push/DbTok22", 200)]
    assert [p.query["status"] for p in kuma.pings[1:]] == [["up"], ["down"]]
    assert (deliverer.stats.delivered, deliverer.stats.rejected) == (2, 0)


async def test_uptime_kuma_a_retried_ping_does_not_send_the_accepted_ones_again(
    tmp_path: Path,
) -> None:
    service = Service(push_tokens={"AgentTok", "DbTok22", "WebTok"},
                      faults={"/api/push/DbTok22": [503]})
    beat = {"checks": [*DB_UP["checks"], {**DB_UP["checks"][0], "name": "web"}]}
    with running_service("uptime-kuma", service) as kuma:
        destination = DestinationConfig(name="d", kind="uptime-kuma", url=kuma.url,
                                        monitor_token="AgentTok", config_file=str(tmp_path),
                                        check_monitor_tokens={"db": "DbTok22", "web": "WebTok"})
        deliverer = await _deliver_to(kuma, destination, beat=beat, then_down=False)
    # The failing ping does not hold back the next one, and only it is sent again.
    assert kuma.answered() == [("/api/push/AgentTok", 200), ("/api/push/DbTok22", 503),
                               ("/api/push/WebTok", 200), ("/api/push/DbTok22", 200)]
    assert deliverer.stats.failures == 1


async def test_hosted_healthchecks_ok_not_found_is_a_refusal_not_a_retry(tmp_path: Path) -> None:
    # hc-ping.com answers an unknown UUID with 200 "OK (not found)": as final as a 404.
    service = Service(uuids={DB_UUID}, legacy_uuid_answers=True)
    with running_service("healthchecks", service) as hc:
        destination = DestinationConfig(name="d", kind="healthchecks", url=hc.url,
                                        monitor_token=AGENT_UUID, config_file=str(tmp_path),
                                        check_monitor_tokens={"db": DB_UUID})
        deliverer = await _deliver_to(hc, destination)
    assert hc.answered() == [(f"/{AGENT_UUID}", 200), (f"/{DB_UUID}", 200),
                             (f"/{DB_UUID}/fail", 200)]
    assert (deliverer.stats.delivered, deliverer.stats.failures) == (2, 0)


async def test_uptime_kuma_2_paused_monitor_answer_500_is_a_refusal_not_a_retry(
    tmp_path: Path,
) -> None:
    service = Service(push_tokens={"DbTok22"}, error_status=500)
    with running_service("uptime-kuma", service) as kuma:
        destination = DestinationConfig(name="d", kind="uptime-kuma", url=kuma.url,
                                        monitor_token="PausedTok", config_file=str(tmp_path),
                                        check_monitor_tokens={"db": "DbTok22"})
        deliverer = await _deliver_to(kuma, destination)
    assert kuma.answered() == [("/api/push/PausedTok", 500), ("/api/push/DbTok22", 200),
                               ("/api/push/DbTok22", 200)]
    assert (deliverer.stats.delivered, deliverer.stats.failures) == (2, 0)


async def test_delivery_logs_never_show_a_push_token_an_answer_echoes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "EchoedPushT0ken"
    destination = DestinationConfig(name="d", kind="uptime-kuma", url="http://x",
                                    monitor_token=token)
    outbox = AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["d"],
                                     max_messages=100, max_bytes=10**6))
    # The echo is not {"ok":true}: logged as not delivered, with the body, then retried.
    with running_receiver(["echo", "404"], ok_body=b'{"ok":true}') as receiver:
        destination = DestinationConfig(**{**_fields(destination), "url": receiver.url},
                                        check_monitor_tokens={})
        deliverer = Deliverer("d", make_sink(destination, None),
                              httpx.AsyncClient(trust_env=False), outbox, max_backoff_s=0.05,
                              rng=random.Random(0), base_backoff_s=0.01,
                              secrets=secrets_of(destination, None))
        await outbox.enqueue_heartbeat(lambda counts, depth: HEARTBEAT_DATA)
        await outbox.enqueue_heartbeat(lambda counts, depth: HEARTBEAT_DATA)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Delivery([deliverer]).run)
            with trio.fail_after(10):
                while deliverer.stats.delivered + deliverer.stats.rejected < 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    await outbox.aclose()
    assert any(token in r.path for r in receiver.snapshot())
    assert "Uptime Kuma answered 200" in caplog.text and "<redacted>" in caplog.text
    assert token not in caplog.text
    assert token not in (deliverer.stats.last_error or "")


def test_the_agent_summary_counts_one_check_in_the_singular() -> None:
    envelope = {"agent": "a1", "data": {"checks": [{"status": "up"}]}}
    assert agent_summary(envelope) == "a1: 1 check, 1 up"


def test_every_destination_kind_the_config_accepts_has_a_sink() -> None:
    """The config's kinds and the sinks are one list: a kind added to one is added to both."""
    from agent.config.destinations import KINDS
    from agent.outbound.sinks import SINKS

    assert list(SINKS) == list(KINDS)


def test_the_secrets_of_a_failover_destination_include_every_receivers() -> None:
    """What the delivery loop redacts from its log lines covers the standby receivers'
    passwords too: the failover loop sends to them with the same client."""
    import base64

    destination = DestinationConfig(
        name="d", kind="native", url="https://agent:primary-pw@a.example/in",
        failover_urls=("https://agent:standby-pw@b.example/in?token=standby-tok",))
    secrets = secrets_of(destination, None)
    assert {"primary-pw", "standby-pw", "standby-tok"} <= set(secrets)
    assert base64.b64encode(b"agent:standby-pw").decode() in secrets
