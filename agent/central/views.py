"""What people see: the rows of ``/api/v1/agents`` and ``/api/v1/checks``, and the
status page at ``/`` (plain HTML, no JavaScript, refreshed by a meta tag).

While an agent is silent (past its interval plus grace) its checks are shown as
``unknown``, not as their last reported status: nobody is looking at them.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from itertools import groupby
from typing import Any

from agent.central.channels.base import incident_json, rfc3339
from agent.central.config import CentralConfig
from agent.central.history import WINDOWS, History, Uptime
from agent.central.incidents import Incidents
from agent.central.maintenance import Maintenance
from agent.central.page import StatusPage
from agent.central.storage import Storage

UNGROUPED = "Ungrouped"
REFRESH_S = 30


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

    def agents(self) -> list[dict[str, Any]]:
        """Every registered or reporting agent, by id."""
        now = self.wall_clock()
        stored = {row.id: row for row in self.storage.agents()}
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
                "seq_gaps": len(self.storage.seq_gaps(agent_id)),
                "open_incidents": open_by_agent.get(agent_id, 0),
            })
        return rows

    def checks(self) -> list[dict[str, Any]]:
        """Every check of every agent, with the status to show."""
        now = self.wall_clock()
        silent = {
            row.id
            for row in self.storage.agents()
            if self.incidents.is_silent(row.id, row.last_heartbeat_at, row.interval_s, now)
        }
        uptimes = self.history.uptimes(now) if self.history is not None else {}
        windows = self.maintenance.windows(now) if self.maintenance is not None else []
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
            }
            for row in self.storage.checks()
        ]

    def open_incidents(self) -> list[dict[str, object]]:
        """The open incidents, oldest first."""
        return [incident_json(incident) for incident in self.storage.open_incidents()]

    def status_page(self) -> str:
        """The whole status page as HTML."""
        if self.page is not None:
            return self.page.render()
        checks = sorted(self.checks(), key=lambda row: (row["group"] or "\uffff", row["agent"],
                                                        row["name"]))
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="refresh" content="{REFRESH_S}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>heartwire status</title>",
            f"<style>{_STYLE}</style></head><body>",
            "<h1>heartwire status</h1>",
            f'<p class="generated">As of {_e(rfc3339(self.wall_clock()))}; '
            f"this page refreshes every {REFRESH_S} s.</p>",
        ]
        incidents = self.open_incidents()
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
        for agent in self.agents():
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
        parts.append("</body></html>")
        return "\n".join(parts)


def uptime_fields(uptime: Uptime | None) -> dict[str, object]:
    """A check's ``uptime`` and ``unknown`` percentages per window, for the API."""
    if uptime is None:
        empty = dict.fromkeys(WINDOWS)
        return {"uptime": empty, "unknown": dict(empty)}
    return {"uptime": uptime.uptime, "unknown": uptime.unknown}


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
