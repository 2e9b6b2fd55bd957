"""The scheduler on trio's MockClock: exact virtual times, no sleeping."""

import itertools
import random

import pytest
import trio
import trio.testing

from agent.model import Result, StateChange, Status
from agent.schedule.scheduler import (
    CHECKS_PER_START_SLOT,
    MAX_INITIAL_OFFSET_S,
    MAX_START_GRID_S,
    MIN_START_GRID_S,
    MIN_START_SLOTS,
    Scheduler,
    first_run_grid_s,
    start_grid_s,
)
from tests.fakes import OPEN, REFUSED, ScriptedProbe, make_check

Recorded = list[tuple[Result, StateChange | None]]


def make_scheduler(checks, probe: ScriptedProbe, recorded: Recorded, **kwargs) -> Scheduler:  # type: ignore[no-untyped-def]
    kwargs.setdefault("max_concurrent", 256)
    return Scheduler(
        checks,
        on_result=lambda result, change: recorded.append((result, change)),
        probes=probe.registry(),
        rng=random.Random(7),
        wall_clock=lambda: 1_700_000_000.0 + trio.current_time(),
        **kwargs,
    )


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_interval_is_start_to_start_even_when_runs_are_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe(duration_s=1.5)
    recorded: Recorded = []
    scheduler = make_scheduler([make_check(interval_s=10.0)], probe, recorded)
    await run_for(scheduler, 65)
    starts = probe.start_times("db.test")
    assert starts[0] < MAX_INITIAL_OFFSET_S
    assert [round(b - a, 9) for a, b in itertools.pairwise(starts)] == [10.0] * (
        len(starts) - 1
    )
    assert len(starts) == 6 or len(starts) == 7
    assert scheduler.stats.runs == len(recorded) and scheduler.stats.skipped == 0


def _first_run_slots(starts: list[tuple[float, str]]) -> dict[float, int]:
    per_slot: dict[float, int] = {}
    for at, _ in starts:
        per_slot[round(at, 6)] = per_slot.get(round(at, 6), 0) + 1
    return per_slot


@pytest.mark.parametrize(("checks", "interval_s", "grid_s"), [
    (500, 60.0, 0.5),  # 8 checks/s: 1 s, made finer for 20 slots over the 10 s
    (2000, 10.0, 0.25),  # 200 checks/s: 50 checks a slot
])
async def test_first_runs_are_spread_by_a_random_offset_in_slots_that_share_a_wakeup(
    autojump_clock: trio.testing.MockClock, checks: int, interval_s: float, grid_s: float,
) -> None:
    probe = ScriptedProbe()
    configs = [make_check(f"c{n}", interval_s=interval_s, timeout_s=5.0) for n in range(checks)]
    scheduler = make_scheduler(configs, probe, [])
    await run_for(scheduler, MAX_INITIAL_OFFSET_S)
    firsts = sorted(at for at, _ in probe.starts)
    assert len(firsts) == checks
    assert all(0 <= at < MAX_INITIAL_OFFSET_S for at in firsts)
    # The slots are spread over the whole offset range, and each holds about the
    # checks one wakeup of the process is meant to start.
    per_slot = _first_run_slots(probe.starts)
    assert all(round(at / grid_s, 6).is_integer() for at in per_slot)
    assert len(per_slot) == round(MAX_INITIAL_OFFSET_S / grid_s)
    assert max(per_slot.values()) <= 2 * CHECKS_PER_START_SLOT


def test_the_start_grid_gathers_a_slot_of_checks_per_wakeup_within_bounds() -> None:
    def grid(checks: int, interval_s: float) -> float:
        return start_grid_s([make_check(f"c{n}", interval_s=interval_s) for n in range(checks)])

    assert grid(1000, 1.0) == MIN_START_GRID_S  # 1,000 checks/s: 50 ms, 50 checks a slot
    assert grid(1000, 10.0) == pytest.approx(CHECKS_PER_START_SLOT / 100)  # 100/s
    assert grid(20_000, 1.0) == MIN_START_GRID_S  # never finer: the checks' spread
    assert grid(10, 60.0) == MAX_START_GRID_S  # a small agent: at most once a second
    assert grid(0, 10.0) == MAX_START_GRID_S


async def test_few_checks_with_a_short_interval_still_spread_over_their_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 20 checks a second is far from a slot's worth, but all of them in one slot
    # would hit their targets at the same instant every second. A check's first
    # run lands in one of at least MIN_START_SLOTS slots of its own offset range.
    probe = ScriptedProbe()
    checks = [make_check(f"c{n}", interval_s=1.0, timeout_s=0.5) for n in range(20)]
    scheduler = make_scheduler(checks, probe, [])
    await run_for(scheduler, 0.999)
    per_slot = _first_run_slots(probe.starts)
    assert sum(per_slot.values()) == 20
    assert all(round(at / (1.0 / MIN_START_SLOTS), 6).is_integer() for at in per_slot)
    assert len(per_slot) >= 10 and max(per_slot.values()) <= 4


def test_a_check_whose_offset_range_is_short_gets_a_finer_grid_that_divides_the_coarse_one(
) -> None:
    assert first_run_grid_s(0.5, 10.0) == 0.5
    assert first_run_grid_s(0.5, 2.0) == pytest.approx(0.1)  # 0.5 / 5: its slots are shared
    assert first_run_grid_s(1.0, 60.0) == 0.5  # the offset range is 10 s at most


async def test_a_reload_sets_the_grid_for_the_checks_it_adds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe()
    scheduler = make_scheduler([make_check("first", interval_s=60.0)], probe, [])
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(1.0)  # on the grid: a due time already past would start at once
        reloaded_at = trio.current_time()
        scheduler.reload([make_check(f"c{n}", interval_s=1.0, timeout_s=0.5)
                          for n in range(1000)])
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    # 1,000 checks a second: the 50 ms grid, about 50 checks a slot.
    added = [(at, host) for at, host in probe.starts if at >= reloaded_at]
    per_slot = _first_run_slots(added)
    assert all(round(at / MIN_START_GRID_S, 6).is_integer() for at in per_slot)
    assert len(per_slot) >= 15


async def test_short_intervals_are_offset_within_one_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe()
    scheduler = make_scheduler(
        [make_check(f"c{n}", interval_s=2.0, timeout_s=1.0) for n in range(50)], probe, []
    )
    await run_for(scheduler, 1.999)
    assert len(probe.starts) == 50


async def test_the_concurrency_limit_bounds_runs_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe(duration_s=1.0)
    checks = [make_check(f"c{n}", interval_s=30.0, timeout_s=5.0) for n in range(40)]
    scheduler = make_scheduler(checks, probe, [], max_concurrent=3)
    await run_for(scheduler, 60)
    assert probe.max_in_flight == 3
    assert scheduler.stats.runs == 80  # every check ran twice: the limit slowed, not stopped


async def test_a_run_still_in_progress_when_due_is_skipped_not_stacked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One slot, two checks whose runs take 8 s of a 10 s interval: each waits for the
    # other, so some due times find the previous run still going.
    probe = ScriptedProbe(duration_s=8.0)
    checks = [make_check(name, interval_s=10.0, timeout_s=9.0) for name in ("a", "b")]
    scheduler = make_scheduler(checks, probe, [], max_concurrent=1)
    await run_for(scheduler, 100)
    assert probe.max_in_flight == 1
    assert scheduler.stats.skipped >= 4
    for host in ("a.test", "b.test"):
        starts = probe.start_times(host)
        # Never two runs of one check at once: consecutive starts are a full run apart.
        assert all(b - a >= 8.0 for a, b in itertools.pairwise(starts))
    assert scheduler.stats.runs + scheduler.stats.skipped >= 18


async def test_results_carry_confirmed_status_and_wall_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe()
    probe.script("db.test", [OPEN, REFUSED, REFUSED, REFUSED, OPEN])
    recorded: Recorded = []
    scheduler = make_scheduler(
        [make_check(interval_s=10.0, failures_before_down=2)], probe, recorded
    )
    await run_for(scheduler, 50)
    assert [result.status for result, _ in recorded] == [
        Status.UP,
        Status.UP,
        Status.DOWN,
        Status.DOWN,
        Status.UP,
    ]
    changes = [(change.previous, change.current) for _, change in recorded if change]
    assert changes == [
        (Status.UNKNOWN, Status.UP),
        (Status.UP, Status.DOWN),
        (Status.DOWN, Status.UP),
    ]
    starts = probe.start_times("db.test")
    assert [result.at for result, _ in recorded] == [
        pytest.approx(1_700_000_000.0 + at) for at in starts
    ]


async def test_a_probe_that_overruns_its_timeout_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe(duration_s=1000.0)  # ignores its timeout
    recorded: Recorded = []
    scheduler = make_scheduler(
        [make_check(interval_s=10.0, timeout_s=2.0, failures_before_down=1)], probe, recorded
    )
    await run_for(scheduler, 25)
    assert len(recorded) == 2
    result = recorded[0][0]
    assert (result.status, result.observation.reason) == (Status.DOWN, "timeout")
    assert "did not finish within its 2s timeout" in (result.observation.detail or "")


async def test_reload_keeps_unchanged_checks_and_restarts_changed_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe()
    probe.script("keep.test", [REFUSED])
    recorded: Recorded = []
    keep = make_check("keep", interval_s=10.0, failures_before_down=3)
    change = make_check("change", interval_s=10.0)
    drop = make_check("drop", interval_s=10.0)
    scheduler = make_scheduler([keep, change, drop], probe, recorded)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        # Offsets are below 10 s, so by 19.999 s "keep" has run exactly twice.
        await trio.sleep(19.999)
        assert scheduler.trackers["keep"].consecutive_failures == 2
        keep_phase = probe.start_times("keep.test")[0] % 10
        changed = make_check("change", interval_s=20.0)
        added = make_check("new", interval_s=10.0)
        scheduler.reload([keep, changed, added])
        assert set(scheduler.trackers) == {"keep", "change", "new"}
        assert scheduler.trackers["keep"].consecutive_failures == 2
        assert scheduler.trackers["change"].check.interval_s == 20.0
        runs_of_drop = len(probe.start_times("drop.test"))
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert len(probe.start_times("drop.test")) == runs_of_drop
    assert probe.start_times("new.test")
    keep_starts = probe.start_times("keep.test")
    assert all(round(at % 10, 9) == round(keep_phase, 9) for at in keep_starts)  # same schedule
    keep_statuses = [result.status for result, _ in recorded if result.check == "keep"]
    assert keep_statuses[2] is Status.DOWN  # the third failure in a row, across the reload


async def test_reload_changes_the_concurrency_limit(autojump_clock: trio.testing.MockClock) -> None:
    probe = ScriptedProbe(duration_s=1.0)
    checks = [make_check(f"c{n}", interval_s=30.0, timeout_s=5.0) for n in range(20)]
    scheduler = make_scheduler(checks, probe, [], max_concurrent=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(29)
        scheduler.reload(checks, max_concurrent=2)
        probe.max_in_flight = 0
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert probe.max_in_flight == 2
