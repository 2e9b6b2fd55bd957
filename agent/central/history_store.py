"""The history tables: raw observations, hourly rollups, uptime counters and marks.

Kept beside :class:`~agent.central.storage.Storage` (same database, same
connection, same transactions) and, like it, the only place these tables are
written. The SQL is plain enough for PostgreSQL too (``ON CONFLICT``, ``CASE``,
no SQLite-only functions).

Tables:

* ``observations``: one row per observation an agent reported (a heartbeat's
  latest observation of each check when it is new, every ``state_change``, every
  ``results`` entry), unique by (agent, check, time), so an observation reported
  twice (a heartbeat repeating it, a re-delivered batch) counts once. Kept for
  ``[history] raw_retention``.
* ``rollups_hourly``: per check and hour: observations, failures (``down``),
  latency count/sum/min/max and the 42 counters of latency_histogram.py; updated
  by each new observation. Kept for ``[history] rollup_retention``.
* ``uptime_state``: per check, the seconds it spent up (``up`` or ``degraded``),
  down and unknown (``unknown``, or its agent silent) since it was first seen,
  counted up to ``counted_to``; the time since then belongs to its current state.
* ``uptime_marks``: those counters as they were at each hour boundary (kept 26
  hours) and each UTC midnight (``daily``, kept 91 days): the uptime of a window is
  the counters now minus the mark at its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from agent.central.latency_histogram import BUCKETS
from agent.central.storage import Storage

_BUCKET_COLUMNS: Final = ", ".join(f"b{index}" for index in range(BUCKETS))

# The counters at the start of each uptime window (24h, 7d, 30d, 90d), copied from
# the marks when a window moves on (hourly for 24h, daily for the others), so a
# read of every check's uptime is one pass over uptime_state, without joins.
WINDOW_SLOTS: Final = 4
# Checks one window_uptimes call may name: two SQL variables each, well below
# SQLite's 32,766 (an API page names at most 1,001).
MAX_AMONG: Final = 5000
_WINDOW_COLUMNS: Final = ",\n    ".join(
    f"w{slot}_at INTEGER, w{slot}_up REAL NOT NULL DEFAULT 0, "
    f"w{slot}_down REAL NOT NULL DEFAULT 0, w{slot}_unknown REAL NOT NULL DEFAULT 0"
    for slot in range(WINDOW_SLOTS)
)

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS observations (
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL,
    at REAL NOT NULL,
    status TEXT NOT NULL,
    latency_ms REAL,
    reason TEXT,
    PRIMARY KEY (agent, check_name, at)
);
CREATE INDEX IF NOT EXISTS observations_at ON observations (at);
CREATE TABLE IF NOT EXISTS rollups_hourly (
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL,
    hour INTEGER NOT NULL,
    total INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    latency_sum REAL NOT NULL,
    latency_min REAL,
    latency_max REAL,
    {", ".join(f"b{index} INTEGER NOT NULL DEFAULT 0" for index in range(BUCKETS))},
    PRIMARY KEY (agent, check_name, hour)
);
CREATE INDEX IF NOT EXISTS rollups_hourly_hour ON rollups_hourly (hour);
CREATE TABLE IF NOT EXISTS uptime_state (
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status TEXT NOT NULL,
    silent INTEGER NOT NULL DEFAULT 0,
    maintenance INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    counted_to REAL NOT NULL,
    up_s REAL NOT NULL DEFAULT 0,
    down_s REAL NOT NULL DEFAULT 0,
    unknown_s REAL NOT NULL DEFAULT 0,
    {_WINDOW_COLUMNS},
    PRIMARY KEY (agent, check_name)
);
CREATE TABLE IF NOT EXISTS uptime_marks (
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL,
    at INTEGER NOT NULL,
    daily INTEGER NOT NULL,
    up_s REAL NOT NULL,
    down_s REAL NOT NULL,
    unknown_s REAL NOT NULL,
    PRIMARY KEY (agent, check_name, at)
);
CREATE INDEX IF NOT EXISTS uptime_marks_at ON uptime_marks (at);
"""

# The time since counted_to, credited to the state a row is in at :t.
_SINCE: Final = "(:t - counted_to)"
# Silence and maintenance count as not known: neither up nor down.
_KNOWN: Final = "silent = 0 AND maintenance = 0"
_UP: Final = f"CASE WHEN {_KNOWN} AND status IN ('up', 'degraded') THEN {_SINCE} ELSE 0 END"
_DOWN: Final = f"CASE WHEN {_KNOWN} AND status = 'down' THEN {_SINCE} ELSE 0 END"
_UNKNOWN: Final = f"CASE WHEN NOT ({_KNOWN}) OR status = 'unknown' THEN {_SINCE} ELSE 0 END"

_ROLLUP_UPDATE: Final = (
    "INSERT INTO rollups_hourly (agent, check_name, hour, total, failures, latency_count,"
    " latency_sum, latency_min, latency_max{bucket}) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?{value})"
    " ON CONFLICT (agent, check_name, hour) DO UPDATE SET"
    " total = rollups_hourly.total + 1,"
    " failures = rollups_hourly.failures + excluded.failures,"
    " latency_count = rollups_hourly.latency_count + excluded.latency_count,"
    " latency_sum = rollups_hourly.latency_sum + excluded.latency_sum,"
    " latency_min = CASE WHEN rollups_hourly.latency_min IS NULL"
    " OR excluded.latency_min < rollups_hourly.latency_min"
    " THEN excluded.latency_min ELSE rollups_hourly.latency_min END,"
    " latency_max = CASE WHEN rollups_hourly.latency_max IS NULL"
    " OR excluded.latency_max > rollups_hourly.latency_max"
    " THEN excluded.latency_max ELSE rollups_hourly.latency_max END{increment}"
)
# One statement per bucket (and one for observations without a latency): the
# column name comes from this fixed table, never from input.
_ROLLUP_WITHOUT_LATENCY: Final = _ROLLUP_UPDATE.format(bucket="", value="", increment="")
_ROLLUP_INTO_BUCKET: Final = tuple(
    _ROLLUP_UPDATE.format(bucket=f", b{index}", value=", 1",
                          increment=f", b{index} = rollups_hourly.b{index} + 1")
    for index in range(BUCKETS)
)


@dataclass(frozen=True, slots=True)
class Observation:
    """One stored observation."""

    at: float
    status: str
    latency_ms: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Rollup:
    """One hour (or several merged) of one check."""

    hour: int
    total: int
    failures: int
    latency_count: int
    latency_sum: float
    latency_min: float | None
    latency_max: float | None
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UptimeCounters:
    """Seconds spent up, down and unknown (since first seen, or at a mark)."""

    up_s: float
    down_s: float
    unknown_s: float


@dataclass(frozen=True, slots=True)
class UptimeState:
    """One check's uptime counters and the state the time since ``counted_to`` belongs to."""

    agent: str
    check: str
    status: str
    silent: bool
    maintenance: bool
    first_seen: float
    counted_to: float
    counters: UptimeCounters

    def at(self, moment: float) -> UptimeCounters:
        """The counters extended to ``moment`` (no earlier than ``counted_to``)."""
        extra = max(0.0, moment - self.counted_to)
        counters = self.counters
        if self.silent or self.maintenance or self.status == "unknown":
            return UptimeCounters(counters.up_s, counters.down_s, counters.unknown_s + extra)
        if self.status == "down":
            return UptimeCounters(counters.up_s, counters.down_s + extra, counters.unknown_s)
        return UptimeCounters(counters.up_s + extra, counters.down_s, counters.unknown_s)


_STATE_COLUMNS: Final = (
    "agent, check_name, status, silent, maintenance, first_seen, counted_to, up_s, down_s,"
    " unknown_s"
)


def _state(row: Sequence[Any]) -> UptimeState:
    return UptimeState(
        str(row[0]), str(row[1]), str(row[2]), bool(row[3]), bool(row[4]), float(row[5]),
        float(row[6]), UptimeCounters(float(row[7]), float(row[8]), float(row[9])),
    )


class HistoryStore:
    """The history tables of one receiver's database.

    Args:
        storage: the open store whose connection and transactions are shared.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._db = storage.connection
        self._db.executescript(_SCHEMA)

    # -- observations and rollups ----------------------------------------------

    def add_observation(
        self, agent: str, check: str, at: float, status: str, latency_ms: float | None,
        reason: str | None,
    ) -> bool:
        """Stores one observation; False when the same one (agent, check, time) was stored."""
        cursor = self._db.execute(
            "INSERT INTO observations (agent, check_name, at, status, latency_ms, reason)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent, check_name, at) DO NOTHING",
            (agent, check, at, status, latency_ms, reason),
        )
        return cursor.rowcount > 0

    def add_to_rollup(
        self, agent: str, check: str, hour: int, failed: bool, latency_ms: float | None,
        bucket: int | None,
    ) -> None:
        """Counts one observation into its hour's rollup row (created when missing)."""
        if latency_ms is None or bucket is None:
            self._db.execute(_ROLLUP_WITHOUT_LATENCY,
                             (agent, check, hour, int(failed), 0, 0.0, None, None))
            return
        self._db.execute(_ROLLUP_INTO_BUCKET[bucket],
                         (agent, check, hour, int(failed), 1, latency_ms, latency_ms,
                          latency_ms))

    def observations(
        self, agent: str, check: str, since: float, until: float, limit: int
    ) -> list[Observation]:
        """Observations of one check in ``[since, until]``, oldest first, at most ``limit``."""
        rows = self._db.execute(
            "SELECT at, status, latency_ms, reason FROM observations WHERE agent = ?"
            " AND check_name = ? AND at >= ? AND at <= ? ORDER BY at LIMIT ?",
            (agent, check, since, until, limit),
        )
        return [Observation(*row) for row in rows]

    def latencies(
        self, agent: str, check: str, since: float, until: float, limit: int
    ) -> list[tuple[float, float | None, bool]]:
        """``(at, latency_ms, down)`` of one check's observations in ``[since, until]``,
        oldest first, at most ``limit``: what a chart needs, without the reasons."""
        rows = self._db.execute(
            "SELECT at, latency_ms, status = 'down' FROM observations WHERE agent = ?"
            " AND check_name = ? AND at >= ? AND at <= ? ORDER BY at LIMIT ?",
            (agent, check, since, until, limit),
        )
        return [(float(at), latency, bool(down)) for at, latency, down in rows]

    def rollups(self, agent: str, check: str, since_hour: int, until_hour: int) -> list[Rollup]:
        """The hourly rows of one check with ``since_hour <= hour < until_hour``, oldest first."""
        rows = self._db.execute(
            "SELECT hour, total, failures, latency_count, latency_sum, latency_min,"
            f" latency_max, {_BUCKET_COLUMNS} FROM rollups_hourly WHERE agent = ?"
            " AND check_name = ? AND hour >= ? AND hour < ? ORDER BY hour",
            (agent, check, since_hour, until_hour),
        )
        return [Rollup(row[0], row[1], row[2], row[3], row[4], row[5], row[6], tuple(row[7:]))
                for row in rows]

    def state_changes(
        self, agent: str, check: str, since: float, until: float, limit: int
    ) -> list[tuple[float, str, str]]:
        """``(received_at, previous, current)`` of one check in ``[since, until]``."""
        rows = self._db.execute(
            "SELECT received_at, previous, current FROM state_history WHERE agent = ?"
            " AND check_name = ? AND received_at >= ? AND received_at <= ? ORDER BY id LIMIT ?",
            (agent, check, since, until, limit),
        )
        return [(float(row[0]), str(row[1]), str(row[2])) for row in rows]

    def prune(self, raw_before: float, rollups_before_hour: int, hourly_marks_before: int,
              daily_marks_before: int, batch: int) -> int:
        """Deletes what is past its retention, at most ``batch`` raw rows; returns rows deleted."""
        deleted = self._db.execute(
            "DELETE FROM observations WHERE (agent, check_name, at) IN (SELECT agent,"
            " check_name, at FROM observations WHERE at < ? ORDER BY at LIMIT ?)",
            (raw_before, batch),
        ).rowcount
        deleted += self._db.execute(
            "DELETE FROM rollups_hourly WHERE hour < ?", (rollups_before_hour,)
        ).rowcount
        deleted += self._db.execute(
            "DELETE FROM uptime_marks WHERE (daily = 0 AND at < ?) OR at < ?",
            (hourly_marks_before, daily_marks_before),
        ).rowcount
        return deleted

    # -- uptime ----------------------------------------------------------------

    def uptime_state(self, agent: str, check: str) -> UptimeState | None:
        """One check's uptime counters, or None before its first status."""
        row = self._db.execute(
            f"SELECT {_STATE_COLUMNS} FROM uptime_state WHERE agent = ? AND check_name = ?",
            (agent, check),
        ).fetchone()
        return _state(row) if row else None

    def uptime_states(self) -> list[UptimeState]:
        """Every check's uptime counters."""
        return [_state(row) for row in
                self._db.execute(f"SELECT {_STATE_COLUMNS} FROM uptime_state")]

    def start_uptime(self, agent: str, check: str, status: str, silent: bool, t: float) -> None:
        """The first status of a check: its counters start at ``t``."""
        self._db.execute(
            "INSERT INTO uptime_state (agent, check_name, status, silent, first_seen,"
            " counted_to) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent, check_name) DO NOTHING",
            (agent, check, status, int(silent), t, t),
        )

    def seed_uptime(self, t: float) -> int:
        """Starts counters at ``t`` for every check known from before history was kept."""
        return self._db.execute(
            "INSERT INTO uptime_state (agent, check_name, status, silent, first_seen,"
            " counted_to) SELECT agent, name, status, 0, ?, ? FROM checks WHERE true"
            " ON CONFLICT (agent, check_name) DO NOTHING",
            (t, t),
        ).rowcount

    def change_status(self, agent: str, check: str, status: str, t: float) -> None:
        """Credits the time up to ``t`` to the old state, then counts ``status`` from ``t``."""
        self._db.execute(
            f"UPDATE uptime_state SET up_s = up_s + {_UP}, down_s = down_s + {_DOWN},"
            f" unknown_s = unknown_s + {_UNKNOWN}, counted_to = :t, status = :status"
            " WHERE agent = :agent AND check_name = :check AND counted_to <= :t",
            {"t": t, "status": status, "agent": agent, "check": check},
        )
        # A change older than what was counted (clock skew, a late message) changes
        # the state from now on without rewriting time already credited.
        self._db.execute(
            "UPDATE uptime_state SET status = ? WHERE agent = ? AND check_name = ?"
            " AND counted_to > ?",
            (status, agent, check, t),
        )

    def _set_flag(self, column: str, value: bool, where: str, params: dict[str, object],
                  t: float) -> None:
        # Credits the time up to t to the state before the flag changes, then sets it.
        params = {**params, "t": t, "value": int(value)}
        self._db.execute(
            f"UPDATE uptime_state SET up_s = up_s + {_UP}, down_s = down_s + {_DOWN},"
            f" unknown_s = unknown_s + {_UNKNOWN}, counted_to = :t, {column} = :value"
            f" WHERE {where} AND counted_to <= :t", params)
        self._db.execute(
            f"UPDATE uptime_state SET {column} = :value WHERE {where} AND counted_to > :t",
            params)

    def set_agent_silent(self, agent: str, silent: bool, t: float) -> None:
        """An agent fell silent (or spoke again) at ``t``: all its checks change state then."""
        self._set_flag("silent", silent, "agent = :agent", {"agent": agent}, t)

    def end_maintenance(self, t: float) -> None:
        """No check is in maintenance from ``t`` on (windows are then set again)."""
        self._set_flag("maintenance", False, "maintenance = 1", {}, t)

    def start_maintenance(self, agent: str, checks: Sequence[str], t: float) -> None:
        """These checks of ``agent`` (all when empty) are in maintenance from ``t`` on."""
        params: dict[str, object] = {"agent": agent}
        where = "agent = :agent"
        if checks:
            names = []
            for index, check in enumerate(checks):
                params[f"c{index}"] = check
                names.append(f":c{index}")
            where += f" AND check_name IN ({', '.join(names)})"
        self._set_flag("maintenance", True, where, params, t)

    def silent_agents(self) -> set[str]:
        """The agents whose checks are counted as unknown because they are silent."""
        rows = self._db.execute("SELECT DISTINCT agent FROM uptime_state WHERE silent = 1")
        return {str(row[0]) for row in rows}

    def mark(self, at: int, daily: bool, agent: str | None = None,
             check: str | None = None) -> int:
        """Writes the counters as of boundary ``at`` (all checks, or one) unless written."""
        where = ""
        params: dict[str, object] = {"t": at, "daily": int(daily)}
        if agent is not None and check is not None:
            where = " AND agent = :agent AND check_name = :check"
            params.update(agent=agent, check=check)
        return self._db.execute(
            "INSERT INTO uptime_marks (agent, check_name, at, daily, up_s, down_s, unknown_s)"
            f" SELECT agent, check_name, :t, :daily, up_s + {_UP}, down_s + {_DOWN},"
            f" unknown_s + {_UNKNOWN} FROM uptime_state WHERE counted_to <= :t{where}"
            " ON CONFLICT (agent, check_name, at) DO NOTHING",
            params,
        ).rowcount

    def latest_mark(self) -> int | None:
        """The newest boundary marked, or None."""
        (latest,) = self._db.execute("SELECT max(at) FROM uptime_marks").fetchone()
        return None if latest is None else int(latest)

    def set_window_start(self, slot: int, at: int) -> None:
        """Window ``slot`` now starts at boundary ``at``: copies every check's mark there
        (zero for a check first seen later)."""
        if not 0 <= slot < WINDOW_SLOTS:
            raise ValueError(f"no window slot {slot}")
        self._db.execute(
            f"UPDATE uptime_state SET w{slot}_at = ?, w{slot}_up = 0, w{slot}_down = 0,"
            f" w{slot}_unknown = 0", (at,))
        self._db.execute(
            f"UPDATE uptime_state SET w{slot}_up = m.up_s, w{slot}_down = m.down_s,"
            f" w{slot}_unknown = m.unknown_s FROM uptime_marks m WHERE"
            " m.agent = uptime_state.agent AND m.check_name = uptime_state.check_name"
            " AND m.at = ?", (at,))

    def window_uptimes(
        self, now: float, starts: Sequence[int],
        among: Sequence[tuple[str, str]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Uptime and unknown share (percent, 3 decimals) of every check (or of those
        ``among``, (agent, check) pairs, at most MAX_AMONG) over the windows starting at
        ``starts`` (one per slot) and ending ``now``.

        Returns:
            Rows ``(agent, check, uptime_1, unknown_1, uptime_2, unknown_2, ...)``, one
            pair per start; None where nothing is known. A slot not (yet) at its start
            counts from zero, that is from when the check was first seen.
        """
        params: dict[str, object] = {"t": now}
        pairs = []
        for slot, start in enumerate(starts):
            params[f"b{slot}"] = start
            base = {kind: f"CASE WHEN w{slot}_at = :b{slot} THEN w{slot}_{kind} ELSE 0 END"
                    for kind in ("up", "down", "unknown")}
            up = f"(up_now - {base['up']})"
            down = f"(down_now - {base['down']})"
            unknown = f"(unknown_now - {base['unknown']})"
            pairs.append(
                f"CASE WHEN {up} + {down} > 0 THEN"
                f" ROUND(CAST(100.0 * {up} / ({up} + {down}) AS NUMERIC), 3) END,"
                f" CASE WHEN {up} + {down} + {unknown} > 0 THEN"
                f" ROUND(CAST(100.0 * {unknown} / ({up} + {down} + {unknown}) AS NUMERIC), 3)"
                " END")
        where = ""
        if among is not None:
            if len(among) > MAX_AMONG:
                raise ValueError(f"at most {MAX_AMONG} checks at once")
            # A row-value IN list: each pair is a primary-key lookup.
            where = " WHERE (agent, check_name) IN (VALUES {})".format(
                ", ".join(f"(:a{index}, :c{index})" for index in range(len(among))))
            for index, (agent, check) in enumerate(among):
                params[f"a{index}"], params[f"c{index}"] = agent, check
        # Time since counted_to belongs to the current state; a counted_to in the
        # future (a skewed clock) adds nothing.
        since = "CASE WHEN :t > counted_to THEN :t - counted_to ELSE 0 END"
        window_columns = ", ".join(f"w{slot}_at, w{slot}_up, w{slot}_down, w{slot}_unknown"
                                   for slot in range(WINDOW_SLOTS))
        current = (
            f"SELECT agent, check_name, {window_columns},"
            f" up_s + CASE WHEN {_KNOWN} AND status IN ('up', 'degraded') THEN {since}"
            " ELSE 0 END AS up_now,"
            f" down_s + CASE WHEN {_KNOWN} AND status = 'down' THEN {since} ELSE 0 END"
            " AS down_now,"
            f" unknown_s + CASE WHEN NOT ({_KNOWN}) OR status = 'unknown' THEN {since}"
            f" ELSE 0 END AS unknown_now FROM uptime_state{where}"
        )
        query = f"SELECT agent, check_name, {', '.join(pairs)} FROM ({current}) cur"
        return [tuple(row) for row in self._db.execute(query, params)]

    def daily_marks(self, agent: str, check: str, since: int) -> dict[int, UptimeCounters]:
        """One check's midnight marks from ``since`` on, by boundary."""
        rows = self._db.execute(
            "SELECT at, up_s, down_s, unknown_s FROM uptime_marks WHERE agent = ?"
            " AND check_name = ? AND daily = 1 AND at >= ?",
            (agent, check, since),
        )
        return {int(row[0]): UptimeCounters(row[1], row[2], row[3]) for row in rows}
