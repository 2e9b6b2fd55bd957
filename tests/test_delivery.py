"""The delivery loop against a real HTTP receiver on loopback, and its timing under MockClock."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import random
import re
import ssl
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.common.backoff import backoff_delay
from agent.common.signing import Ed25519SigningKey, WebhookAuth
from agent.config.destinations import DestinationConfig
from agent.outbound import delivery
from agent.outbound.delivery import Deliverer
from agent.outbound.messages import HEARTBEAT, STATE_CHANGE
from agent.outbound.sinks import Answer, Sink, make_sink
from agent.outbound.spool import AsyncOutbox, OutboxMessage, open_outbox
from tests import certs
from tests.certs import make_pki
from tests.hostile.broken_http import CATALOGUE, BrokenDestination, start_broken_destination
from tests.netutil import refused_reason
from tests.receiver import Recorded, free_port, running_receiver

KEY = Ed25519SigningKey.generate()
PUBLIC = KEY.public_key().to_text()


def _outbox(tmp_path: Path, destinations: tuple[str, ...] = ("main",), *,
            offload: bool = True) -> AsyncOutbox:
    return AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=destinations,
                                   max_messages=10_000, max_bytes=10**8), offload=offload)


def _native(name: str, url: str) -> DestinationConfig:
    return DestinationConfig(name=name, kind="native", url=url, timeout_s=0.5,
                             connect_timeout_s=0.5)


def _deliverer(destination: DestinationConfig, outbox: AsyncOutbox, *,
               transport: httpx.AsyncBaseTransport | None = None,
               secret: str | None = None, max_backoff_s: float = 0.05) -> Deliverer:
    auth = WebhookAuth([KEY]) if destination.kind == "native" else None
    client = httpx.AsyncClient(transport=transport, auth=auth, trust_env=False,
                               timeout=httpx.Timeout(destination.timeout_s))
    return Deliverer(destination.name, make_sink(destination, secret), client, outbox,
                     max_backoff_s=max_backoff_s, rng=random.Random(1), base_backoff_s=0.01)


def _independently_verified(request: Recorded) -> None:
    """Checks the v1a signature with the cryptography primitives alone."""
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC[5:]))
    content = (f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}."
               .encode() + request.body)
    pairs = dict(pair.split(",", 1) for pair in request.headers["webhook-signature"].split())
    public.verify(base64.b64decode(pairs["v1a"]), content)


def _first_seen_seqs(requests: list[Recorded]) -> list[int]:
    seen: dict[str, int] = {}
    for request in requests:
        body = json.loads(request.body)
        assert request.headers["webhook-id"] == body["id"]
        seen.setdefault(body["id"], body["seq"])
    return list(seen.values())


async def _wait_until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    """Polls counters that real sockets move (real clock, bounded)."""
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the counters
            await trio.sleep(0.02)


async def test_through_every_fault_each_message_arrives_once_after_dedup_in_order(
    tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    port = free_port()
    deliverer = _deliverer(_native("main", f"http://127.0.0.1:{port}/v1/ingest"), outbox)
    count = 30
    plan = ["500", "500", "reset", "slow:1.0", "429:1", "503", "ok", "reset", "502", "ok",
            "slow:1.0", "408", "ok", "reset"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(count)])
        await trio.sleep(0.3)  # the central is down: connection refused, retried
        assert deliverer.stats.failures >= 1 and deliverer.stats.delivered == 0
        assert re.search(refused_reason(port), deliverer.stats.last_error or "")
        with running_receiver(plan, port=port) as receiver:
            await _wait_until(lambda: deliverer.stats.delivered == count)
            nursery.cancel_scope.cancel()
    received = receiver.snapshot()
    assert _first_seen_seqs(received) == list(range(1, count + 1))
    assert len(received) > count  # duplicates happened and were told apart by id
    for request in received:
        _independently_verified(request)
        assert request.method == "POST" and request.path == "/v1/ingest"
    assert outbox.sync.depth().messages == 0
    await outbox.aclose()


async def test_several_receivers_each_message_goes_to_the_first_that_answers(
    tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    first_port = free_port()
    with running_receiver() as second:
        destination = dataclasses.replace(
            _native("main", f"http://127.0.0.1:{first_port}/v1/ingest"),
            failover_urls=(second.url + "/v1/ingest",))
        deliverer = Deliverer("main", make_sink(destination, None),
                              httpx.AsyncClient(auth=WebhookAuth([KEY]), trust_env=False,
                                                timeout=httpx.Timeout(0.5)),
                              outbox, max_backoff_s=0.05, rng=random.Random(1),
                              base_backoff_s=0.01, failover_rest_s=0.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            # The first receiver is down: the second takes every message at once.
            await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(10)])
            await _wait_until(lambda: deliverer.stats.delivered == 10)
            assert deliverer.stats.failures == 0
            # Back: ten answers, then it fails with 503 (a receiver without its database).
            with running_receiver(["ok"] * 10 + ["503"] * 10, port=first_port) as first:
                await trio.sleep(0.6)  # its rest is over: it is preferred again
                await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None)
                                           for n in range(10, 20)])
                await _wait_until(lambda: deliverer.stats.delivered == 20)
                # Failing again: the second one takes over, no attempt fails.
                await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None)
                                           for n in range(20, 25)])
                await _wait_until(lambda: deliverer.stats.delivered == 25)
            nursery.cancel_scope.cancel()
    at_second, at_first = second.snapshot(), first.snapshot()
    assert _first_seen_seqs(at_second) == [*range(1, 11), *range(21, 26)]
    # 21 was offered to the first receiver, refused with 503, then it rested.
    assert _first_seen_seqs(at_first) == list(range(11, 22))
    assert deliverer.stats.failures == 0
    for request in at_first + at_second:
        _independently_verified(request)
        assert request.headers["host"] in (f"127.0.0.1:{first_port}", f"127.0.0.1:{second.port}")
    assert outbox.sync.depth().messages == 0
    await outbox.aclose()


async def test_a_permanent_4xx_is_logged_with_its_body_counted_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = _outbox(tmp_path)
    with running_receiver(["422"]) as receiver:
        deliverer = _deliverer(_native("main", receiver.url + "/in"), outbox)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(3)])
            await _wait_until(lambda: deliverer.stats.delivered == 2)
            nursery.cancel_scope.cancel()
    assert len(receiver.snapshot()) == 3  # not retried
    assert deliverer.stats.rejected == 1
    assert "refused for good" in caplog.text and "error body 422" in caplog.text
    beat = outbox.sync.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(beat.body)["data"]["rejected"] == 1
    await outbox.aclose()


async def test_refused_credentials_keep_the_messages_and_retry(tmp_path: Path) -> None:
    # 401 (unknown key, stale timestamp from a skewed clock) and 403 (agent not
    # registered yet) refuse the sender, not the message: nothing may be dropped.
    outbox = _outbox(tmp_path)
    with running_receiver(["401", "403", "401"]) as receiver:
        deliverer = _deliverer(_native("main", receiver.url + "/in"), outbox)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(3)])
            await _wait_until(lambda: deliverer.stats.delivered == 3)
            nursery.cancel_scope.cancel()
    assert deliverer.stats.rejected == 0 and deliverer.stats.failures == 3
    assert "check its key, its registration and this machine's clock" in (
        deliverer.stats.last_error or "")
    assert _first_seen_seqs(receiver.snapshot()) == [1, 2, 3]
    await outbox.aclose()


async def test_an_answer_trickling_in_is_cut_off_by_the_request_deadline(
    tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    with running_receiver(["trickle"]) as receiver:
        deliverer = _deliverer(_native("main", receiver.url + "/in"), outbox)
        deliverer.request_deadline_s = 1.0  # each byte comes well within the read timeout
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            await outbox.enqueue_many([(STATE_CHANGE, {}, None)])
            await _wait_until(lambda: deliverer.stats.delivered == 1)
            nursery.cancel_scope.cancel()
    assert deliverer.stats.failures == 1
    assert deliverer.stats.last_error == "no complete answer from 127.0.0.1 within 1s"
    assert len(receiver.snapshot()) == 2
    await outbox.aclose()


async def test_a_dead_destination_never_blocks_another(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path, ("dead", "live"))
    with running_receiver() as receiver:
        dead = _deliverer(_native("dead", f"http://127.0.0.1:{free_port()}/"), outbox)
        live = _deliverer(_native("live", receiver.url + "/"), outbox)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([dead, live]).run)
            await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(5)])
            await _wait_until(lambda: live.stats.delivered == 5)
            nursery.cancel_scope.cancel()
    assert _first_seen_seqs(receiver.snapshot()) == [1, 2, 3, 4, 5]
    assert outbox.sync.cursor("dead") == 0 and dead.stats.failures >= 1
    assert outbox.sync.depth().messages == 5  # kept for the dead one
    await outbox.aclose()


async def test_a_2xx_that_did_not_record_the_ping_is_not_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = _outbox(tmp_path, ("hc",))
    with running_receiver(["body:OK (rate limited)", "body:Created"]) as receiver:
        destination = DestinationConfig(
            name="hc", kind="healthchecks", url=receiver.url, timeout_s=1,
            monitor_token="5bfa5f5e-7a2b-4d2a-9f0e-2f3a4b5c6d7e")
        deliverer = _deliverer(destination, outbox)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            await outbox.enqueue_heartbeat(lambda counts, depth: {"checks": []})
            await _wait_until(lambda: deliverer.stats.delivered == 1)
            nursery.cancel_scope.cancel()
    assert len(receiver.snapshot()) == 2
    assert deliverer.stats.failures == 1
    assert "not OK/Created" in caplog.text
    await outbox.aclose()


async def test_a_heartbeat_superseded_during_an_outage_is_never_sent(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    port = free_port()
    deliverer = _deliverer(_native("main", f"http://127.0.0.1:{port}/"), outbox)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        for _ in range(3):
            await outbox.enqueue_heartbeat(lambda counts, depth: {"checks": []})
            await trio.sleep(0.1)
        with running_receiver(port=port) as receiver:
            await _wait_until(lambda: deliverer.stats.delivered == 1)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    bodies = [json.loads(r.body) for r in receiver.snapshot()]
    assert {body["seq"] for body in bodies} == {3}
    assert bodies[0]["data"] == {"checks": []}
    await outbox.aclose()


# -- timing, with a MockClock and an in-memory transport ---------------------


def _scripted(statuses: list[tuple[int, dict[str, str]]], times: list[float],
              accepted: trio.Event | None = None) -> httpx.MockTransport:
    """Answers with the scripted statuses, then 200; records the virtual time of each."""

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        status, headers = statuses.pop(0) if statuses else (200, {})
        if status == 200 and accepted is not None:
            accepted.set()
        return httpx.Response(status, headers=headers, text="x")

    return httpx.MockTransport(handler)


# Under autojump the clock jumps to the next deadline whenever every task waits,
# also while a call waits on a worker thread: these tests run the outbox inline.


async def test_backoff_is_full_jitter_exponential_and_capped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    outbox = _outbox(tmp_path, offload=False)
    times: list[float] = []
    failures = 12
    accepted = trio.Event()
    transport = _scripted([(503, {})] * failures, times, accepted)
    deliverer = _deliverer(_native("main", "https://central.test/"), outbox,
                           transport=transport, max_backoff_s=300)
    deliverer.base_backoff_s = 1.0
    async with trio.open_nursery() as nursery:
        await outbox.enqueue_many([(STATE_CHANGE, {}, None)])
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await accepted.wait()
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    twin = random.Random(1)  # the deliverer's seed: the same draws
    expected = [backoff_delay(n, cap_s=300, rng=twin) for n in range(1, failures + 1)]
    assert gaps == pytest.approx(expected, abs=1e-6)
    for attempt, gap in enumerate(gaps, start=1):
        assert 0 <= gap <= min(300, 2 ** (attempt - 1))
    await outbox.aclose()


async def test_retry_after_is_honoured(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    outbox = _outbox(tmp_path, offload=False)
    times: list[float] = []
    accepted = trio.Event()
    transport = _scripted([(429, {"retry-after": "120"}), (503, {"retry-after": "7"})], times,
                          accepted)
    deliverer = _deliverer(_native("main", "https://central.test/"), outbox,
                           transport=transport, max_backoff_s=300)
    async with trio.open_nursery() as nursery:
        await outbox.enqueue_many([(STATE_CHANGE, {}, None)])
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await accepted.wait()
        nursery.cancel_scope.cancel()
    # The jittered backoff (at most 1 s, then 2 s) is below what the server asked.
    assert times[1] - times[0] == pytest.approx(120, abs=1e-6)
    assert times[2] - times[1] == pytest.approx(7, abs=1e-6)
    await outbox.aclose()


async def test_progress_ticks_while_idle_and_while_backing_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    outbox = _outbox(tmp_path, offload=False)
    deliverer = _deliverer(_native("main", "https://central.test/"), outbox,
                           transport=_scripted([(503, {"retry-after": "600"})], []),
                           max_backoff_s=300)
    group = delivery.Delivery([deliverer])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.run)
        await trio.sleep(60)  # idle
        ticks = deliverer.stats.iterations
        # Half a tick more: a tick due at the very instant the sleep ends may come
        # after it under the mock clock.
        await trio.sleep(delivery.PROGRESS_TICK_S * 1.5)
        assert deliverer.stats.iterations > ticks
        await outbox.enqueue_many([(HEARTBEAT, {}, None)])
        await trio.sleep(300)  # inside a 600 s Retry-After
        assert deliverer.stats.delivered == 0
        ticks = deliverer.stats.iterations
        # Half a tick more: a tick due at the very instant the sleep ends may come
        # after it under the mock clock.
        await trio.sleep(delivery.PROGRESS_TICK_S * 1.5)
        assert deliverer.stats.iterations > ticks
        nursery.cancel_scope.cancel()
    await outbox.aclose()


@pytest.mark.parametrize("source", ["config", "environment"])
async def test_requests_go_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """The loopback receiver plays the proxy: it sees the absolute-form request."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    outbox = _outbox(tmp_path)
    with running_receiver() as proxy:
        destination = _native("main", "http://central.invalid/v1/ingest")
        if source == "config":
            destination = dataclasses.replace(destination, proxy=proxy.url)
        else:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
        deliverer = Deliverer("main", make_sink(destination, None),
                              delivery.open_client(destination, WebhookAuth([KEY])), outbox,
                              max_backoff_s=0.05, base_backoff_s=0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delivery.Delivery([deliverer]).run)
            await outbox.enqueue_many([(STATE_CHANGE, {}, None)])
            await _wait_until(lambda: deliverer.stats.delivered == 1)
            nursery.cancel_scope.cancel()
    (request,) = proxy.snapshot()
    assert request.path == "http://central.invalid/v1/ingest"
    _independently_verified(request)
    await outbox.aclose()


# -- broken answers, unexpected failures: contained in their loop ------------------


async def _deliver_through(tmp_path: Path, plan: list[str], count: int = 3, *,
                           deadline_s: float = 5.0) -> tuple[Deliverer, BrokenDestination]:
    """Delivers ``count`` state changes to a destination serving ``plan``, then honest;
    a task standing in for the checks must keep running throughout."""
    outbox = _outbox(tmp_path)
    ticks = 0

    async def checks() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        server = await start_broken_destination(nursery, plan)
        deliverer = _deliverer(_native("main", server.url + "/in"), outbox)
        deliverer.request_deadline_s = deadline_s
        nursery.start_soon(checks)
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await outbox.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(count)])
        await _wait_until(lambda: deliverer.stats.delivered == count, timeout_s=30)
        ticks_before = ticks
        await trio.sleep(0.05)
        assert ticks > ticks_before  # the checks never noticed
        nursery.cancel_scope.cancel()
    seqs = _first_seen_seqs(server.requests)
    assert seqs == list(range(1, count + 1))
    assert outbox.sync.depth().messages == 0
    await outbox.aclose()
    return deliverer, server


async def test_a_2xx_with_a_corrupt_gzip_body_is_a_delivery_not_a_crash(tmp_path: Path) -> None:
    # The native receiver's 2xx means "stored": a body that cannot be read changes nothing.
    deliverer, server = await _deliver_through(tmp_path, ["corrupt-gzip", "corrupt-gzip-5xx"])
    assert deliverer.stats.failures == 1  # the 503 only
    assert len(server.requests) == 4


async def test_a_unicode_digit_in_retry_after_is_ignored_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "²".isdigit() is true but float("²") fails: sent as latin-1 (httpx reads "²")
    # and as UTF-8; then 5,000 digits.
    deliverer, _ = await _deliver_through(tmp_path, ["retry-after-superscript",
                                                     "retry-after-utf8", "retry-after-huge"])
    assert deliverer.stats.failures == 3
    assert "HTTP 503" in (deliverer.stats.last_error or "")
    # Each was an ordinary retry, not an exception caught by the loop's last resort.
    assert "unexpected" not in caplog.text
    assert caplog.text.count("not delivered (attempt") == 1  # the first of the episode


@pytest.mark.parametrize("step", ["endless-chunks", "endless-until-close", "huge-declared-body",
                                  "gzip-bomb"])
async def test_only_a_few_kib_of_an_answer_are_read(tmp_path: Path, step: str) -> None:
    # With a deadline of 20 s, a loop reading these bodies whole would take 20 s and
    # hundreds of MB; it reads a few KiB, closes, and goes on.
    tracemalloc.start()
    started = trio.current_time()
    try:
        deliverer, _ = await _deliver_through(tmp_path, [step], count=2, deadline_s=20.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert trio.current_time() - started < 5
    assert deliverer.stats.failures == 0
    assert peak < 4 * 1024 * 1024


async def test_every_broken_answer_in_the_catalogue_is_survived(tmp_path: Path) -> None:
    plan = [name for name in CATALOGUE if name != "trickled-head"]
    _, server = await _deliver_through(tmp_path, plan, count=len(plan), deadline_s=2.0)
    assert server.served == plan


class _ExplodingSink:
    """A sink with a bug: it raises on messages whose data says ``boom``."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.types = inner.types
        self.calls: list[float] = []

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        if message.envelope()["data"].get("boom"):
            self.calls.append(trio.current_time())
            raise KeyError("a sink bug")
        return self.inner.requests(message)

    def not_recorded(self, answer: Answer) -> str | None:
        return self.inner.not_recorded(answer)

    def refused(self, answer: Answer) -> str | None:
        return self.inner.refused(answer)


async def test_a_message_that_keeps_crashing_its_sink_is_set_aside_and_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = _outbox(tmp_path, offload=False)
    times: list[float] = []
    deliverer = _deliverer(_native("main", "https://central.test/"), outbox,
                           transport=_scripted([], times), max_backoff_s=60)
    sink = deliverer.sink = _ExplodingSink(deliverer.sink)
    async with trio.open_nursery() as nursery:
        await outbox.enqueue_many([(STATE_CHANGE, {"n": 1}, None),
                                   (STATE_CHANGE, {"boom": True}, None),
                                   (STATE_CHANGE, {"n": 3}, None)])
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await _wait_until(lambda: deliverer.stats.delivered == 2, timeout_s=3600)
        nursery.cancel_scope.cancel()
    assert len(sink.calls) == delivery.UNEXPECTED_ATTEMPTS
    assert deliverer.stats.set_aside == 1 and deliverer.stats.rejected == 0
    # Backed off between attempts (the usual jittered backoff), not a busy loop.
    assert all(later > earlier for earlier, later in itertools.pairwise(sink.calls))
    assert len(times) == 2  # messages 1 and 3, each sent once
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert len(tracebacks) == 1, caplog.text
    assert "set aside" in caplog.text
    beat = outbox.sync.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(beat.body)["data"]["dropped.set_aside"] == 1
    await outbox.aclose()


async def test_each_request_carries_the_destinations_timeouts(tmp_path: Path) -> None:
    # The sinks build their requests themselves; httpx before 0.24 (Debian 12 has
    # 0.23) applies a client's timeouts only to requests the client built, so a
    # hung central would have held each request until the overall deadline.
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions.get("timeout", {})))
        return httpx.Response(200, text="OK")

    outbox = _outbox(tmp_path)
    deliverer = _deliverer(_native("main", "http://127.0.0.1:9/in"), outbox,
                           transport=httpx.MockTransport(handler))
    await outbox.enqueue_many([(STATE_CHANGE, {"n": 1}, None)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.Delivery([deliverer]).run)
        await _wait_until(lambda: deliverer.stats.delivered == 1)
        nursery.cancel_scope.cancel()
    await outbox.aclose()
    assert seen == [{"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5}]


def test_the_system_trust_store_is_read_at_the_first_handshake_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A destination over plain http never makes a TLS handshake: parsing the CA
    # bundle (about 1.7 MiB of RSS) would be for nothing.
    pki = make_pki(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # the system's CAs, here
    context = delivery.ssl_context(_native("main", "http://127.0.0.1:9/in"))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
    context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert context.cert_store_stats()["x509_ca"] == 1
    context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert context.cert_store_stats()["x509_ca"] == 1  # read once


def test_the_lazily_trusting_context_is_as_strict_as_the_default_one() -> None:
    """Reading the trust store late changes nothing else: the options, verification
    flags, minimum version and checks are those of ssl.create_default_context() on
    this Python (3.13 adds strict X.509 flags there, say)."""
    lazy = delivery.ssl_context(_native("main", "https://127.0.0.1:9/in"))
    default = ssl.create_default_context()
    assert (lazy.options, lazy.verify_flags, lazy.verify_mode, lazy.check_hostname,
            lazy.minimum_version, lazy.maximum_version) == (
        default.options, default.verify_flags, default.verify_mode, default.check_hostname,
        default.minimum_version, default.maximum_version)


async def test_without_ca_file_tls_is_verified_against_the_system_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "trusted").mkdir()
    (tmp_path / "unknown").mkdir()
    trusted, unknown = make_pki(tmp_path / "trusted"), make_pki(tmp_path / "unknown")
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted.ca_file))

    def server_context(pki: certs.TestPki) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_file, pki.key_file)
        return context

    with running_receiver(tls=server_context(trusted)) as good, \
            running_receiver(tls=server_context(unknown)) as forged:
        destination = _native("main", good.url + "/in")
        async with delivery.open_client(destination, WebhookAuth([KEY])) as client:
            answer = await delivery.read_answer(
                client, httpx.Request("POST", destination.url, content=b"{}"))
        assert answer.status == 200
        destination = _native("main", forged.url + "/in")
        async with delivery.open_client(destination, WebhookAuth([KEY])) as client:
            with pytest.raises(delivery.NoAnswer) as refused:
                await delivery.read_answer(
                    client, httpx.Request("POST", destination.url, content=b"{}"))
        assert len(good.snapshot()) == 1 and forged.snapshot() == []
        causes: list[BaseException] = []
        cause: BaseException | None = refused.value
        while cause is not None and len(causes) < 10:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes), causes
