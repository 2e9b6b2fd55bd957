"""Signed messages/s with one, two and three receivers on one PostgreSQL, beside SQLite.

Run: .venv/bin/python -m bench.bench_central_cluster [COUNT] [CONCURRENCY]

In one run: a private PostgreSQL (initdb in a temporary directory, an ephemeral
port, ``fsync=off`` as in the tests, so the figure is the receivers' work and not
this machine's disk), then for each setup a fresh database and real receiver
processes (``heartwire central``) on loopback. COUNT heartbeats of 50 agents with
20 checks each are signed beforehand and POSTed round-robin across the receivers,
CONCURRENCY in flight. The same load goes to one receiver on SQLite
(``synchronous=FULL`` on its own disk). Then the alert latency of the dead man's
switch with three receivers: 10 agents send heartbeats every second and stop at
once; each alert's arrival at a loopback webhook is measured from the moment the
agent became due (last heartbeat + interval + grace).

Prints one line per setup; writes nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from agent.common.signing import Ed25519SigningKey
from tests.central_postgres import (
    Cluster,
    PrivatePostgres,
    private_postgres,
    public_key_text,
    write_config,
)
from tests.central_support import Messages, check_item, signed
from tests.receiver import Receiver, running_receiver
from tests.servers import free_ports

AGENTS = 50
CHECKS = 20
SILENT_AGENTS = 10
INTERVAL_S = 1.0
GRACE_S = 1.0


def _signed_load(count: int, keys: dict[str, Ed25519SigningKey]) -> list[Any]:
    builders = {agent: Messages(agent) for agent in keys}
    load = []
    for index in range(count):
        agent = f"agent-{index % AGENTS}"
        checks = [check_item(f"check-{c}", "up") for c in range(CHECKS)]
        load.append(signed(builders[agent].heartbeat(checks), keys[agent],
                           timestamp=time.time()))
    return load


async def _throughput(cluster: Cluster, load: list[Any], concurrency: int) -> tuple[float, float]:
    """Messages/s and the p99 latency (ms) of sending ``load`` round-robin."""
    latencies: list[float] = []
    queue = iter(enumerate(load))
    limits = httpx.Limits(max_connections=concurrency * len(cluster.ports))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for index, (headers, body) in queue:
                url = cluster.url(index % len(cluster.ports)) + "/v1/ingest"
                start = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return len(load) / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


def _start(directory: Path, url: str, webhook: str, count: int,
           agents: dict[str, str], grace: str = "1m") -> Cluster:
    directory.mkdir(parents=True)
    cluster = Cluster(write_config(directory, url, webhook, grace=grace, agents=agents),
                      free_ports(count))
    for index in range(count):
        cluster.start(index)
    return cluster


async def _alert_latency(base: Path, postgres: PrivatePostgres, hook: Receiver) -> list[float]:
    keys = {f"silent-{n}": Ed25519SigningKey.generate() for n in range(SILENT_AGENTS)}
    cluster = _start(base / "silent", postgres.new_database(), hook.url + "/hook", 3,
                     {agent: public_key_text(key) for agent, key in keys.items()},
                     grace=f"{GRACE_S:g}s")
    builders = {agent: Messages(agent) for agent in keys}
    last_sent: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for round_number in range(3):
                for index, (agent, key) in enumerate(keys.items()):
                    headers, body = signed(builders[agent].heartbeat(interval_s=INTERVAL_S),
                                           key, timestamp=time.time())
                    url = cluster.url((index + round_number) % 3) + "/v1/ingest"
                    response = await client.post(url, content=body, headers=headers)
                    assert response.status_code == 200, response.text
                    last_sent[agent] = time.time()
                await trio.sleep(INTERVAL_S / 2)
            arrived: dict[str, float] = {}
            with trio.move_on_after(30):
                while len(arrived) < SILENT_AGENTS:
                    for request in hook.snapshot():
                        alert = json.loads(request.body)
                        if alert["type"] == "incident.trigger":
                            arrived.setdefault(alert["incident"]["agent"], request.at)
                    await trio.sleep(0.01)
        # request.at is monotonic; convert the wall-time deadlines once.
        offset = time.time() - time.monotonic()
        return sorted(arrived[agent] + offset - (last_sent[agent] + INTERVAL_S + GRACE_S)
                      for agent in arrived)
    finally:
        cluster.stop_all()


async def main(count: int, concurrency: int) -> None:
    keys = {f"agent-{n}": Ed25519SigningKey.generate() for n in range(AGENTS)}
    agents = {agent: public_key_text(key) for agent, key in keys.items()}
    postgres_run = private_postgres()
    postgres = next(postgres_run)
    try:
        with tempfile.TemporaryDirectory() as directory, running_receiver() as hook:
            base = Path(directory)
            setups: list[tuple[str, str, int]] = [
                ("SQLite, 1 receiver", "", 1),
                *((f"PostgreSQL, {n} receiver{'s' * (n > 1)}", "pg", n) for n in (1, 2, 3)),
            ]
            for name, backend, receivers in setups:
                url = postgres.new_database() if backend else ""
                cluster = _start(base / name.replace(" ", "_").replace(",", ""), url,
                                 hook.url + "/hook", receivers, agents)
                try:
                    rate, p99 = await _throughput(cluster, _signed_load(count, keys),
                                                  concurrency)
                finally:
                    cluster.stop_all()
                print(f"{name}: {rate:,.0f} signed messages/s ({count} heartbeats of"
                      f" {CHECKS} checks, {concurrency} in flight),"
                      f" p99 {p99:.1f} ms", flush=True)
            delays = await _alert_latency(base, postgres, hook)
            print(f"dead man's switch, 3 receivers, {len(delays)}/{SILENT_AGENTS} alerts:"
                  f" after the deadline median {statistics.median(delays):.2f} s,"
                  f" max {max(delays):.2f} s (interval {INTERVAL_S:g} s + grace"
                  f" {GRACE_S:g} s; sweeps every 1 s)")
    finally:
        next(postgres_run, None)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
             int(sys.argv[2]) if len(sys.argv) > 2 else 8)
