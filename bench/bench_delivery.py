"""Delivery throughput, and whether a dead central slows the checks.

Run: .venv/bin/python bench/bench_delivery.py

1. Throughput: N signed state changes through the outbox and the delivery loop to a
   loopback HTTP server (one request per message, as in production).
2. Check lag: 200 TCP checks every second against a loopback listener for 10 s,
   once without reporting and once reporting to a central that accepts connections
   but never answers (every request runs into its timeout), with a heartbeat every
   second; prints the scheduler's start lag (actual minus planned start).
"""

from __future__ import annotations

import logging
import random
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.common.signing import Ed25519SigningKey, WebhookAuth
from agent.config import loader as config
from agent.outbound.delivery import Deliverer, Delivery
from agent.outbound.messages import STATE_CHANGE
from agent.outbound.reporting import Reporting
from agent.outbound.sinks import make_sink
from agent.outbound.spool import AsyncOutbox, open_outbox
from agent.schedule.scheduler import Scheduler
from agent.service.daemon import scheduler_checks
from bench.common import time_until_delivered
from tests.receiver import running_receiver

KEY = Ed25519SigningKey.generate()


def _config(url: str, checks: int = 0, port: int = 1) -> config.Config:
    return config.parse([("bench.toml", {
        "agent": {"id": "bench"},
        "central": {"heartbeat_interval": "1s"},
        "checks": {f"c{n}": {"host": "127.0.0.1", "port": port, "interval": "1s",
                             "timeout": "500ms"} for n in range(checks)},
        "destinations": {"main": {"kind": "native", "url": url, "signing_key_env": "K",
                                  "timeout": "2s"}},
    })])


def _deliverer(loaded: config.Config, outbox: AsyncOutbox) -> Deliverer:
    destination = loaded.destinations[0]
    client = httpx.AsyncClient(auth=WebhookAuth([KEY]), trust_env=False,
                               timeout=httpx.Timeout(destination.timeout_s))
    return Deliverer("main", make_sink(destination, None), client, outbox, max_backoff_s=5,
                     rng=random.Random(0))


async def throughput(count: int) -> None:
    with running_receiver(ok_body=b"") as receiver, tempfile.TemporaryDirectory() as d:
        loaded = _config(receiver.url + "/in")
        outbox = AsyncOutbox(open_outbox(Path(d), agent_id="bench", destinations=["main"],
                                         max_messages=10**6, max_bytes=10**9))
        deliverer = _deliverer(loaded, outbox)
        await outbox.enqueue_many([(STATE_CHANGE, {"n": n, "pad": "x" * 300}, None)
                                   for n in range(count)])
        elapsed = await time_until_delivered(deliverer, count)
        await outbox.aclose()
    print(f"throughput: {count} signed messages in {elapsed:.2f} s = "
          f"{count / elapsed:.0f} messages/s (loopback, one request each)")


async def lag(report: bool, seconds: float = 10.0) -> list[float]:
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1024)
    black_hole = socket.socket()  # accepts (backlog), never answers
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(1024)
    loaded = _config(f"http://127.0.0.1:{black_hole.getsockname()[1]}/in", checks=200,
                     port=target.getsockname()[1])
    lags: list[float] = []
    reporting: Reporting | None = None

    def on_result(result: object, change: object) -> None:
        if reporting is not None:
            reporting.on_result(result, change)  # type: ignore[arg-type]

    scheduler = Scheduler(loaded.checks, max_concurrent=256, on_result=on_result,
                          on_lag=lags.append)
    with tempfile.TemporaryDirectory() as d:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            if report:
                outbox = AsyncOutbox(open_outbox(Path(d), agent_id="bench",
                                                 destinations=["main"], max_messages=10**5,
                                                 max_bytes=10**8))
                reporting = Reporting(loaded, outbox, Delivery([_deliverer(loaded, outbox)]),
                                      scheduler_checks(scheduler))
                await nursery.start(reporting.run)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
    target.close()
    black_hole.close()
    return lags


def _summary(label: str, lags: list[float]) -> None:
    lags = sorted(lags)
    print(f"{label:<40} runs {len(lags):5d}  median lag {statistics.median(lags) * 1e3:6.2f} ms"
          f"  p99 {lags[int(len(lags) * 0.99) - 1] * 1e3:6.2f} ms  max {lags[-1] * 1e3:6.2f} ms")


def main() -> None:
    logging.getLogger("heartwire").setLevel(logging.ERROR)  # retries are expected here
    trio.run(throughput, 2000)
    _summary("200 checks/s, no reporting", trio.run(lag, False))
    _summary("200 checks/s, central never answers", trio.run(lag, True))


if __name__ == "__main__":
    main()
