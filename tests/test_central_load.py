"""The served receiver under hostile load on loopback: slow bodies, a hammered page, big agents."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import httpx
import pytest
import trio

from tests.central_support import Messages, check_item, make_config, running_central, signed

INGEST = "/v1/ingest"


async def _trickle(port: int, declared: int, results: list[str], pace_s: float) -> None:
    """A client that declares a big body and sends it one byte at a time."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        results.append("refused")
        return
    async with stream:
        head = (f"POST {INGEST} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {declared}\r\nwebhook-id: msg_{'0' * 32}\r\n"
                "webhook-timestamp: 1\r\nwebhook-signature: v1a,AA\r\n\r\n").encode()
        try:
            await stream.send_all(head)
            with trio.move_on_after(30):
                for _ in range(declared):
                    await stream.send_all(b" ")
                    with trio.move_on_after(pace_s):
                        answer = await stream.receive_some(4096)
                        results.append(answer.split(b"\r\n", 1)[0].decode() or "closed")
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            results.append("closed")
            return
        results.append("still open")


async def test_clients_trickling_big_bodies_are_cut_off_and_a_good_agent_gets_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path, body_timeout_s=2.0, max_concurrent_requests=20)
    messages = Messages()
    async with running_central(config) as (central, client):
        port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
        results: list[str] = []
        latencies: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(_trickle, port, 1_000_000, results, 0.2)
            await trio.sleep(0.5)  # the slow clients are in
            for _ in range(5):
                headers, body = signed(messages.heartbeat([check_item("db", "up")]))
                started = time.monotonic()
                response = await client.post(INGEST, content=body, headers=headers)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200, response.text
                await trio.sleep(0.3)
        assert central.storage.count("messages") == 5
        assert max(latencies) < 3.0, latencies
        # Every slow client was answered 408 (timed out, or evicted) and none is left.
        assert len(results) == 300
        assert set(results) <= {"HTTP/1.1 408 ", "closed"}, set(results)
        assert results.count("HTTP/1.1 408 ") >= 20
    # Refusing a client that is still sending races Hypercorn's close: no traceback.
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_a_good_agent_stays_fast_while_a_big_agents_page_is_hammered(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, max_checks=20_000)
    async with running_central(config) as (central, client):
        big = Messages("hmac-agent")
        from tests.central_support import HMAC_AGENT_SECRET
        heartbeat = big.heartbeat([check_item(f"check-{i:05d}", "up") for i in range(20_000)])
        headers, body = signed(heartbeat, HMAC_AGENT_SECRET)
        async with httpx.AsyncClient(base_url=client.base_url, timeout=60) as slow:
            assert (await slow.post(INGEST, content=body, headers=headers)).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200
        assert len(page.content) < 300_000  # capped, not one row per check
        assert "100 of 20000 checks shown (those not up first)" in page.text
        first = (await client.get("/api/v1/checks")).json()
        assert len(first["checks"]) == 1000 and first["total"] == 20_000
        assert first["next"] == "/api/v1/checks?offset=1000&limit=1000"

        good = Messages()
        latencies: list[float] = []
        stop = trio.Event()

        async def hammer() -> None:
            async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as reader:
                while not stop.is_set():
                    await reader.get("/")
                    await reader.get("/api/v1/checks?offset=5000")

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(hammer)
            await trio.sleep(0.3)
            for _ in range(20):
                headers, body = signed(good.heartbeat([check_item("db", "up")]))
                started = time.monotonic()
                response = await client.post(INGEST, content=body, headers=headers)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
            stop.set()
        assert statistics.median(latencies) < 0.25, latencies
        assert central.storage.count("messages") == 21


async def test_past_the_request_limit_with_no_slow_reader_a_newcomer_is_told_to_retry(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, max_concurrent_requests=1)
    async with running_central(config) as (central, client):
        answers: dict[str, httpx.Response] = {}

        async def first() -> None:
            answers["first"] = await client.get("/")

        # Bounded: a request that is queued instead of refused fails here, not hangs.
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                async with central.workers.reader:  # the page cannot render yet
                    nursery.start_soon(first)
                    await trio.sleep(0.3)
                    async with httpx.AsyncClient(base_url=client.base_url) as other:
                        answers["second"] = await other.get("/api/v1/agents")
        assert answers["first"].status_code == 200
        assert answers["second"].status_code == 503
        assert answers["second"].headers["retry-after"] == "1"
        assert answers["second"].json()["error"] == "busy"
        assert (await client.get("/healthz")).status_code == 200  # the slot is free again
