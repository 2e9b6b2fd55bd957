"""What the receiver remembers of each check over time: observations, rollups, uptime.

Ingest calls :meth:`History.observe` for every check report (a heartbeat's latest
observation of each check, each ``state_change``, each ``results`` entry) and
:meth:`History.status_changed` when a check's status changes; the watcher calls
:meth:`History.tick` on every sweep. Everything a page view reads was computed
then:

* each new observation is stored raw (kept ``raw_retention``, default 7 days) and
  counted into its hour's rollup row at once (count, failures, latency
  min/max/sum and a log-bucket histogram for p50/p95, see latency_histogram.py;
  kept ``rollup_retention``, default 400 days), so no page ever scans raw rows to
  summarise them;
* uptime is time-weighted from the status history: each check's counters hold
  the seconds spent up (``up`` and ``degraded``), down, and unknown (``unknown``,
  while its agent is silent or a maintenance window covers it: shown apart, not
  counted against the check), and
  the watcher writes them down at every hour boundary and every UTC midnight. The
  uptime over a window is the counters now minus those at its start: 24 h starts
  at the hour boundary 24 h ago, 7/30/90 d at the UTC midnight that many days ago
  (or when the check was first seen, if later). Uptime is ``up / (up + down)``.

Times come from the observation's ``at`` (the agent's clock) when it is within
the timestamp tolerance of the receiver's, else from the receipt time.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from agent.central.config import CentralConfig
from agent.central.history_store import HistoryStore, UptimeCounters
from agent.central.latency_histogram import bucket_of
from agent.central.maintenance import Maintenance
from agent.central.storage import Storage
from agent.common.logs import get_logger

log = get_logger("central.history")

HOUR: Final = 3600
DAY: Final = 86400
# Hourly marks cover the 24 h window; midnight marks the 90 bars and 90 d window.
HOURLY_MARKS_KEPT_S: Final = 26 * HOUR
DAILY_MARKS_KEPT_S: Final = 91 * DAY
WINDOWS: Final = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
PRUNE_EVERY_S: Final = 3600.0
UPTIME_REFRESH_S: Final = 60.0
PRUNE_BATCH: Final = 50_000


class Report(Protocol):
    """What History needs of one check report (ingest's CheckReport)."""

    @property
    def name(self) -> str: ...  # pragma: no cover

    @property
    def status(self) -> str: ...  # pragma: no cover

    @property
    def reason(self) -> str | None: ...  # pragma: no cover

    @property
    def latency_ms(self) -> float | None: ...  # pragma: no cover

    @property
    def at(self) -> str | None: ...  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Uptime:
    """One check's uptime per window, in percent (None: nothing known in the window).

    Attributes:
        uptime: ``up / (up + down)`` per window name.
        unknown: the share of the window nothing was known (agent silent, status
            unknown), per window name.
    """

    uptime: Mapping[str, float | None]
    unknown: Mapping[str, float | None]


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time as seconds since the epoch, or None when absent or invalid."""
    if not text or len(text) > 64:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def floor_to(moment: float, step: int) -> int:
    """The boundary of ``step`` seconds at or before ``moment``."""
    return math.floor(moment / step) * step


def window_start(window_s: int, now: float) -> int:
    """Where a window ending now starts: an hour boundary for 24 h, else a UTC midnight."""
    return floor_to(now - window_s, HOUR if window_s <= DAY else DAY)


def percentages(now: UptimeCounters, then: UptimeCounters | None) -> tuple[float | None,
                                                                          float | None]:
    """Uptime and unknown share, in percent, between two counter readings."""
    base = then or UptimeCounters(0.0, 0.0, 0.0)
    up = max(0.0, now.up_s - base.up_s)
    down = max(0.0, now.down_s - base.down_s)
    unknown = max(0.0, now.unknown_s - base.unknown_s)
    known = up + down
    uptime = round(100.0 * up / known, 3) if known > 0 else None
    total = known + unknown
    unknown_pct = round(100.0 * unknown / total, 3) if total > 0 else None
    return uptime, unknown_pct


class History:
    """Keeps observations, rollups and uptime counters.

    Args:
        config: the receiver config (``[history]``, grace, tolerance).
        storage: the store whose database holds the history tables too.
        wall_clock: seconds since the epoch.
        seed: start counting uptime for checks known from before (the writing side).
    """

    def __init__(self, config: CentralConfig, storage: Storage,
                 wall_clock: Callable[[], float], *, seed: bool = True) -> None:
        self.config = config
        self.storage = storage
        self.store = HistoryStore(storage)
        self.wall_clock = wall_clock
        now = wall_clock()
        if seed:  # the writing side's; a reading one over another connection does not
            with storage.transaction():
                seeded = self.store.seed_uptime(now)
            if seeded:
                log.info("counting uptime from now for %d checks known from before", seeded)
        self._silent = self.store.silent_agents()
        self._marked_through = self.store.latest_mark()
        self._window_starts: list[int | None] = [None] * len(WINDOWS)
        self._uptimes: tuple[float, dict[tuple[str, str], Uptime]] | None = None
        self.maintenance: Maintenance | None = None  # set by the receiver
        self._windows: frozenset[str] | None = None  # the maintenance windows counted
        self._last_prune = float("-inf")

    @property
    def enabled(self) -> bool:
        """Whether ``[history] enabled`` is on."""
        return self.config.history.enabled

    def _moment(self, at: str | None, now: float) -> float:
        moment = parse_time(at)
        if moment is None or abs(moment - now) > self.config.tolerance_s:
            return now
        return moment

    # -- ingest ------------------------------------------------------------------

    def observe(self, agent: str, report: Report, held_at: str | None, now: float) -> None:
        """Stores one reported observation and counts it into its hour's rollup.

        Args:
            agent: the agent reporting.
            report: the check report.
            held_at: the ``at`` of the check's latest observation already held: a
                heartbeat repeating it adds nothing.
            now: receipt time.
        """
        if not self.enabled or report.at is None or report.at == held_at:
            return
        at = parse_time(report.at)
        if at is None or at > now + self.config.tolerance_s:
            return
        if at < now - self.config.history.raw_retention_s:
            return  # older than what is kept: it could not be told from a duplicate
        latency = report.latency_ms
        if latency is not None and not (math.isfinite(latency) and latency >= 0):
            latency = None  # JSON's NaN/Infinity or a negative time: not a latency
        if not self.store.add_observation(agent, report.name, at, report.status, latency,
                                          report.reason):
            return  # the same observation, reported again
        self.store.add_to_rollup(
            agent, report.name, floor_to(at, HOUR), report.status == "down", latency,
            None if latency is None else bucket_of(latency),
        )

    def status_changed(self, agent: str, check: str, status: str, at: str | None,
                       now: float) -> None:
        """A check's status changed: closes the time of the old status."""
        if not self.enabled:
            return
        moment = self._moment(at, now)
        state = self.store.uptime_state(agent, check)
        if state is None:
            self.store.start_uptime(agent, check, status, agent in self._silent, moment)
            if self.maintenance is not None and self.maintenance.holds(agent, check, moment):
                self.store.start_maintenance(agent, [check], moment)
            return
        hour = floor_to(moment, HOUR)
        if state.counted_to <= hour:
            # The watcher may not have written this hour's mark yet.
            self.store.mark(hour, hour % DAY == 0, agent, check)
        self.store.change_status(agent, check, status, moment)

    # -- the watcher ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Silence transitions, the marks at hour boundaries, pruning on schedule."""
        if not self.enabled:
            return
        with self.storage.transaction():
            self._follow_silence(now)
            self._follow_maintenance(now)
            self._write_marks(now)
            self._move_windows(now)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            # Of several receivers on one database, the first to claim the hour prunes.
            if self.storage.claim_job("history-prune", PRUNE_EVERY_S, now):
                self.prune(now)

    def _follow_silence(self, now: float) -> None:
        for row in self.storage.agents():
            if row.last_heartbeat_at is None:
                continue
            # Not the dead man's switch's deadline: that one restarts with the
            # receiver (to spare alerts); uptime counts what was actually known.
            interval = row.interval_s or self.config.default_interval_s
            deadline = row.last_heartbeat_at + interval + self.config.grace_for(row.id)
            silent = now >= deadline
            if silent and row.id not in self._silent:
                self.store.set_agent_silent(row.id, True, deadline)
                self._silent.add(row.id)
            elif not silent and row.id in self._silent:
                self.store.set_agent_silent(row.id, False, row.last_heartbeat_at)
                self._silent.discard(row.id)

    def _follow_maintenance(self, now: float) -> None:
        windows = self.maintenance.windows(now) if self.maintenance is not None else []
        active = frozenset(window.id for window in windows)
        if active == self._windows:
            return
        # Rare (a window starts or ends): clear every flag, set the active ones again.
        self.store.end_maintenance(now)
        for window in windows:
            self.store.start_maintenance(window.agent, window.checks, now)
        self._windows = active

    def _write_marks(self, now: float) -> None:
        boundary = floor_to(now, HOUR)
        if self._marked_through is not None and boundary <= self._marked_through:
            return
        first = boundary if self._marked_through is None else self._marked_through + HOUR
        # After a long stop only the marks still kept are written: the hours of the
        # last 26 h and the midnights of the last 91 days.
        for moment in range(max(first, floor_to(now - DAILY_MARKS_KEPT_S, DAY)),
                            boundary + 1, HOUR):
            daily = moment % DAY == 0
            if daily or moment > now - HOURLY_MARKS_KEPT_S:
                self.store.mark(moment, daily)
        self._marked_through = boundary

    def _move_windows(self, now: float) -> None:
        for slot, seconds in enumerate(WINDOWS.values()):
            start = window_start(seconds, now)
            if start != self._window_starts[slot]:
                self.store.set_window_start(slot, start)
                self._window_starts[slot] = start

    def prune(self, now: float) -> int:
        """Deletes raw rows, rollups and marks past their retention; returns how many."""
        settings = self.config.history
        with self.storage.transaction():
            deleted = self.store.prune(
                raw_before=now - settings.raw_retention_s,
                rollups_before_hour=floor_to(now - settings.rollup_retention_s, HOUR),
                hourly_marks_before=floor_to(now - HOURLY_MARKS_KEPT_S, HOUR),
                daily_marks_before=floor_to(now - DAILY_MARKS_KEPT_S, DAY),
                batch=PRUNE_BATCH,
            )
        if deleted:
            log.info("pruned %d history rows past their retention", deleted)
        return deleted

    # -- reading -----------------------------------------------------------------

    def uptimes(self, now: float) -> dict[tuple[str, str], Uptime]:
        """Every check's uptime per window, by (agent, check), as of at most
        ``UPTIME_REFRESH_S`` ago (one pass over every check costs about a second at
        50,000 checks; a percentage over a day or more does not move in a minute)."""
        if not self.enabled:
            return {}
        if self._uptimes is not None and 0 <= now - self._uptimes[0] < UPTIME_REFRESH_S:
            return self._uptimes[1]
        uptimes = {(row[0], row[1]): _uptime_of(row) for row in self.store.window_uptimes(
            now, [window_start(seconds, now) for seconds in WINDOWS.values()])}
        self._uptimes = (now, uptimes)
        return uptimes

    def uptimes_of(self, checks: Sequence[tuple[str, str]],
                   now: float) -> dict[tuple[str, str], Uptime]:
        """These checks' uptime per window, read now, by (agent, check): for a page of
        the list (at most ``MAX_AMONG`` checks), where a pass over all is not needed."""
        if not self.enabled or not checks:
            return {}
        rows = self.store.window_uptimes(
            now, [window_start(seconds, now) for seconds in WINDOWS.values()], checks)
        return {(row[0], row[1]): _uptime_of(row) for row in rows}

    def uptime(self, agent: str, check: str, now: float) -> Uptime | None:
        """One check's uptime per window (None before its first status)."""
        return self.uptimes_of([(agent, check)], now).get((agent, check))

    def daily_uptime(self, agent: str, check: str, now: float,
                     days: int = 90) -> list[tuple[int, float | None, float | None]]:
        """``(midnight, uptime %, unknown %)`` of each of the last ``days`` UTC days,
        oldest first; today so far is the last; None where nothing is known."""
        state = self.store.uptime_state(agent, check) if self.enabled else None
        today = floor_to(now, DAY)
        first = today - (days - 1) * DAY
        marks = self.store.daily_marks(agent, check, first) if state is not None else {}
        bars: list[tuple[int, float | None, float | None]] = []
        for day in range(first, today + 1, DAY):
            start = marks.get(day)
            # Without a midnight mark the counters only stand for the day when the
            # check was first seen during it (they started at zero then).
            if state is None or (start is None and state.first_seen < day) or \
                    state.first_seen >= day + DAY:
                bars.append((day, None, None))
                continue
            end = state.at(now) if day == today else marks.get(day + DAY)
            if end is None:
                bars.append((day, None, None))
                continue
            uptime, unknown = percentages(end, start)
            bars.append((day, uptime, unknown))
        return bars


def _uptime_of(row: tuple[object, ...]) -> Uptime:
    """A ``window_uptimes`` row (agent, check, then uptime and unknown per window)."""
    values = [None if value is None else float(value) for value in row[2:]]  # type: ignore[arg-type]
    return Uptime(dict(zip(WINDOWS, values[0::2], strict=True)),
                  dict(zip(WINDOWS, values[1::2], strict=True)))
