"""Footprint worker: 1,000 checks every 10 s, measured over 60 s.

``--options`` JSON keys: ``targets``, ``checks``, ``interval_s``, ``warmup_s``,
``seconds`` (and ``mode``: "timer" for the baseline below; ``cpu``: pin to that
CPU). Prints one JSON line: CPU seconds and completed runs of the window, peak
RSS, the RSS before the scheduler started (the interpreter with the agent
imported: the baseline), and scheduling lag percentiles.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from agent.config.loader import CheckConfig
from agent.model import Outcome, Result, StateChange
from agent.schedule.scheduler import Scheduler
from bench.common import cpu_seconds, peak_rss_kib, percentile, rss_kib, worker_options


async def footprint(options: dict[str, Any]) -> dict[str, Any]:
    targets = options["targets"]
    configs = [
        CheckConfig(
            name=f"c{index}",
            host=targets[index % len(targets)][0],
            port=targets[index % len(targets)][1],
            interval_s=options["interval_s"],
            timeout_s=2.0,
        )
        for index in range(options["checks"])
    ]
    baseline_rss_kib = rss_kib()
    counts = {"completed": 0, "ok": 0}
    lags: list[float] = []

    def on_result(result: Result, change: StateChange | None) -> None:
        counts["completed"] += 1
        counts["ok"] += result.observation.outcome is Outcome.OK

    scheduler = Scheduler(configs, max_concurrent=256, on_result=on_result, on_lag=lags.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(options["warmup_s"])
        lags.clear()
        start = dict(counts)
        cpu_start = cpu_seconds()
        await trio.sleep(options["seconds"])
        cpu = cpu_seconds() - cpu_start
        end = dict(counts)
        nursery.cancel_scope.cancel()
    return {
        "completed": end["completed"] - start["completed"],
        "ok": end["ok"] - start["ok"],
        "cpu_s": cpu,
        "wall_s": options["seconds"],
        "peak_rss_mib": peak_rss_kib() / 1024,
        "baseline_rss_mib": baseline_rss_kib / 1024,
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags, default=0.0) * 1000,
    }


async def timer_baseline(options: dict[str, Any]) -> dict[str, Any]:
    """The machine's own wakeup noise: a bare trio task waking every 10 ms.

    Run beside the agent, it sees the same neighbours; its lag is the floor the
    agent's scheduling lag is compared with.
    """
    lags: list[float] = []
    planned = trio.current_time() + options["warmup_s"]
    end = planned + options["seconds"]
    while planned < end:
        await trio.sleep_until(planned)
        lags.append(trio.current_time() - planned)
        planned += 0.01
    return {
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags, default=0.0) * 1000,
    }


def main() -> None:
    options = worker_options()
    run = timer_baseline if options.get("mode") == "timer" else footprint
    print(json.dumps(trio.run(run, options)))


if __name__ == "__main__":
    main()
