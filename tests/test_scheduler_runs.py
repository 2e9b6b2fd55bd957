"""The scheduler's timing contract, on virtual time with a fake probe."""

from __future__ import annotations

import random

import trio
import trio.testing

from agent.checks import ProbeKind
from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Reason, Result, StateChange, Target
from agent.schedule.scheduler import Scheduler


class _NoOffset(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def _scheduler(
    probe_s: float, starts: list[float], results: list[Result]
) -> tuple[Scheduler, list[float]]:
    lags: list[float] = []

    async def probe(target: Target, *, timeout: float) -> Observation:
        starts.append(trio.current_time())
        await trio.sleep(probe_s)
        return Observation(Outcome.OK, Reason.OPEN, latency_ms=1.0)

    def on_result(result: Result, change: StateChange | None) -> None:
        results.append(result)

    check = CheckConfig(name="db", host="127.0.0.1", port=1, interval_s=10, timeout_s=9.5)
    scheduler = Scheduler(
        [check],
        max_concurrent=4,
        on_result=on_result,
        probes={"tcp": ProbeKind(probe)},
        rng=_NoOffset(),
        on_lag=lags.append,
    )
    return scheduler, lags


async def test_runs_start_every_interval_start_to_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    results: list[Result] = []
    scheduler, lags = _scheduler(3.0, starts, results)
    async with trio.open_nursery() as nursery:
        begin = trio.current_time()
        await nursery.start(scheduler.run)
        await trio.sleep(35)
        nursery.cancel_scope.cancel()
    assert [start - begin for start in starts] == [0, 10, 20, 30]
    assert len(results) == 4
    assert lags == [0, 0, 0, 0]
    assert scheduler.stats.skipped == 0


async def test_a_run_longer_than_the_interval_skips_and_counts_due_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    results: list[Result] = []
    scheduler, _ = _scheduler(10.3, starts, results)  # within timeout + grace
    async with trio.open_nursery() as nursery:
        begin = trio.current_time()
        await nursery.start(scheduler.run)
        await trio.sleep(45)
        nursery.cancel_scope.cancel()
    # Never stacked: the run due at 10 found the first still going and was skipped.
    assert [start - begin for start in starts] == [0, 20, 40]
    assert scheduler.stats.skipped == 2
    assert scheduler.stats.runs == 2
