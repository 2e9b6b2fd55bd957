"""What people see: the rows of ``/api/v1/agents`` and ``/api/v1/checks``, and the
status page at ``/`` (plain HTML, no JavaScript, refreshed by a meta tag).

While an agent is silent (past its interval plus grace) its checks are shown as
``unknown``, not as their last reported status: nobody is looking at them.

Every answer is bounded whatever the agents report: the page (page.py) shows at
most its ``PAGE_CHECKS`` checks (those not ``up`` first) and ``/api/v1/checks`` is
paged (``?offset=&limit=``, at most :data:`MAX_API_CHECKS` rows per page); the API
lists the open incidents up to the same bound, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.central.channels.base import incident_json
from agent.central.config import CentralConfig
from agent.central.dependencies import Dependencies
from agent.central.history import WINDOWS, History, Uptime
from agent.central.history_store import MAX_AMONG
from agent.central.incidents import Incidents
from agent.central.maintenance import Maintenance
from agent.central.page import StatusPage
from agent.central.services import (
    NO_SERVICES,
    Judgement,
    Services,
    held_because,
    service_order,
    state_json,
)
from agent.central.storage import CheckRow, Storage
from agent.common.timefmt import rfc3339

MAX_API_CHECKS = 1000


class Views:
    """Reads the store and shapes it for people and scripts.

    Args:
        config: the receiver config (registered agents, grace).
        storage: the store.
        incidents: decides which agents are silent.
        wall_clock: seconds since the epoch.
    """

    def __init__(self, config: CentralConfig, storage: Storage, incidents: Incidents,
                 wall_clock: Callable[[], float]) -> None:
        self.config = config
        self.storage = storage
        self.incidents = incidents
        self.wall_clock = wall_clock
        self.history: History | None = None
        self.page: StatusPage | None = None  # the page with history (page.py)
        self.maintenance: Maintenance | None = None
        self.dependencies: Dependencies | None = None  # held_by: the parent that is down
        self.services: Services | None = None  # services judged by a quorum of agents

    def agents(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every registered or reporting agent, by id (as of ``now``, default the clock)."""
        now = self.wall_clock() if now is None else now
        stored = {row.id: row for row in self.storage.agents()}
        gaps = self.storage.seq_gap_counts()
        open_by_agent: dict[str, int] = {}
        for incident in self.storage.open_incidents():
            open_by_agent[incident.agent] = open_by_agent.get(incident.agent, 0) + 1
        rows = []
        for agent_id in sorted(set(stored) | set(self.config.agents)):
            row = stored.get(agent_id)
            last = row.last_heartbeat_at if row else None
            interval = row.interval_s if row else None
            silent = self.incidents.is_silent(agent_id, last, interval, now)
            rows.append({
                "id": agent_id,
                "registered": agent_id in self.config.agents,
                "state": "never reported" if last is None else ("silent" if silent else "alive"),
                "last_heartbeat": None if last is None else rfc3339(last),
                "interval_s": interval,
                "grace_s": self.config.grace_for(agent_id),
                "version": row.version if row else None,
                "started_at": row.started_at if row else None,
                "last_seq": row.last_seq if row else 0,
                "seq_gaps": gaps.get(agent_id, 0),
                "open_incidents": open_by_agent.get(agent_id, 0),
            })
        return rows

    def checks(self, now: float | None = None, *, offset: int = 0, limit: int = -1,
               problems_first: bool = False) -> list[dict[str, Any]]:
        """Checks of every agent, with the status to show.

        Args:
            now: the time to judge silence by (default: the clock).
            offset: rows to skip, by agent and name.
            limit: at most this many rows (-1: all).
            problems_first: checks whose agent reports them not ``up`` first.
        """
        now = self.wall_clock() if now is None else now
        silent = {
            row.id
            for row in self.storage.agents()
            if self.incidents.is_silent(row.id, row.last_heartbeat_at, row.interval_s, now)
        }
        rows = self.storage.checks(limit=limit, offset=offset, problems_first=problems_first)
        uptimes: dict[tuple[str, str], Uptime] = {}
        if self.history is not None:
            # A page reads its own checks' uptime now; the whole list (/metrics)
            # reuses one pass over every check for up to a minute.
            if 0 <= limit <= MAX_AMONG:
                uptimes = self.history.uptimes_of([(row.agent, row.name) for row in rows], now)
            else:
                uptimes = self.history.uptimes(now)
        windows = self.maintenance.windows(now) if self.maintenance is not None else []
        judgement = self._judgement(rows, now)
        return [
            {
                "agent": row.agent,
                "name": row.name,
                "group": row.group,
                "host": row.host,
                "port": row.port,
                "status": "unknown" if row.agent in silent else row.status,
                "reported_status": row.status,
                "reason": row.reason,
                "latency_ms": row.latency_ms,
                "at": row.at,
                **uptime_fields(uptimes.get((row.agent, row.name))),
                "maintenance": any(window.covers(row.agent, row.name) for window in windows),
                "held_by": None if row.agent in silent else self._held_by(row),
                "service": _first(judgement.services_of.get((row.agent, row.name))),
                "held_because": None if row.agent in silent else held_because(
                    row, self._held_by(row), judgement),
            }
            for row in rows
        ]

    def _judgement(self, rows: list[CheckRow], now: float) -> Judgement:
        """The services' states, when any row is a member (else an empty judgement)."""
        if self.services is None:
            return NO_SERVICES
        judgement = self.services.judge(now)
        if not any((row.agent, row.name) in judgement.services_of for row in rows):
            return NO_SERVICES
        return judgement

    def services_list(self, now: float | None = None) -> dict[str, Any]:
        """``/api/v1/services``: every service (at most MAX_SERVICES), worst first."""
        now = self.wall_clock() if now is None else now
        if self.services is None:
            return {"services": []}
        states = sorted(self.services.judge(now).services.values(), key=service_order)
        return {"services": [state_json(state) for state in states]}

    def _held_by(self, row: CheckRow) -> str | None:
        """The parent that is down and holds this check's alerts (down rows only)."""
        if self.dependencies is None or row.status not in ("down", "degraded"):
            return None
        return self.dependencies.held_by(row.agent, row.name)

    def checks_page(self, offset: int, limit: int, now: float | None = None) -> dict[str, Any]:
        """One page of ``/api/v1/checks``: the rows and, when there are more, the next page."""
        limit = max(1, min(limit, MAX_API_CHECKS))
        rows = self.checks(now, offset=offset, limit=limit + 1)
        page: dict[str, Any] = {"checks": rows[:limit], "total": self.storage.count("checks")}
        if len(rows) > limit:
            page["next"] = f"/api/v1/checks?offset={offset + limit}&limit={limit}"
        return page

    def open_incidents(self, limit: int = MAX_API_CHECKS) -> list[dict[str, object]]:
        """The open incidents, oldest first (at most ``limit``)."""
        return [incident_json(incident) for incident in self.storage.open_incidents(limit)]

    def status_page(self, now: float | None = None) -> str:
        """The status page as HTML (rendered by page.py, bounded there)."""
        if self.page is None:
            raise RuntimeError("the status page needs its StatusPage (set Views.page)")
        return self.page.render(now)


def _first(names: tuple[str, ...] | None) -> str | None:
    return names[0] if names else None


def uptime_fields(uptime: Uptime | None) -> dict[str, object]:
    """A check's ``uptime`` and ``unknown`` percentages per window, for the API."""
    if uptime is None:
        empty = dict.fromkeys(WINDOWS)
        return {"uptime": empty, "unknown": dict(empty)}
    return {"uptime": uptime.uptime, "unknown": uptime.unknown}
