"""What people see: the rows of ``/api/v1/agents`` and ``/api/v1/checks``, and the
status page at ``/`` (plain HTML, no JavaScript, refreshed by a meta tag).

While an agent is silent (past its interval plus grace) its checks are shown as
``unknown``, not as their last reported status: nobody is looking at them.

Every answer is bounded whatever the agents report: the page shows at most
:data:`PAGE_CHECKS` checks (those not ``up`` first) and ``/api/v1/checks`` is paged
(``?offset=&limit=``, at most :data:`MAX_API_CHECKS` rows per page); the open
incidents are listed up to the same bounds, oldest first.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from itertools import groupby
from typing import Any

from agent.central.channels.base import incident_json
from agent.central.config import CentralConfig
from agent.central.incidents import Incidents
from agent.central.storage import Storage
from agent.common.timefmt import rfc3339

UNGROUPED = "Ungrouped"
REFRESH_S = 30
PAGE_CHECKS = 500
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
            }
            for row in self.storage.checks(limit=limit, offset=offset,
                                           problems_first=problems_first)
        ]

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
        """The status page as HTML (at most PAGE_CHECKS checks, problems first)."""
        now = self.wall_clock() if now is None else now
        shown = self.checks(now, limit=PAGE_CHECKS, problems_first=True)
        total = self.storage.count("checks")
        checks = sorted(shown, key=lambda row: (row["group"] or "\uffff", row["agent"],
                                                row["name"]))
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="refresh" content="{REFRESH_S}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>heartwire status</title>",
            f"<style>{_STYLE}</style></head><body>",
            "<h1>heartwire status</h1>",
            f'<p class="generated">As of {_e(rfc3339(now))}; '
            f"this page refreshes every {REFRESH_S} s.</p>",
        ]
        incidents = self.open_incidents(PAGE_CHECKS)
        parts.append(f'<section id="incidents"><h2>Open incidents ({len(incidents)})</h2>')
        if incidents:
            parts.append("<ul>")
            for incident in incidents:
                parts.append(
                    f'<li class="incident {_e(incident["kind"])}">{_e(incident["summary"])} '
                    f'<span class="since">since {_e(incident["opened_at"])}</span></li>'
                )
            parts.append("</ul>")
        else:
            parts.append('<p class="none">None.</p>')
        parts.append("</section>")

        parts.append('<section id="agents"><h2>Agents</h2><table><thead><tr>'
                     "<th>Agent</th><th>State</th><th>Last heartbeat</th><th>Version</th>"
                     "</tr></thead><tbody>")
        for agent in self.agents(now):
            parts.append(
                f'<tr class="agent" data-agent="{_e(agent["id"])}"><td>{_e(agent["id"])}</td>'
                f'<td class="state {_e(agent["state"]).replace(" ", "-")}">'
                f'{_e(agent["state"])}</td>'
                f'<td>{_e(agent["last_heartbeat"] or "never")}</td>'
                f'<td>{_e(agent["version"] or "")}</td></tr>'
            )
        parts.append("</tbody></table></section>")

        for group, rows in groupby(checks, key=lambda row: row["group"] or UNGROUPED):
            parts.append(f'<section class="group"><h2>{_e(group)}</h2><table><thead><tr>'
                         "<th>Check</th><th>Agent</th><th>Target</th><th>Status</th>"
                         "<th>Latency</th><th>Reason</th></tr></thead><tbody>")
            for row in rows:
                target = f"{row['host']}:{row['port']}" if row["host"] else ""
                latency = "" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms"
                parts.append(
                    f'<tr class="check" data-check="{_e(row["agent"])}/{_e(row["name"])}">'
                    f'<td>{_e(row["name"])}</td><td>{_e(row["agent"])}</td><td>{_e(target)}</td>'
                    f'<td class="status {_e(row["status"])}">{_e(row["status"])}</td>'
                    f'<td>{_e(latency)}</td><td>{_e(row["reason"] or "")}</td></tr>'
                )
            parts.append("</tbody></table></section>")
        if not checks:
            parts.append('<p class="none">No checks have been reported yet.</p>')
        elif total > len(checks):
            parts.append(f'<p class="more">Showing {len(checks)} of {total} checks, those not '
                         'up first; every check: <a href="/api/v1/checks">/api/v1/checks</a>.</p>')
        parts.append("</body></html>")
        return "\n".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value))


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5rem}"
    "th,td{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}"
    ".status.up,.state.alive{color:#17803d}.status.down,.state.silent{color:#b91c1c;font-weight:bold}"
    ".status.degraded{color:#b45309}.status.unknown{color:#6b7280}"
    ".generated,.since{color:#6b7280;font-size:.9em}"
)
