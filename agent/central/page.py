"""The status page at ``/`` and one page per check at ``/checks/<agent>/<check>``.

Plain HTML and inline SVG in one response, no JavaScript, refreshed by a meta tag.
What a person needs first comes first: one line with the overall state ("All
systems operational", "3 of 14 checks down, 1 agent silent"), then the open
incidents with how long they have lasted, then the checks by ``group``, each with
a status badge, a response-time chart and 90 daily uptime bars. Times read "3 min
ago", the exact time in the ``title``.

The response-time chart spans the last 24 hours (hourly p50 and p95 from the
rollups), or less for a check first seen more recently: the shortest of
``CHART_SPANS_S`` that covers its life so far, so a check a few minutes old fills
its chart instead of a sliver at the right edge. Spans up to ``RAW_CHART_SPAN_S``
are drawn from the raw observations in ``CHART_BINS`` steps (at most
``MAX_CHART_OBSERVATIONS`` read; more, and the chart spans 24 h of rollups). The
axis under the chart says the span.

Bounded whatever the fleet: the overall line counts every check with one
grouped query; at most ``PAGE_CHECKS`` checks are drawn (those not up first) and
``PAGE_AGENTS`` agents (silent first), with a line saying how many more the JSON
API has.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Final
from urllib.parse import quote

from agent.central.config import CentralConfig
from agent.central.dependencies import Dependencies
from agent.central.history import DAY, HOUR, WINDOWS, History, Uptime, floor_to, parse_time
from agent.central.history_api import RolledUp, binned, rolled_up
from agent.central.incidents import Incidents
from agent.central.maintenance import Maintenance, Window
from agent.central.services import NO_SERVICES, Judgement, Services, held_because, service_order
from agent.central.storage import AgentRow, CheckRow, Incident, Storage
from agent.central.svg import latency_chart, milliseconds, uptime_bars, uptime_class
from agent.common.timefmt import rfc3339

PAGE_CHECKS: Final = 100
PAGE_AGENTS: Final = 50
CHECK_PAGE_INCIDENTS: Final = 50
PAGE_INCIDENTS: Final = 500  # open incidents read for the page
SHOWN_INCIDENTS: Final = 50  # of which the oldest are listed
RECENT_INCIDENTS: Final = 10
BAR_DAYS: Final = 90
REFRESH_S: Final = 30
UNGROUPED: Final = "Ungrouped"
# The spans a response-time chart may have; a check's is the shortest covering its life.
CHART_SPANS_S: Final = (5 * 60, 15 * 60, 30 * 60, HOUR, 6 * HOUR, 12 * HOUR, DAY)
# Spans up to an hour come from raw observations: at most 3,600 of them at the 1 s
# minimum interval, read for at most PAGE_CHECKS charts.
RAW_CHART_SPAN_S: Final = HOUR
CHART_BINS: Final = 60
MAX_CHART_OBSERVATIONS: Final = 4000
STATUS_WORDS: Final = {"agent_silent": "silent", "check_down": "down",
                       "check_flapping": "flapping", "service_down": "down",
                       "agent_unreachable": "unreachable"}
PAGE_SERVICES: Final = 50
PAGE_MEMBERS: Final = 20


def _e(value: object) -> str:
    return html.escape(str(value))


def words_ago(seconds: float) -> str:
    """How long ago, in a few words: ``just now``, ``40 s ago``, ``3 min ago``, ``2 days ago``."""
    if seconds < 0:
        return "in " + duration_words(-seconds)
    if seconds < 5:
        return "just now"
    return duration_words(seconds) + " ago"


def duration_words(seconds: float) -> str:
    """A duration for people: ``40 s``, ``3 min``, ``1 h 5 min``, ``2 days 3 h``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def time_ago(moment: float | None, now: float, never: str = "never") -> str:
    """A ``<time>`` reading "3 min ago" with the exact time in its title."""
    if moment is None:
        return f'<span class="never">{_e(never)}</span>'
    exact = rfc3339(moment)
    return f'<time datetime="{exact}" title="{exact}">{_e(words_ago(now - moment))}</time>'


def badge(status: str) -> str:
    """A status as a coloured badge."""
    css = status.replace(" ", "-")
    return f'<span class="badge {_e(css)}">{_e(status)}</span>'


def check_url(agent: str, check: str) -> str:
    """The path of one check's page."""
    return f"/checks/{quote(agent, safe='')}/{quote(check, safe='')}"


@dataclass(frozen=True, slots=True)
class Summary:
    """What the line on top says: every check counted, and the services a quorum of
    agents sees down named first (they are what paged)."""

    checks: int
    down: int
    degraded: int
    unknown: int
    silent_agents: int
    maintenance: int = 0
    services_down: tuple[str, ...] = ()  # the services a quorum sees down, by name

    @property
    def state(self) -> str:
        """``down``, ``degraded``, ``maintenance``, ``up`` or ``none`` (nothing reported):
        the line's colour."""
        if self.checks == 0:
            return "none"
        if self.down or self.silent_agents or self.services_down:
            return "down"
        if self.degraded or self.unknown:
            return "degraded"
        return "maintenance" if self.maintenance else "up"

    def line(self) -> str:
        """"All systems operational", or what is wrong: "3 of 14 checks down, 1 agent silent"."""
        if self.checks == 0:
            return "No checks have reported yet"
        parts = []
        if self.services_down:  # what paged first: a quorum of agents agree
            names = self.services_down
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3
                                            else "")
            parts.append(f"{'service' if len(names) == 1 else 'services'} {shown} down")
        if self.down:
            parts.append(f"{self.down} of {self.checks} checks down")
        if self.degraded:
            parts.append(f"{self.degraded} degraded" if parts
                         else f"{self.degraded} of {self.checks} checks degraded")
        if self.silent_agents:
            plural = "agent" if self.silent_agents == 1 else "agents"
            parts.append(f"{self.silent_agents} {plural} silent")
        if self.unknown and not self.silent_agents:
            parts.append(f"{self.unknown} not reporting yet" if parts
                         else f"{self.unknown} of {self.checks} checks not reporting yet")
        if self.maintenance:
            plural = "check" if self.maintenance == 1 else "checks"
            if not parts:
                return f"All systems operational; {self.maintenance} {plural} in maintenance"
            parts.append(f"{self.maintenance} in maintenance")
        return ", ".join(parts) if parts else "All systems operational"


class StatusPage:
    """Renders the status page and the check pages.

    Args:
        config: the receiver config.
        storage: the store.
        incidents: decides which agents are silent.
        history: rollups and uptime.
        wall_clock: seconds since the epoch.
    """

    def __init__(self, config: CentralConfig, storage: Storage, incidents: Incidents,
                 history: History, wall_clock: Callable[[], float]) -> None:
        self.config = config
        self.storage = storage
        self.incidents = incidents
        self.history = history
        self.wall_clock = wall_clock
        self.maintenance: Maintenance | None = None  # set by the receiver
        self.dependencies: Dependencies | None = None  # set by the receiver
        self.services: Services | None = None  # set by the receiver

    def _windows(self, now: float) -> list[Window]:
        return self.maintenance.windows(now) if self.maintenance is not None else []

    def _silent(self, agents: Sequence[AgentRow], now: float) -> set[str]:
        return {row.id for row in agents
                if self.incidents.is_silent(row.id, row.last_heartbeat_at, row.interval_s, now)}

    def summary(self, silent: set[str], windows: Sequence[Window] = ()) -> Summary:
        """Counts every check's shown status (a check in maintenance shows that)."""
        whole = {window.agent for window in windows if not window.checks}
        counts = {"down": 0, "degraded": 0, "unknown": 0, "maintenance": 0, "up": 0}

        def shown(agent: str, status: str) -> str:
            if agent in whole:
                return "maintenance"
            if agent in silent or status == "unknown":
                return "unknown"
            return status if status in counts else "up"

        total = 0
        for agent, status, count in self.storage.status_counts():
            total += count
            counts[shown(agent, status)] += count
        # A window over some checks only: move those from what they showed.
        named = {(window.agent, check) for window in windows for check in window.checks
                 if window.agent not in whole}
        for agent, check in named:
            row = self.storage.check(agent, check)
            if row is not None:
                counts[shown(agent, row.status)] -= 1
                counts["maintenance"] += 1
        return Summary(total, counts["down"], counts["degraded"], counts["unknown"],
                       len(silent - whole), counts["maintenance"])

    # -- the status page ----------------------------------------------------------

    def render(self, now: float | None = None) -> str:
        """The whole status page as HTML, as of ``now`` (default: the clock)."""
        now = self.wall_clock() if now is None else now
        agents = self.storage.agents()
        silent = self._silent(agents, now)
        windows = self._windows(now)
        judgement = self.services.judge(now) if self.services is not None else NO_SERVICES
        summary = replace(self.summary(silent, windows), services_down=tuple(
            sorted(name for name, state in judgement.services.items()
                   if state.status == "down")))
        parts = _head("heartwire status", now)
        parts.append(f'<header><h1>heartwire status</h1><p id="overall" class="overall '
                     f'{summary.state}">{_e(summary.line())}</p>'
                     f'<p class="generated">As of {time_ago(now, now)}; this page refreshes '
                     f"every {REFRESH_S} s.</p></header>")
        parts.extend(self._incidents(now))
        if windows:
            parts.extend(self._maintenance(windows, now))
        if judgement.services:
            parts.extend(self._services(judgement))
        rows = self.storage.checks_worst_first(sorted(silent), PAGE_CHECKS)
        rows.sort(key=lambda row: (row.group is None, row.group or "", row.agent, row.name))
        for group, members in groupby(rows, key=lambda row: row.group or UNGROUPED):
            parts.append(f'<section class="group"><h2>{_e(group)}</h2>')
            parts.extend(self._check_card(row, row.agent in silent, now, windows, judgement)
                         for row in members)
            parts.append("</section>")
        if not rows:
            parts.append('<p class="none">No checks have been reported yet.</p>')
        elif summary.checks > len(rows):
            parts.append(f'<p class="more">{len(rows)} of {summary.checks} checks shown (those '
                         'not up first); <a href="/api/v1/checks">/api/v1/checks</a> has them '
                         "all.</p>")
        parts.extend(self._agents(agents, silent, now))
        parts.append("</body></html>")
        return "\n".join(parts)

    def _incidents(self, now: float) -> list[str]:
        # Read at most PAGE_INCIDENTS: a fleet-wide outage must not make the page slow.
        open_incidents = self.storage.open_incidents(PAGE_INCIDENTS)
        counted = (f"at least {PAGE_INCIDENTS}" if len(open_incidents) == PAGE_INCIDENTS
                   else str(len(open_incidents)))
        parts = [f'<section id="incidents"><h2>Open incidents ({counted})</h2>']
        if open_incidents:
            parts.append("<ul>")
            parts.extend(_incident_item(incident, now)
                         for incident in open_incidents[:SHOWN_INCIDENTS])
            parts.append("</ul>")
            if len(open_incidents) > SHOWN_INCIDENTS:
                parts.append(f'<p class="more">The oldest {SHOWN_INCIDENTS} shown; '
                             '<a href="/api/v1/incidents">/api/v1/incidents</a> lists more.</p>')
        else:
            parts.append('<p class="none">None.</p>')
        recent = [incident for incident in self.storage.incidents(RECENT_INCIDENTS)
                  if incident.resolved_at is not None]
        if recent:
            parts.append('<details class="recent"><summary>Recently resolved</summary><ul>')
            parts.extend(_incident_item(incident, now) for incident in recent)
            parts.append("</ul></details>")
        parts.append("</section>")
        return parts

    def _uptime_spans(self, uptime: Uptime | None, windows: Sequence[str]) -> str:
        spans = []
        for window in windows:
            value = uptime.uptime[window] if uptime is not None else None
            text = "-" if value is None else f"{value:.2f}%"
            unknown = uptime.unknown[window] if uptime is not None else None
            title = f"uptime over {window}" + (f"; {unknown:g}% not known" if unknown else "")
            spans.append(f'<span class="uptime {uptime_class(value)}" title="{_e(title)}">'
                         f"{_e(text)} <small>{_e(window)}</small></span>")
        return "".join(spans)

    def _recent_chart(self, agent: str, check: str, now: float) -> str:
        """The response-time chart of a check's last 24 hours, or of its life so far
        when it is younger (see the module docstring)."""
        state = self.history.store.uptime_state(agent, check) if self.history.enabled else None
        age_s = DAY if state is None else now - state.first_seen
        span_s = next((span for span in CHART_SPANS_S if span >= age_s), DAY)
        first_seen = None if span_s == DAY or state is None else state.first_seen
        if span_s <= RAW_CHART_SPAN_S:
            step_s = span_s // CHART_BINS
            start = floor_to(now, step_s) - (CHART_BINS - 1) * step_s
            points = binned(self.history, agent, check, start, now, step_s,
                            MAX_CHART_OBSERVATIONS)
            if points is not None:
                return self._chart_figure(points, start, span_s, step_s, now, first_seen,
                                          join_empty=True)
            span_s, first_seen = DAY, None  # more than a chart reads: 24 h of rollups
        return self._chart(agent, check, now, span_s, HOUR, first_seen)

    def _chart(self, agent: str, check: str, now: float, span_s: int, step_s: int,
               first_seen: float | None = None) -> str:
        """A response-time chart of ``span_s`` up to now from the hourly rollups, one
        point per ``step_s`` (an hour or a day)."""
        start = floor_to(now, HOUR) - (span_s // HOUR - 1) * HOUR
        points = rolled_up(self.history, agent, check, start, now, step_s)
        return self._chart_figure(points, start, span_s, step_s, now, first_seen)

    def _chart_figure(self, points: Sequence[RolledUp], start: int, span_s: int, step_s: int,
                      now: float, first_seen: float | None, join_empty: bool = False) -> str:
        """The chart of ``points`` (one per ``step_s`` from ``start``), its caption and
        its axis.

        The lines break where a step was measured without a latency (down), and where
        nothing was measured unless ``join_empty``: a step of seconds may be shorter
        than the check's interval (or its agent's heartbeats), an hour is not.
        """
        by_start = {point.start: point for point in points}
        series = []
        for moment in range(start, floor_to(now, step_s) + 1, step_s):
            point = by_start.get(moment)
            if point is not None or not join_empty:
                series.append((moment + step_s / 2, point.p50 if point else None,
                               point.p95 if point else None))
        measured = [point for point in points if point.p50 is not None]
        span = duration_words(span_s)
        label = f"response time, last {span}"
        caption = label
        if first_seen is not None:
            caption += f" (first seen {words_ago(now - first_seen)})"
        if measured:
            latest = measured[-1]
            step = {HOUR: "hour", DAY: "day"}.get(step_s, duration_words(step_s))
            caption += (f" · latest {step}: p50 {milliseconds(latest.p50 or 0)}, "
                        f"p95 {milliseconds(latest.p95 or 0)}")
        chart = latency_chart(series, start, start + span_s, label)
        return (f'<figure class="latency">{chart}<div class="axis"><span>{_e(span)} ago</span>'
                f"<span>now</span></div><figcaption>{_e(caption)}</figcaption></figure>")

    def _bars(self, agent: str, check: str, now: float) -> str:
        days = self.history.daily_uptime(agent, check, now, BAR_DAYS)
        return (f'<figure class="days">{uptime_bars(days)}<figcaption>uptime, last {BAR_DAYS} '
                "days (UTC)</figcaption></figure>")

    def _maintenance(self, windows: Sequence[Window], now: float) -> list[str]:
        parts = [f'<section id="maintenance"><h2>Maintenance ({len(windows)})</h2><ul>']
        for window in windows:
            what = ", ".join(window.checks) if window.checks else "all checks, silence included"
            parts.append(
                f'<li class="window">{badge("maintenance")} <span class="summary">'
                f"{_e(window.agent)}: {_e(what)}</span> <span class=\"when\">"
                f"{_e(window.reason)}; ends {time_ago(window.ends_at, now)}</span></li>")
        parts.append("</ul></section>")
        return parts

    def _services(self, judgement: Judgement) -> list[str]:
        """Each service with its status and, beside it, what each member's agent sees."""
        states = sorted(judgement.services.values(), key=service_order)
        parts = [f'<section id="services"><h2>Services ({len(states)})</h2>']
        for state in states[:PAGE_SERVICES]:
            counted = len(state.counted)
            rule = (f"down when {state.quorum} of {counted} reporting see it down"
                    if counted else "no member reports")
            parts.append(
                f'<div class="service check {_e(state.status)}" data-service="{_e(state.name)}">'
                f'<div class="head">{badge(state.status)} <span class="name">{_e(state.name)}'
                f'</span><span class="agent">{_e(rule)}</span></div><ul class="members">')
            for member in state.members[:PAGE_MEMBERS]:
                note = f" ({member.note})" if member.note else ""
                parts.append(
                    f'<li class="member">{badge(member.status)} <a href="'
                    f'{_e(check_url(member.agent, member.check))}">{_e(member.name)}</a>'
                    f'<span class="agent">{_e(note)}</span></li>')
            parts.append("</ul>")
            if len(state.members) > PAGE_MEMBERS:
                parts.append(f'<p class="more">{PAGE_MEMBERS} of {len(state.members)} members '
                             'shown; <a href="/api/v1/services">/api/v1/services</a> lists '
                             "more.</p>")
            parts.append("</div>")
        if len(states) > PAGE_SERVICES:
            parts.append(f'<p class="more">{PAGE_SERVICES} of {len(states)} services shown '
                         '(worst first); <a href="/api/v1/services">/api/v1/services</a> has '
                         "them all.</p>")
        parts.append("</section>")
        return parts

    def _held_by(self, row: CheckRow) -> str | None:
        """The parent that is down and holds this check's alerts (down rows only)."""
        if self.dependencies is None or row.status not in ("down", "degraded"):
            return None
        return self.dependencies.held_by(row.agent, row.name)

    def _check_card(self, row: CheckRow, agent_silent: bool, now: float,
                    windows: Sequence[Window] = (),
                    judgement: Judgement | None = None) -> str:
        status = "unknown" if agent_silent else row.status
        window = next((window for window in windows if window.covers(row.agent, row.name)), None)
        target = f"{row.host}:{row.port}" if row.host else ""
        latency = "" if row.latency_ms is None else milliseconds(row.latency_ms)
        uptime = self.history.uptime(row.agent, row.name, now)
        why = "agent silent" if agent_silent else (row.reason if status != "up" else "")
        because = None if agent_silent else held_because(
            row, self._held_by(row), judgement or NO_SERVICES)
        if because is not None:
            why = f"{status} ({because}): {row.reason or ''}"
        if window is not None:
            ends = duration_words(window.ends_at - now)
            why = f"maintenance for {ends} more: {window.reason} (reports {status})"
            status = "maintenance"
        return (
            f'<div class="check {_e(status)}" data-check="{_e(row.agent)}/{_e(row.name)}">'
            f'<div class="head">{badge(status)} <a class="name" '
            f'href="{_e(check_url(row.agent, row.name))}">{_e(row.name)}</a>'
            f'<span class="agent">{_e(row.agent)}</span>'
            f'<span class="target">{_e(target)}</span>'
            f'<span class="latency">{_e(latency)}</span>'
            f'<span class="uptimes">{self._uptime_spans(uptime, ("24h", "30d"))}</span></div>'
            + (f'<div class="reason">{_e(why)}</div>' if why else "")
            + f'<div class="viz">{self._recent_chart(row.agent, row.name, now)}'
            f"{self._bars(row.agent, row.name, now)}</div></div>"
        )

    def _agents(self, agents: Sequence[AgentRow], silent: set[str], now: float) -> list[str]:
        stored = {row.id: row for row in agents}
        ids = sorted(set(stored) | set(self.config.agents),
                     key=lambda agent: (agent not in silent, agent))
        parts = [f'<section id="agents"><h2>Agents ({len(ids)})</h2><table><thead><tr>'
                 "<th>Agent</th><th>State</th><th>Last heartbeat</th><th>Version</th>"
                 "</tr></thead><tbody>"]
        for agent_id in ids[:PAGE_AGENTS]:
            row = stored.get(agent_id)
            last = row.last_heartbeat_at if row else None
            state = "never reported" if last is None else (
                "silent" if agent_id in silent else "alive")
            parts.append(
                f'<tr class="agent" data-agent="{_e(agent_id)}"><td>{_e(agent_id)}</td>'
                f"<td>{badge(state)}</td><td>{time_ago(last, now)}</td>"
                f'<td>{_e(row.version if row and row.version else "")}</td></tr>'
            )
        parts.append("</tbody></table>")
        if len(ids) > PAGE_AGENTS:
            parts.append(f'<p class="more">{PAGE_AGENTS} of {len(ids)} agents shown (silent '
                         'first); <a href="/api/v1/agents">/api/v1/agents</a> has them all.</p>')
        parts.append("</section>")
        return parts

    # -- one check ------------------------------------------------------------------

    def check_page(self, agent: str, check: str, now: float | None = None) -> str | None:
        """One check's page (status, uptime, charts, incidents) as of ``now`` (default:
        the clock), or None when the check is unknown."""
        row = self.storage.check(agent, check)
        if row is None:
            return None
        now = self.wall_clock() if now is None else now
        agents = [stored for stored in self.storage.agents() if stored.id == agent]
        agent_silent = bool(self._silent(agents, now))
        status = "unknown" if agent_silent else row.status
        window = next((window for window in self._windows(now)
                       if window.covers(agent, check)), None)
        reason = "agent silent" if agent_silent else (row.reason or "")
        judgement = self.services.judge(now) if self.services is not None else NO_SERVICES
        because = None if agent_silent else held_because(row, self._held_by(row), judgement)
        if because is not None:
            reason = f"{status} ({because}): {row.reason or ''}"
        if window is not None:
            reason = (f"maintenance for {duration_words(window.ends_at - now)} more: "
                      f"{window.reason} (reports {status})")
            status = "maintenance"
        target = f"{row.host}:{row.port}" if row.host else "—"
        uptime = self.history.uptime(agent, check, now)
        title = f"{check} on {agent}"
        parts = _head(f"{title} · heartwire", now)
        parts.append(f'<header><p><a href="/">← all checks</a></p><h1>{badge(status)} '
                     f"{_e(check)} <small>on {_e(agent)}</small></h1>"
                     f'<p class="generated">As of {time_ago(now, now)}.</p></header>')
        latency = "—" if row.latency_ms is None else milliseconds(row.latency_ms)
        parts.append(
            '<section id="now"><table><tbody>'
            f"<tr><th>Target</th><td>{_e(target)}</td></tr>"
            f"<tr><th>Group</th><td>{_e(row.group or UNGROUPED)}</td></tr>"
            f"<tr><th>Reason</th><td>{_e(reason)}</td></tr>"
            f"<tr><th>Latency</th><td>{_e(latency)}</td></tr>"
            f"<tr><th>Observed</th><td>{time_ago(parse_time(row.at), now)}</td></tr>"
            f'<tr><th>Uptime</th><td class="uptimes">{self._uptime_spans(uptime, tuple(WINDOWS))}'
            "</td></tr></tbody></table></section>"
        )
        parts.append('<section id="charts"><h2>Response time and uptime</h2><div class="viz">'
                     f"{self._recent_chart(agent, check, now)}"
                     f"{self._chart(agent, check, now, 30 * DAY, DAY)}"
                     f"{self._bars(agent, check, now)}</div></section>")
        incidents = self.storage.incidents_of(agent, check, CHECK_PAGE_INCIDENTS)
        parts.append(f'<section id="incidents"><h2>Incidents ({len(incidents)})</h2>')
        if incidents:
            parts.append("<ul>")
            parts.extend(_incident_item(incident, now) for incident in incidents)
            parts.append("</ul>")
        else:
            parts.append('<p class="none">None.</p>')
        parts.append("</section></body></html>")
        return "\n".join(parts)


def _incident_item(incident: Incident, now: float) -> str:
    status = STATUS_WORDS.get(incident.kind, incident.status)
    if incident.resolved_at is None:
        span = (f'<span class="lasted">for {_e(duration_words(now - incident.opened_at))}'
                f"</span>, since {time_ago(incident.opened_at, now)}")
        status_badge = badge(status)
    else:
        span = (f'<span class="lasted">lasted '
                f"{_e(duration_words(incident.resolved_at - incident.opened_at))}</span>, "
                f"resolved {time_ago(incident.resolved_at, now)}")
        status_badge = badge("resolved")
    # Held by a maintenance window, a parent or its service: shown, not paged.
    held = (' <span class="held">recorded, not sent</span>'
            if incident.resolved_at is None and not incident.notified else "")
    return (f'<li class="incident {_e(incident.kind)}">{status_badge} '
            f'<span class="summary">{_e(incident.summary)}</span> '
            f'<span class="when">{span}</span>{held}</li>')


def _head(title: str, now: float) -> list[str]:
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
    ]


STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:64rem;"
    "color:#1f2937;background:#f9fafb}"
    "h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}"
    "a{color:#1d4ed8}small{color:#6b7280;font-weight:normal}"
    ".overall{font-size:1.25rem;font-weight:600;padding:.8rem 1rem;border-radius:.5rem;"
    "margin:.6rem 0;color:#fff}"
    ".overall.up{background:#15803d}.overall.down{background:#b91c1c}"
    ".overall.degraded{background:#b45309}.overall.none{background:#6b7280}"
    ".generated,.when,.more,.none,.agent,.target,.held,figcaption,.never{color:#6b7280;"
    "font-size:.85rem}"
    ".badge{display:inline-block;min-width:4.2em;text-align:center;padding:.1rem .45rem;"
    "border-radius:999px;font-size:.8rem;font-weight:600;color:#fff;background:#6b7280}"
    ".badge.up,.badge.alive{background:#15803d}.badge.down,.badge.silent{background:#b91c1c}"
    ".badge.unreachable{background:#b91c1c}"
    ".members{display:flex;flex-wrap:wrap;gap:.3rem 1rem;margin:.35rem 0 0}"
    ".badge.degraded,.badge.flapping{background:#b45309}.badge.resolved{background:#4b5563}"
    ".badge.never-reported,.badge.unknown{background:#9ca3af}"
    ".badge.maintenance{background:#6d28d9}.overall.maintenance{background:#6d28d9}"
    ".check.maintenance{border-left-color:#6d28d9}.check.maintenance .reason{color:#6d28d9}"
    "ul{padding-left:0;list-style:none}li.incident{padding:.35rem 0;"
    "border-bottom:1px solid #e5e7eb}"
    ".check{background:#fff;border:1px solid #e5e7eb;border-left:4px solid #15803d;"
    "border-radius:.4rem;padding:.5rem .7rem;margin:.45rem 0}"
    ".check.down{border-left-color:#b91c1c}.check.degraded{border-left-color:#b45309}"
    ".check.unknown{border-left-color:#9ca3af}"
    ".head{display:flex;flex-wrap:wrap;gap:.3rem .7rem;align-items:baseline}"
    ".name{font-weight:600}.latency{font-variant-numeric:tabular-nums}"
    ".uptimes{margin-left:auto;display:flex;gap:.6rem}"
    ".uptime{font-variant-numeric:tabular-nums;font-weight:600}"
    ".uptime.good{color:#15803d}.uptime.fair{color:#65a30d}.uptime.poor{color:#b45309}"
    ".uptime.bad{color:#b91c1c}.uptime.none{color:#9ca3af}"
    ".reason{color:#b91c1c;font-size:.85rem;margin-top:.2rem}"
    ".viz{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;margin-top:.35rem}"
    "figure{margin:0;flex:1 1 16rem;min-width:0}"
    "svg{display:block;width:100%;height:3rem}svg.bars{height:1.6rem}"
    "svg.chart polyline{fill:none;stroke-width:1.6;vector-effect:non-scaling-stroke}"
    ".p50{stroke:#1d4ed8;fill:#1d4ed8}.p95{stroke:#93c5fd;fill:#93c5fd}"
    "svg.chart{background:#f3f4f6;border-radius:.25rem}"
    "svg.chart text{font-size:11px;fill:#9ca3af}"
    ".axis{display:flex;justify-content:space-between;font-size:.7rem;color:#6b7280}"
    "rect.good{fill:#16a34a}rect.fair{fill:#84cc16}rect.poor{fill:#f59e0b}"
    "rect.bad{fill:#dc2626}rect.none{fill:#e5e7eb}"
    "table{border-collapse:collapse;width:100%;background:#fff}"
    "th,td{padding:.3rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left}"
    "@media (max-width:40rem){body{padding:.6rem}.uptimes{margin-left:0}}"
)
