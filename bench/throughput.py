"""Throughput worker: checks per second against the bench listeners.

``--options`` JSON keys: ``mode`` ("agent" or "raw"), ``targets`` ([host, port]
pairs), ``checks`` (agent: how many checks, each every second), ``concurrency``,
``rate`` (raw: checks per second, paced; absent: as fast as it can), ``warmup_s``
and ``seconds``. Prints one JSON line: completed, ok, wall and CPU
seconds of the measured window, and scheduling lag percentiles (agent).
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import time
from typing import Any

import trio

from agent.checks.resolver import default_resolver
from agent.config.loader import CheckConfig
from agent.model import Outcome, Result, StateChange
from agent.schedule.scheduler import Scheduler
from bench.common import cpu_seconds, percentile

# The paced raw loop starts its checks on the scheduler's start grid (50 ms), so
# that it pays the same number of wakeups per second as the agent does.
PACE_TICK_S = 0.05


def raw_loop(
    targets: list[tuple[str, int]], concurrency: int, seconds: float, rate: float | None = None
) -> dict[str, Any]:
    """The bound: non-blocking connect + close with ``selectors``, nothing else.

    Unpaced (``rate`` None) it keeps ``concurrency`` connects in flight, as fast as
    it can; paced, it starts ``rate * PACE_TICK_S`` connects every tick and sleeps
    in between, the least a program doing ``rate`` checks a second must do.
    """
    selector = selectors.DefaultSelector()
    completed = ok = 0
    next_target = 0

    def start_one() -> None:
        nonlocal next_target
        host, port = targets[next_target % len(targets)]
        next_target += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code in (0, errno.EINPROGRESS):
            selector.register(sock, selectors.EVENT_WRITE)
        else:
            sock.close()

    if rate is None:
        for _ in range(concurrency):
            start_one()
    cpu_start, wall_start = cpu_seconds(), time.monotonic()
    deadline = wall_start + seconds
    next_tick, started = wall_start, 0.0
    while time.monotonic() < deadline:
        if rate is not None:
            now = time.monotonic()
            if now >= next_tick:
                started += rate * PACE_TICK_S
                while next_target < started:
                    start_one()
                next_tick += PACE_TICK_S
            timeout = max(0.0, next_tick - time.monotonic())
        else:
            timeout = 0.5
        for key, _ in selector.select(timeout=timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                ok += 1
            sock.close()
            completed += 1
            if rate is None:
                start_one()
    wall = time.monotonic() - wall_start
    return {"completed": completed, "ok": ok, "wall_s": wall, "cpu_s": cpu_seconds() - cpu_start}


async def agent_run(
    targets: list[tuple[str, int]], checks: int, concurrency: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """The agent: ``checks`` checks every second through the real Scheduler."""
    configs = [
        CheckConfig(
            name=f"c{index}",
            host=targets[index % len(targets)][0],
            port=targets[index % len(targets)][1],
            interval_s=1.0,
            timeout_s=0.9,
        )
        for index in range(checks)
    ]
    counts = {"completed": 0, "ok": 0}
    lags: list[float] = []
    failures: dict[str, int] = {}

    def on_result(result: Result, change: StateChange | None) -> None:
        counts["completed"] += 1
        if result.observation.outcome is Outcome.OK:
            counts["ok"] += 1
        else:
            detail = result.observation.detail or result.observation.reason
            failures[detail[:80]] = failures.get(detail[:80], 0) + 1

    scheduler = Scheduler(
        configs, max_concurrent=concurrency, on_result=on_result, on_lag=lags.append
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(warmup_s)
        start = dict(counts)
        lags.clear()
        cpu_start, wall_start = cpu_seconds(), trio.current_time()
        skipped_start = scheduler.stats.skipped
        await trio.sleep(seconds)
        wall = trio.current_time() - wall_start
        cpu = cpu_seconds() - cpu_start
        end = dict(counts)
        skipped = scheduler.stats.skipped - skipped_start
        nursery.cancel_scope.cancel()
    return {
        "completed": end["completed"] - start["completed"],
        "ok": end["ok"] - start["ok"],
        "skipped": skipped,
        "wall_s": wall,
        "cpu_s": cpu,
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "failures": dict(sorted(failures.items(), key=lambda item: -item[1])[:3]),
        "dns": vars(default_resolver().stats),
        "lag_max_ms": max(lags, default=0.0) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", required=True)
    options = json.loads(parser.parse_args().options)
    targets = [(host, port) for host, port in options["targets"]]
    if options["mode"] == "raw":
        result = raw_loop(targets, options["concurrency"], options["seconds"],
                          options.get("rate"))
    else:
        result = trio.run(
            agent_run, targets, options["checks"], options["concurrency"],
            options["warmup_s"], options["seconds"],
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
