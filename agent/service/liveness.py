"""What the running daemon tells systemd about itself: watchdog pings and STATUS=.

``WATCHDOG=1`` is sent only while every *progress source* says its part of the
daemon is moving. A live event loop is not enough: a scheduler whose checks never
complete must stop the pings, so that systemd (``WatchdogSec=``) restarts it.

A progress source is anything with a ``name``, ``stalled(now)`` and
``restart(now)``; :class:`CounterProgress` covers the usual case of a counter
that must advance within a window while work is due. The daemon keeps a list of
sources, so each part (scheduler, delivery, …) registers its own.

The ``STATUS=`` line is built the same way, from a list of parts that each return
a fragment ("3 checks: 2 up, 1 down") or None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from agent.checks.tracepath import TRACE_BUDGET_S
from agent.common.logs import get_logger
from agent.config.loader import CheckConfig
from agent.model import Status
from agent.schedule.scheduler import PROBE_OVERRUN_GRACE_S, Scheduler
from agent.schedule.tracker import CheckTracker
from agent.service.systemd import Notifier

if TYPE_CHECKING:
    from agent.outbound.delivery import Delivery

log = get_logger("liveness")

# How often STATUS= is refreshed (and progress looked at) without a watchdog.
STATUS_REFRESH_S = 5.0

StatusPart = Callable[[], str | None]


class ProgressSource(Protocol):
    """One part of the daemon that must keep moving."""

    name: str

    def stalled(self, now: float) -> str | None:
        """Why this part is stuck (one line), or None while it makes progress."""

    def restart(self, now: float) -> None:
        """Starts the patience window afresh (at start-up and after a reload)."""


class CounterProgress:
    """Progress seen as a counter that must advance while work is due.

    Args:
        name: what the counter measures, for the log line.
        read_count: the counter (completed runs, delivered messages, ...).
        allowed_idle_s: how long the counter may stand still right now, or None
            when nothing is due (an idle part is not a stuck part).
    """

    def __init__(
        self,
        name: str,
        read_count: Callable[[], int],
        allowed_idle_s: Callable[[], float | None],
    ) -> None:
        self.name = name
        self._read_count = read_count
        self._allowed_idle_s = allowed_idle_s
        self._last_count = read_count()
        self._moved_at: float | None = None

    def restart(self, now: float) -> None:
        self._last_count = self._read_count()
        self._moved_at = now

    def stalled(self, now: float) -> str | None:
        count = self._read_count()
        allowed_s = self._allowed_idle_s()
        if self._moved_at is None or count != self._last_count or allowed_s is None:
            self._last_count = count
            self._moved_at = now
            return None
        idle_s = now - self._moved_at
        if idle_s <= allowed_s:
            return None
        return f"{self.name} has not advanced for {idle_s:.0f}s (expected within {allowed_s:.0f}s)"


def scheduler_progress(
    scheduler: Scheduler, current_checks: Callable[[], Sequence[CheckConfig]]
) -> CounterProgress:
    """The scheduler's progress: completed runs must advance while checks exist.

    The check with the shortest interval runs at least once per interval (its first
    run comes within one interval too), and every run ends within its timeout plus
    the scheduler's overrun grace (and a path trace when it turns down); a longer
    silence means the scheduler is stuck.

    Args:
        scheduler: the running scheduler (its ``stats.runs``).
        current_checks: the checks now configured (they change on reload).
    """

    def allowed_idle_s() -> float | None:
        checks = current_checks()
        if not checks:
            return None
        shortest_interval_s = min(check.interval_s for check in checks)
        longest_timeout_s = max(check.timeout_s for check in checks)
        # A run that turns its check down also traces the path, before it counts.
        return (shortest_interval_s + longest_timeout_s + PROBE_OVERRUN_GRACE_S
                + TRACE_BUDGET_S)

    return CounterProgress("scheduler runs", lambda: scheduler.stats.runs, allowed_idle_s)


def delivery_progress(delivery: Delivery) -> CounterProgress:
    """The watchdog's view of delivery: the loops' iteration count must advance.

    Every loop ticks at least every ``PROGRESS_TICK_S``, also while idle or backing
    off, and between ticks it waits at most one request (bounded by its deadline).
    A count that stands still longer means a loop is stuck; a dead central is not
    a stuck loop: it keeps ticking between retries.
    """
    # Here, not at the top: an agent without destinations never loads delivery (httpx).
    from agent.outbound.delivery import PROGRESS_TICK_S

    deliverers = delivery.deliverers
    allowed_s = max((d.request_deadline_s for d in deliverers), default=0.0)
    allowed_s += 2 * PROGRESS_TICK_S
    return CounterProgress(
        "delivery loop iterations",
        lambda: sum(d.stats.iterations for d in deliverers),
        lambda: allowed_s if deliverers else None,
    )


def checks_summary(trackers: Iterable[CheckTracker]) -> str:
    """``"5 checks: 3 up, 1 degraded, 1 down"``: counts by status, zeros left out."""
    counts = Counter(tracker.status for tracker in trackers)
    total = sum(counts.values())
    order = (Status.UP, Status.DEGRADED, Status.DOWN, Status.UNKNOWN)
    by_status = ", ".join(f"{counts[status]} {status.value}" for status in order if counts[status])
    noun = "check" if total == 1 else "checks"
    return f"{total} {noun}: {by_status}" if by_status else f"{total} {noun}"


def status_line(parts: Iterable[StatusPart]) -> str:
    """The ``STATUS=`` text: every part's fragment, joined with ``"; "``."""
    return "; ".join(fragment for part in parts if (fragment := part()))


async def supervise(
    notifier: Notifier,
    sources: Sequence[ProgressSource],
    status_parts: Sequence[StatusPart],
    *,
    status_refresh_s: float = STATUS_REFRESH_S,
) -> None:
    """Pets the watchdog while every source makes progress and keeps STATUS= current.

    Runs until cancelled. The lists are read on every round, so sources and parts
    added later (or after a reload) take part.
    """
    watchdog_s = notifier.watchdog_interval_s
    period_s = min(watchdog_s, status_refresh_s) if watchdog_s else status_refresh_s
    now = trio.current_time()
    for source in sources:
        source.restart(now)
    sent_status: str | None = None
    reported_stall = False
    while True:
        now = trio.current_time()
        problems = [problem for source in sources if (problem := source.stalled(now))]
        if problems:
            # Logged once per stall: systemd acts on the silence, the log says why.
            if not reported_stall:
                log.error("no progress, withholding the watchdog: %s", "; ".join(problems))
            reported_stall = True
        else:
            if reported_stall:
                log.warning("progress resumed")
            reported_stall = False
            if watchdog_s:
                notifier.watchdog()
        status = status_line(status_parts)
        if status != sent_status:
            notifier.status(status)
            sent_status = status
        await trio.sleep(period_s)
