"""When each check runs: its own interval, a global concurrency limit, live reload.

* Each check runs in its own task, first after a small random offset on a grid
  (so hundreds of checks with the same interval do not all fire at once, while
  those in one slot share a wakeup of the process), then every
  ``interval`` measured start-to-start: a slow run does not push the schedule.
  The grid holds about ``CHECKS_PER_START_SLOT`` checks a slot: 50 ms at 1,000
  checks a second, 0.5 s at 100, once a second at most for a small agent, and a
  check's first run still has at least ``MIN_START_SLOTS`` slots to land in.
* A :class:`~agent.schedule._slots.Slots` limit bounds how many probes (and so sockets) are open.
* When a run is still in progress at its next due time, that run is skipped and
  counted, never stacked.
* :meth:`Scheduler.reload` swaps the set of checks; unchanged checks keep their
  schedule and their tracker state.

Times come from trio's clock (``trio.current_time()``), never from the OS, so tests
drive the scheduler with :class:`trio.testing.MockClock`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from agent.checks import PROBES, ProbeKind
from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Reason, Result, StateChange
from agent.schedule._slots import Slots
from agent.schedule._wakeups import WakeupQueue
from agent.schedule.tracker import CheckTracker

if TYPE_CHECKING:
    # Only the daemon makes a tracer; ``heartwire check`` never loads the tracing code.
    from agent.checks.tracepath import PathTracer

# Upper bound of the random offset before a check's first run.
MAX_INITIAL_OFFSET_S = 10.0
# First runs fall on multiples of a grid after the scheduler started (see _start),
# sized so that a slot holds about this many checks (see start_grid_s).
CHECKS_PER_START_SLOT = 50
MIN_START_GRID_S = 0.05
MAX_START_GRID_S = 1.0
# A check's first run lands in one of at least this many slots of its offset range:
# checks that would not fill a slot are still spread, as the random offset is for,
# rather than all started at the same instant of every interval.
MIN_START_SLOTS = 20
# How long past its own timeout a probe may run before the scheduler stops it;
# probes honour their timeout, this only guards against a probe that does not.
PROBE_OVERRUN_GRACE_S = 1.0

ResultHandler = Callable[[Result, StateChange | None], None]


@dataclass
class SchedulerStats:
    """Counters since start (never reset, so readers can diff them).

    Attributes:
        runs: probe runs completed.
        skipped: due times that passed while the previous run was still going.
    """

    runs: int = 0
    skipped: int = 0


@dataclass
class _CheckTask:
    check: CheckConfig
    tracker: CheckTracker
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    running: bool = False


def start_grid_s(checks: Iterable[CheckConfig]) -> float:
    """The grid first runs fall on: about ``CHECKS_PER_START_SLOT`` checks a slot.

    A wakeup of the process costs more than a TCP check (on a VM, measured: half a
    millisecond of CPU, where a check costs about 0.1 ms), and the wakeups come from
    the grid, not from the number of checks: at 100 checks a second a 50 ms grid
    woke the agent 20 times a second for 5 checks each, and that fixed part was
    half its CPU. A grid sized to the rate keeps each wakeup's batch about the
    same at every load (the batch at 1,000 checks a second on 50 ms), within
    ``MIN_START_GRID_S`` (the spread of many checks) and ``MAX_START_GRID_S``.
    """
    checks_per_s = sum(1.0 / check.interval_s for check in checks)
    if checks_per_s <= 0:
        return MAX_START_GRID_S
    return min(MAX_START_GRID_S, max(MIN_START_GRID_S, CHECKS_PER_START_SLOT / checks_per_s))


def first_run_grid_s(grid_s: float, interval_s: float) -> float:
    """The grid of one check's first run: ``grid_s``, or finer for a short offset range.

    The finer grid divides ``grid_s`` evenly, so its slots still include (and share
    the wakeups of) the coarse grid's.
    """
    finest_s = min(interval_s, MAX_INITIAL_OFFSET_S) / MIN_START_SLOTS
    if grid_s <= finest_s:
        return grid_s
    return grid_s / math.ceil(grid_s / finest_s)


async def run_probe(check: CheckConfig, probes: Mapping[str, ProbeKind] = PROBES) -> Observation:
    """Runs the check's probe once, stopping a probe that overruns its own timeout."""
    kind = probes[check.kind]
    if kind.bounds_own_timeout:
        # A deadline cancel scope costs ~10 µs, a tenth of a whole TCP check.
        return await kind.probe(check.target(), timeout=check.timeout_s)
    with trio.move_on_after(check.timeout_s + PROBE_OVERRUN_GRACE_S):
        return await kind.probe(check.target(), timeout=check.timeout_s)
    return Observation(
        Outcome.FAILED,
        Reason.TIMEOUT,
        detail=f"the {check.kind} probe did not finish within its {check.timeout_s:g}s timeout",
    )


async def run_all_once(
    checks: Sequence[CheckConfig],
    *,
    max_concurrent: int,
    probes: Mapping[str, ProbeKind] = PROBES,
    wall_clock: Callable[[], float] = time.time,
) -> list[Result]:
    """Runs every check once, concurrently, and returns their results in input order.

    A single run has nothing to confirm a failure against, so a failure is ``down``
    at once (``failures_before_down`` does not apply).
    """
    limiter = trio.CapacityLimiter(max_concurrent)
    results: list[Result | None] = [None] * len(checks)

    async def run_one(index: int, check: CheckConfig) -> None:
        async with limiter:
            at = wall_clock()
            observation = await run_probe(check, probes)
        tracker = CheckTracker(replace(check, failures_before_down=1))
        results[index], _ = tracker.observe(observation, at)

    async with trio.open_nursery() as nursery:
        for index, check in enumerate(checks):
            nursery.start_soon(run_one, index, check)
    return [result for result in results if result is not None]


class Scheduler:
    """Runs every check on its schedule until cancelled.

    Args:
        checks: the checks to run.
        max_concurrent: how many probes may be in progress at once.
        on_result: called (synchronously, so it must not block) with every result
            and the state change it caused, if any.
        probes: the probe registry (tests pass fakes).
        rng: the source of the initial offsets (tests pass a seeded one).
        wall_clock: seconds since the epoch, for result timestamps only.
        on_lag: called with each run's start lag (actual minus planned start, in
            seconds), for benchmarks and diagnostics.
        path_tracer: traces the path to a check's target when it turns down (the
            state change then carries it); None: no traces.
    """

    def __init__(
        self,
        checks: Iterable[CheckConfig],
        *,
        max_concurrent: int,
        on_result: ResultHandler,
        probes: Mapping[str, ProbeKind] = PROBES,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_lag: Callable[[float], None] | None = None,
        path_tracer: PathTracer | None = None,
    ) -> None:
        self._checks = list(checks)
        self._limiter = Slots(max_concurrent)
        self._on_result = on_result
        self._probes = probes
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._on_lag = on_lag
        self._path_tracer = path_tracer
        self._tasks: dict[str, _CheckTask] = {}
        self._nursery: trio.Nursery | None = None
        self._wakeups = WakeupQueue()
        self._grid_origin = 0.0
        self._grid_s = start_grid_s(self._checks)
        self.stats = SchedulerStats()

    @property
    def trackers(self) -> dict[str, CheckTracker]:
        """The tracker of every scheduled check, by name."""
        return {name: task.tracker for name, task in self._tasks.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Schedules every check; reports started once all first runs are armed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._grid_origin = trio.current_time()
            await nursery.start(self._wakeups.run)
            for check in self._checks:
                self._start(check, CheckTracker(check))
            task_status.started()
            await trio.sleep_forever()

    def reload(self, checks: Iterable[CheckConfig], *, max_concurrent: int | None = None) -> None:
        """Replaces the checks; unchanged ones keep their schedule and status.

        A check whose config changed in any way starts afresh (new offset, status
        unknown), because its old status may describe a different target.
        """
        if self._nursery is None:
            raise RuntimeError("reload() before run() started")
        if max_concurrent is not None:
            self._limiter.total = max_concurrent
        new_checks = {check.name: check for check in checks}
        self._grid_s = start_grid_s(new_checks.values())
        for name, task in list(self._tasks.items()):
            if new_checks.get(name) != task.check:
                task.cancel_scope.cancel()
                del self._tasks[name]
        for name, check in new_checks.items():
            if name not in self._tasks:
                self._start(check, CheckTracker(check))
        self._checks = list(new_checks.values())

    def _start(self, check: CheckConfig, tracker: CheckTracker) -> None:
        assert self._nursery is not None
        task = _CheckTask(check, tracker)
        self._tasks[check.name] = task
        # Offsets fall on a grid so that checks share wakeups of the process (see
        # start_grid_s). Within a slot the checks start together; the slots
        # themselves are spread at random.
        offset = self._rng.uniform(0.0, min(check.interval_s, MAX_INITIAL_OFFSET_S))
        since_origin = trio.current_time() + offset - self._grid_origin
        grid_s = first_run_grid_s(self._grid_s, check.interval_s)
        first_due = self._grid_origin + math.floor(since_origin / grid_s) * grid_s
        self._nursery.start_soon(self._run_schedule, task, first_due)

    async def _run_schedule(self, task: _CheckTask, due: float) -> None:
        # The run happens in this task rather than a task of its own: spawning a
        # task per run costs more than the TCP probe itself at thousands of checks
        # per second. The semantics are unchanged: due times that pass while a run
        # is in progress are skipped and counted, never stacked.
        interval_s = task.check.interval_s
        with task.cancel_scope:
            while True:
                await self._wakeups.sleep_until(due)
                task.running = True
                try:
                    await self._run_once(task, due)
                finally:
                    task.running = False
                due += interval_s
                # A run longer than the interval, or a stall (a suspended VM, an
                # overloaded host): skip the due times already past instead of
                # firing them all at once.
                now = trio.current_time()
                if due < now:
                    missed = math.ceil((now - due) / interval_s)
                    self.stats.skipped += missed
                    due += missed * interval_s

    async def _run_once(self, task: _CheckTask, due: float) -> None:
        async with self._limiter:
            if self._on_lag is not None:
                self._on_lag(trio.current_time() - due)
            at = self._wall_clock()
            observation = await run_probe(task.check, self._probes)
        path = None
        if self._path_tracer is not None and task.tracker.turns_down(observation):
            # Before observing: until the trace is done (a bounded few seconds, at
            # most once per target in a while) the check keeps its previous status,
            # so no heartbeat reports the outage before the state change that
            # carries the path.
            path = await self._path_tracer.trace_for(task.check.target(), observation)
        result, change = task.tracker.observe(observation, at)
        if change is not None and path is not None:
            change = replace(change, path=path)
        self.stats.runs += 1
        self._on_result(result, change)
