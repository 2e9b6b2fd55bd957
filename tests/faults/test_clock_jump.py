"""The wall clock jumps an hour forward, then back: the schedule does not notice.

Schedules run on trio's monotonic clock; only result timestamps (``Result.at``)
come from the wall clock. A receiver therefore sees checks arriving at the same
steady pace while their timestamps jump by the same hour (and, after a backward
jump, go back in time): order by arrival, never by ``at``.
"""

from __future__ import annotations

import itertools
import random

import trio
import trio.testing

from agent.checks import ProbeKind
from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Reason, Result, StateChange, Target
from agent.schedule.scheduler import Scheduler

HOUR_S = 3600.0
EPOCH = 1_800_000_000.0


async def test_schedule_ignores_wall_clock_jumps(autojump_clock: trio.testing.MockClock) -> None:
    wall_offset = [0.0]
    starts: list[float] = []
    results: list[Result] = []

    async def probe(target: Target, *, timeout: float) -> Observation:
        starts.append(trio.current_time())
        return Observation(Outcome.OK, Reason.OPEN, latency_ms=1.0)

    def on_result(result: Result, change: StateChange | None) -> None:
        results.append(result)

    def wall_clock() -> float:
        return EPOCH + trio.current_time() + wall_offset[0]

    class FixedOffset(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return 1.0

    check = CheckConfig(name="db", host="127.0.0.1", port=1, interval_s=10, timeout_s=5)
    scheduler = Scheduler(
        [check], max_concurrent=1, on_result=on_result, probes={"tcp": ProbeKind(probe)},
        rng=FixedOffset(), wall_clock=wall_clock,
    )
    async with trio.open_nursery() as nursery:
        begin = trio.current_time()
        await nursery.start(scheduler.run)
        await trio.sleep(25)
        wall_offset[0] = HOUR_S  # NTP steps the clock an hour forward
        await trio.sleep(20)
        wall_offset[0] = -HOUR_S  # and then back, past where it was
        await trio.sleep(20)
        nursery.cancel_scope.cancel()

    assert [start - begin for start in starts] == [1, 11, 21, 31, 41, 51, 61]
    assert scheduler.stats.skipped == 0
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(results)]
    assert gaps == [10, 10, 10 + HOUR_S, 10, 10 - 2 * HOUR_S, 10]
