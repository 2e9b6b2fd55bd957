"""How many signed messages per second the receiver verifies and stores over HTTP.

Run: .venv/bin/python -m bench.bench_central_ingest [COUNT] [CONCURRENCY]

Starts the receiver (Hypercorn, trio worker, SQLite in a temporary directory) on a
loopback port, registers 50 agents with Ed25519 keys, and POSTs COUNT heartbeats
with 20 checks each (signed beforehand, so only the receiver's work is timed: HTTP
parsing, Ed25519 verification, JSON validation, one SQLite transaction per message),
CONCURRENCY requests in flight. Prints messages per second and the latency median
and 99th percentile.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import httpx
import trio

from agent.central.config import AgentSettings, CentralConfig, HistorySettings
from agent.central.server import Central
from agent.common.signing import Ed25519SigningKey
from agent.common.timefmt import rfc3339
from tests.central_support import BASE_TIME, Messages, check_item, signed

AGENTS = 50
CHECKS = 20


@dataclass(frozen=True)
class IngestRun:
    """One measured run: messages per second and request latency in seconds."""

    rate: float
    median_s: float
    p99_s: float


async def measure(count: int, concurrency: int, *, fresh_observations: bool = False,
                  history: HistorySettings | None = None) -> IngestRun:
    """POSTs ``count`` signed heartbeats and times them.

    Args:
        count: heartbeats to send.
        concurrency: requests in flight.
        fresh_observations: each heartbeat carries new observations (a new ``at``
            per check), as a running agent's do; otherwise every heartbeat repeats
            the same ones (the receiver then has nothing new to keep in its history).
        history: the receiver's ``[history]`` settings (default: on).
    """
    keys = {f"agent-{n}": Ed25519SigningKey.generate() for n in range(AGENTS)}
    builders = {agent: Messages(agent) for agent in keys}
    requests = []
    for index in range(count):
        agent = f"agent-{index % AGENTS}"
        at = rfc3339(BASE_TIME - count + index) if fresh_observations else \
            "2026-01-01T00:00:00.000Z"
        checks = [check_item(f"check-{c}", "up", at=at, latency_ms=0.2 + c * 0.05)
                  for c in range(CHECKS)]
        requests.append(signed(builders[agent].heartbeat(checks), keys[agent]))
    with tempfile.TemporaryDirectory() as directory:
        agents = {agent: AgentSettings(agent, (key.public_key(),)) for agent, key in keys.items()}
        config = replace(CentralConfig(), listen=("127.0.0.1:0",), state_dir=Path(directory),
                         agents=MappingProxyType(agents), history=history or HistorySettings())
        central = Central(config, wall_clock=lambda: BASE_TIME)
        stop = trio.Event()
        latencies: list[float] = []
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(lambda task_status: central.serve(
                shutdown=stop, task_status=task_status))
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(base_url=binds[0], limits=limits) as client:
                queue = iter(requests)

                async def worker() -> None:
                    for headers, body in queue:
                        start = time.perf_counter()
                        response = await client.post("/v1/ingest", content=body, headers=headers)
                        latencies.append(time.perf_counter() - start)
                        assert response.status_code == 200, response.text

                began = time.perf_counter()
                async with trio.open_nursery() as workers:
                    for _ in range(concurrency):
                        workers.start_soon(worker)
                elapsed = time.perf_counter() - began
            stop.set()
    latencies.sort()
    return IngestRun(count / elapsed, statistics.median(latencies),
                     latencies[int(len(latencies) * 0.99) - 1])


async def main(count: int, concurrency: int) -> None:
    run = await measure(count, concurrency)
    print(f"{count} heartbeats ({CHECKS} checks each, {AGENTS} agents), {concurrency} in flight:"
          f" {run.rate:,.0f} msg/s, latency median "
          f"{run.median_s * 1e3:.2f} ms, p99 {run.p99_s * 1e3:.2f} ms")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
             int(sys.argv[2]) if len(sys.argv) > 2 else 8)
