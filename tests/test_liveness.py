"""Watchdog and STATUS= decisions, driven by a real Scheduler under a MockClock."""

from __future__ import annotations

import logging
import random

import pytest
import trio

from agent.checks import PROBES, ProbeKind
from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Reason, Status, Target
from agent.schedule.scheduler import Scheduler
from agent.schedule.tracker import CheckTracker
from agent.service import liveness
from agent.service.systemd import Notifier


class RecordingNotifier(Notifier):
    """A Notifier whose transport keeps (virtual time, message) pairs."""

    def __init__(self, watchdog_interval_s: float | None) -> None:
        super().__init__(self._record, watchdog_interval_s=watchdog_interval_s)
        self.sent: list[tuple[float, str]] = []

    def _record(self, message: str) -> None:
        self.sent.append((trio.current_time(), message))

    def times(self, message: str) -> list[float]:
        return [at for at, sent in self.sent if sent == message]


async def _open_probe(target: Target, *, timeout: float) -> Observation:
    return Observation(Outcome.OK, Reason.OPEN, latency_ms=1.0)


async def _wedged_probe(target: Target, *, timeout: float) -> Observation:
    # Ignores even the scheduler's overrun guard: a run that never completes.
    with trio.CancelScope(shield=True):
        await trio.sleep(10_000)
    await trio.sleep_forever()  # the test's own deadline has cancelled us by now
    raise AssertionError("unreachable")


def _probes(probe: object) -> dict[str, ProbeKind]:
    return {"tcp": ProbeKind(probe, PROBES["tcp"].read_options)}  # type: ignore[arg-type]


def _check(name: str, interval_s: float = 10.0) -> CheckConfig:
    return CheckConfig(name=name, host="127.0.0.1", port=1, interval_s=interval_s, timeout_s=2.0)


def _tracker(status: Status) -> CheckTracker:
    tracker = CheckTracker(_check("x"))
    tracker.status = status
    return tracker


def test_checks_summary_counts_by_status() -> None:
    trackers = [_tracker(s) for s in (Status.UP, Status.DOWN, Status.UP, Status.UNKNOWN)]
    assert liveness.checks_summary(trackers) == "4 checks: 2 up, 1 down, 1 unknown"
    assert liveness.checks_summary([_tracker(Status.DEGRADED)]) == "1 check: 1 degraded"
    assert liveness.checks_summary([]) == "0 checks"


def test_status_line_joins_the_parts_that_have_something_to_say() -> None:
    parts = [lambda: "3 checks: 3 up", lambda: None, lambda: "outbox 12"]
    assert liveness.status_line(parts) == "3 checks: 3 up; outbox 12"


def test_counter_progress_stalls_only_while_work_is_due() -> None:
    count = 0
    allowed: float | None = 10.0
    progress = liveness.CounterProgress("runs", lambda: count, lambda: allowed)
    progress.restart(100.0)
    assert progress.stalled(110.0) is None
    assert progress.stalled(110.5) == "runs has not advanced for 10s (expected within 10s)"
    count = 1
    assert progress.stalled(111.0) is None  # it moved: the window starts again
    assert progress.stalled(121.0) is None
    assert progress.stalled(121.5) is not None
    allowed = None  # nothing due: standing still is fine
    assert progress.stalled(500.0) is None
    allowed = 10.0
    assert progress.stalled(505.0) is None  # the idle time before counts from when work came


async def _supervise_scheduler(
    probe: object, checks: list[CheckConfig], notifier: RecordingNotifier, run_for_s: float
) -> Scheduler:
    scheduler = Scheduler(
        checks, max_concurrent=4, on_result=lambda result, change: None,
        probes=_probes(probe), rng=random.Random(1),
    )
    sources = [liveness.scheduler_progress(scheduler, lambda: checks)]
    parts = [lambda: liveness.checks_summary(scheduler.trackers.values())]
    with trio.move_on_after(run_for_s):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            nursery.start_soon(liveness.supervise, notifier, sources, parts)
    return scheduler


async def test_watchdog_is_petted_while_checks_complete(autojump_clock: trio.abc.Clock) -> None:
    notifier = RecordingNotifier(watchdog_interval_s=15.0)
    start = trio.current_time()
    scheduler = await _supervise_scheduler(_open_probe, [_check("db")], notifier, 300.0)

    assert scheduler.stats.runs >= 29
    pings = [at - start for at in notifier.times("WATCHDOG=1")]
    # every 5 s (the STATUS refresh is more frequent than half the watchdog timeout)
    assert pings == pytest.approx([5.0 * n for n in range(60)])
    statuses = [message for _, message in notifier.sent if message.startswith("STATUS=")]
    assert statuses == ["STATUS=1 check: 1 unknown", "STATUS=1 check: 1 up"]


async def test_watchdog_is_withheld_when_runs_stop_completing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = RecordingNotifier(watchdog_interval_s=2.0)
    start = trio.current_time()
    with caplog.at_level(logging.ERROR, logger="heartwire.liveness"):
        scheduler = await _supervise_scheduler(_wedged_probe, [_check("db")], notifier, 120.0)

    assert scheduler.stats.runs == 0
    pings = [at - start for at in notifier.times("WATCHDOG=1")]
    # Allowed idle: shortest interval 10 s + longest timeout 2 s + 1 s grace + the
    # 2 s a path trace may add = 15 s.
    assert pings == pytest.approx([2.0 * n for n in range(8)])  # 0 .. 14 s, then silence
    assert [record.getMessage() for record in caplog.records] == [
        "no progress, withholding the watchdog: "
        "scheduler runs has not advanced for 16s (expected within 15s)"
    ]


async def test_without_checks_nothing_is_due_and_the_watchdog_keeps_going(
    autojump_clock: trio.abc.Clock,
) -> None:
    notifier = RecordingNotifier(watchdog_interval_s=2.0)
    await _supervise_scheduler(_wedged_probe, [], notifier, 60.0)
    assert len(notifier.times("WATCHDOG=1")) == 30
    assert notifier.sent[1] == (pytest.approx(notifier.sent[0][0]), "STATUS=0 checks")


async def test_the_watchdog_resumes_when_runs_complete_again(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def wedged_once(target: Target, *, timeout: float) -> Observation:
        nonlocal calls
        calls += 1
        if calls == 1:
            with trio.CancelScope(shield=True):  # stuck for 30 s, then recovers
                await trio.sleep(30.0)
        return await _open_probe(target, timeout=timeout)

    notifier = RecordingNotifier(watchdog_interval_s=2.0)
    start = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="heartwire.liveness"):
        await _supervise_scheduler(wedged_once, [_check("db")], notifier, 60.0)

    pings = [at - start for at in notifier.times("WATCHDOG=1")]
    assert pings[:8] == pytest.approx([2.0 * n for n in range(8)])
    assert not [at for at in pings if 15.0 < at < 30.0]  # withheld while stuck
    assert pings[8] < 36.0  # and back soon after the run completed
    assert [record.getMessage() for record in caplog.records] == [
        "no progress, withholding the watchdog: "
        "scheduler runs has not advanced for 16s (expected within 15s)",
        "progress resumed",
    ]
