"""Maintenance windows: planned work during which alerts wait instead of paging.

Two sources, the same effect:

* windows added by hand, ``heartwire central maintenance add AGENT [--check NAME ...]
  --for 20m [--reason TEXT]`` (kept in the database; ``list``, ``end ID``), at most
  ``MAX_WINDOW_S`` long, so a window always expires on its own;
* windows an agent starts for itself, ``heartwire maintenance start --for 20m
  [--check NAME ...] [--reason TEXT]`` on its host: a signed ``maintenance``
  message (docs/protocol.md) that starts the window when the agent ran the
  command, and ``heartwire maintenance end``, which ends the windows it started;
* weekly windows in ``central.toml``::

      [maintenance.db-patching]
      agent = "dc1"
      checks = ["postgres-primary"]   # omit: the whole agent, silence included
      weekly = "sun 02:00"            # day and local time it starts
      duration = "2h"
      timezone = "Europe/Berlin"      # default UTC; daylight saving time is followed
      reason = "monthly patching"

While a window covers a check, its measurements are kept as always, but a
``check_down`` incident it opens is held (recorded, shown, not sent); a window
over the whole agent holds its ``agent_silent`` incident too. When the window
ends, every held incident that is still open is sent then (the outage is real);
one that resolved meanwhile is never sent. The status page shows the check as
``maintenance``, and the time counts as not known, so it is excluded from uptime.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agent.central.storage import Storage
from agent.common.tables import Table

MAX_WINDOW_S: Final = 7 * 86400.0
RECEIVER: Final = "receiver"  # added with heartwire central maintenance add
AGENT: Final = "agent"  # started by a signed maintenance message from the agent
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKLY: Final = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)\s+([01]?[0-9]|2[0-3]):([0-5][0-9])$")
# Windows in the database are read again at most this often (the CLI adds them
# from another process).
REREAD_S: Final = 1.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS maintenance_windows (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    checks TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    source TEXT NOT NULL DEFAULT 'receiver'
);
CREATE INDEX IF NOT EXISTS maintenance_windows_ends ON maintenance_windows (ends_at);
"""


@dataclass(frozen=True, slots=True)
class Window:
    """One window, active or planned.

    Attributes:
        id: ``"<number>"`` for a window added by hand, ``"config:<name>"`` for a weekly one.
        agent: the agent it covers.
        checks: the checks it covers; empty: the whole agent, silence included.
        starts_at: when it starts (seconds since the epoch).
        ends_at: when it ends.
        reason: why, for people.
    """

    id: str
    agent: str
    checks: tuple[str, ...]
    starts_at: float
    ends_at: float
    reason: str

    def covers(self, agent: str, check: str) -> bool:
        """Whether it covers this check ("" for the agent's silence)."""
        return agent == self.agent and (not self.checks or check in self.checks)


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A ``[maintenance.<name>]`` table."""

    name: str
    agent: str
    checks: tuple[str, ...]
    weekday: int  # Monday = 0
    start: datetime.time
    duration_s: float
    zone: zoneinfo.ZoneInfo
    reason: str

    def occurrence(self, now: float) -> Window | None:
        """The occurrence active at ``now``, if any."""
        local = datetime.datetime.fromtimestamp(now, tz=self.zone)
        # The latest start at or before now is this week's or last week's.
        for weeks_back in (0, 1, 2):
            day = local.date() - datetime.timedelta(
                days=(local.weekday() - self.weekday) % 7 + 7 * weeks_back)
            starts = datetime.datetime.combine(day, self.start, tzinfo=self.zone).timestamp()
            if starts <= now:
                if now < starts + self.duration_s:
                    return Window(f"config:{self.name}", self.agent, self.checks, starts,
                                  starts + self.duration_s, self.reason)
                return None
        return None  # pragma: no cover  (two weeks back always starts before now)


def read_weekly(table: Table) -> tuple[WeeklyWindow, ...]:
    """Reads the ``[maintenance]`` table of ``central.toml`` (the agents are checked
    against the registered ones by the caller, once the drop-ins are read).

    Raises:
        ConfigError: naming the window and key.
    """
    windows = []
    for name in table:
        sub = table.table(name)
        agent = sub.nonempty_string("agent")
        checks = sub.string_list("checks")
        weekly = sub.nonempty_string("weekly")
        match = _WEEKLY.match(weekly.strip().lower())
        if not match:
            raise sub.error("weekly", f'expected a day and a time such as "sun 02:00", '
                            f"got {weekly!r}")
        duration = sub.duration("duration")
        if duration > MAX_WINDOW_S - 86400:
            raise sub.error("duration", "must be shorter than 6 days (windows do not overlap)")
        zone_name = sub.nonempty_string("timezone", "UTC")
        try:
            zone = zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise sub.error("timezone", f"unknown time zone {zone_name!r} "
                            '(an IANA name such as "Europe/Berlin")') from None
        windows.append(WeeklyWindow(
            name, agent, checks, WEEKDAYS.index(match.group(1)),
            datetime.time(int(match.group(2)), int(match.group(3))), duration, zone,
            sub.string("reason", "scheduled maintenance"),
        ))
        sub.finish()
    table.finish()
    return tuple(windows)


class MaintenanceStore:
    """The windows added by hand, in the receiver's database."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._db = storage.connection
        self._db.executescript(_SCHEMA)

    def add(self, agent: str, checks: Sequence[str], starts_at: float, ends_at: float,
            reason: str, now: float, *, source: str = RECEIVER) -> int:
        """Stores a window (``source``: who started it, RECEIVER or AGENT); returns its
        number."""
        cursor = self._db.execute(
            "INSERT INTO maintenance_windows (agent, checks, starts_at, ends_at, reason,"
            " created_at, source) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (agent, ",".join(checks), starts_at, ends_at, reason, now, source),
        )
        (number,) = cursor.fetchone()
        return int(number)

    def end_from_agent(self, agent: str, now: float) -> int:
        """Ends now every running window the agent itself started; returns how many
        (windows added on the receiver are the receiver's to end)."""
        cursor = self._db.execute(
            "UPDATE maintenance_windows SET ends_at = ? WHERE agent = ? AND source = ?"
            " AND ends_at > ?", (now, agent, AGENT, now))
        return cursor.rowcount

    def end(self, window_id: int, now: float) -> bool:
        """Ends a window now; False when there is no such window still running."""
        cursor = self._db.execute(
            "UPDATE maintenance_windows SET ends_at = ? WHERE id = ? AND ends_at > ?",
            (now, window_id, now),
        )
        return cursor.rowcount > 0

    def current(self, now: float) -> list[Window]:
        """Windows not over yet (running or planned), by start."""
        rows = self._db.execute(
            "SELECT id, agent, checks, starts_at, ends_at, reason FROM maintenance_windows"
            " WHERE ends_at > ? ORDER BY starts_at, id",
            (now,),
        )
        return [Window(str(row[0]), row[1], tuple(name for name in row[2].split(",") if name),
                       row[3], row[4], row[5]) for row in rows]


class Maintenance:
    """Which windows are active: the weekly ones of the config and the stored ones.

    Args:
        weekly: the config's windows (replaced on reload).
        store: the stored windows.
    """

    def __init__(self, weekly: Sequence[WeeklyWindow], store: MaintenanceStore) -> None:
        self.weekly = tuple(weekly)
        self.store = store
        self._read_at = float("-inf")
        self._stored: list[Window] = []

    def windows(self, now: float) -> list[Window]:
        """Every window active at ``now``."""
        if not (0 <= now - self._read_at < REREAD_S):
            self._stored = self.store.current(now)
            self._read_at = now
        active = [window for window in self._stored if window.starts_at <= now < window.ends_at]
        for weekly in self.weekly:
            occurrence = weekly.occurrence(now)
            if occurrence is not None:
                active.append(occurrence)
        return active

    def holds(self, agent: str, check: str, now: float) -> bool:
        """Whether an alert about this check ("" for the agent's silence) waits now."""
        return any(window.covers(agent, check) for window in self.windows(now))

    def changed(self) -> None:
        """A window was added or ended in this process: read them again at once."""
        self._read_at = float("-inf")
