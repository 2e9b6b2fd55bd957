"""When something is wrong enough to tell a human, and when it is over.

Three kinds of incident, at most one open per subject:

* ``agent_silent`` (the dead man's switch): an agent's last heartbeat is older than
  its ``interval_s`` (from the heartbeat itself) plus its grace (per agent, default
  from ``[alerts] grace``). Its next heartbeat resolves it. After a receiver
  restart the count starts at the restart, so the receiver's own downtime does not
  page for every agent. Agents are watched from their first heartbeat on, while
  they are registered.
* ``check_down``: a check reports ``down`` (or ``degraded`` with
  ``alert_on_degraded``); it resolves when the check reports ``up`` (or
  ``degraded`` when that does not alert). ``unknown`` changes nothing.
* ``check_flapping``, the flapping rule (for services and agents that cannot reach
  their targets too, see :func:`outage_kind`): when a check opens more than
  ``flap_threshold`` ``check_down`` incidents within ``flap_window``, one
  ``check_flapping`` incident is triggered instead of the next one, and from then
  on that check's ``check_down`` incidents are recorded (alert history, status
  page) but not sent. The flapping incident resolves once no ``check_down``
  incident has opened for a whole ``flap_window``; if the check is down at that
  moment, its open ``check_down`` incident is sent then (it is a real outage now).

Two more kinds come from quorum across agents (services.py):

* ``service_down`` (subject: agent "", check the service's name; the constant lives
  in channels/base.py, which shapes its JSON): at least a
  quorum of the agents that report a service see it down;
* ``agent_unreachable`` (subject: the agent): one agent sees every one of its
  service checks down (two at least) while the other agents see those services up.

Every trigger and resolve that is sent goes into the durable notification queue,
one row per channel (see dispatch.py), in the same transaction as the incident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from agent.central.channels.base import RESOLVE, SERVICE_DOWN, TRIGGER
from agent.central.config import CentralConfig
from agent.central.storage import Incident, Storage
from agent.common.logs import get_logger

AGENT_SILENT = "agent_silent"
CHECK_DOWN = "check_down"
CHECK_FLAPPING = "check_flapping"
AGENT_UNREACHABLE = "agent_unreachable"
# A parent's alert names at most this many of the alerts it holds.
MAX_NAMED_CHILDREN = 10
HOLDS_SEPARATOR = "; holds the alerts of "

log = get_logger("central.incidents")


class Incidents:
    """Opens and resolves incidents and queues their notifications.

    Args:
        storage: the store.
        config: the receiver config (grace, flapping rule, alert_on_degraded).
        channels: the names of the channels every notification goes to.
        on_queued: called after notifications were queued (wakes the dispatcher).
        watching_since: when this receiver started (wall time); silence before it
            is not held against an agent.
    """

    def __init__(
        self,
        storage: Storage,
        config: CentralConfig,
        channels: Sequence[str],
        on_queued: Callable[[], None] = lambda: None,
        watching_since: float = 0.0,
    ) -> None:
        self.storage = storage
        self.config = config
        self.channels = list(channels)
        self.on_queued = on_queued
        self.watching_since = watching_since
        # Whether a maintenance window holds the alerts of (agent, check) now ("" for
        # the agent's silence); see maintenance.py. Held incidents are opened with
        # notified=False and sent by release_held once the window is over.
        self.holds: Callable[[str, str, float], bool] = lambda agent, check, now: False
        # The incidents a parent (agent, check) holds, as "agent/check", for the
        # parent's alert text; see dependencies.py.
        self.held_children: Callable[[str, str], list[str]] = lambda agent, check: []

    def _naming_children(self, agent: str, check: str, summary: str) -> str:
        """The summary of a parent's incident, naming the alerts it holds (a few)."""
        children = self.held_children(agent, check)
        if not children:
            return summary
        more = f" and {len(children) - MAX_NAMED_CHILDREN} more" \
            if len(children) > MAX_NAMED_CHILDREN else ""
        named = ", ".join(children[:MAX_NAMED_CHILDREN])
        return f"{summary}{HOLDS_SEPARATOR}{named}{more}"

    def _notify(self, incident: Incident, event: str, now: float) -> None:
        level = logging.WARNING if event == TRIGGER else logging.INFO
        log.log(level, "%s %s: %s", event, incident.kind, incident.summary)
        if self.channels:
            self.storage.enqueue(incident.id, event, self.channels, now)
            self.on_queued()

    def _alerting(self, status: str) -> bool:
        return status == "down" or (status == "degraded" and self.config.alert_on_degraded)

    # -- checks -----------------------------------------------------------------

    def check_status(
        self, agent: str, check: str, status: str, reason: str | None, now: float,
        *, path: str | None = None,
    ) -> None:
        """Applies a check's reported status to its incidents.

        ``path`` (the agent's path trace in words) goes into a new incident's summary,
        and with it into the alert text.
        """
        if status == "unknown":
            return
        if self._alerting(status):
            self._open_check_incident(agent, check, status, reason, now, path)
        else:
            self.close(CHECK_DOWN, agent, check, now)

    def open(self, kind: str, agent: str, check: str, status: str, summary: str,
             now: float) -> None:
        """Opens an outage of ``kind`` (``service_down``, ``agent_unreachable``) unless one
        is open for the subject, under the flapping rule like a check's; sent unless
        something holds it (``holds``: then ``release_held`` sends it later)."""
        if self.storage.open_incident_for(kind, agent, check) is None:
            self._open_outage(kind, agent, check, status, summary, now)

    def close(self, kind: str, agent: str, check: str, now: float) -> None:
        """Resolves the open incident of ``kind`` for the subject, if any; its resolve
        is sent when its trigger was (a resolve is never suppressed)."""
        resolved = self.storage.resolve_incident(kind, agent, check, now)
        if resolved is not None and resolved.notified:
            self._notify(resolved, RESOLVE, now)

    def _open_check_incident(
        self, agent: str, check: str, status: str, reason: str | None, now: float,
        path: str | None = None,
    ) -> None:
        if self.storage.open_incident_for(CHECK_DOWN, agent, check) is not None:
            return
        because = f" ({reason})" if reason else ""
        route = f"; {path}" if path else ""
        summary = self._naming_children(
            agent, check, f"{agent}: check {check} is {status}{because}{route}")
        self._open_outage(CHECK_DOWN, agent, check, status, summary, now)

    def _open_outage(self, kind: str, agent: str, check: str, status: str, summary: str,
                     now: float) -> None:
        """Opens an outage incident, or (past the flapping threshold) its flapping one."""
        window_start = now - self.config.flap_window_s
        recent = self.storage.incidents_opened_since(kind, agent, check, window_start)
        flapping = self.storage.open_incident_for(CHECK_FLAPPING, agent, check)
        held = self.holds(agent, check, now)
        starts_flapping = flapping is None and recent >= self.config.flap_threshold and not held
        incident = self.storage.open_incident(
            kind, agent, check, status, summary, now,
            notified=flapping is None and not starts_flapping and not held,
        )
        if incident is None:
            return
        if starts_flapping:
            flap = self.storage.open_incident(
                CHECK_FLAPPING, agent, check, "flapping",
                f"{_subject(agent, check)} is flapping ({recent + 1} outages within "
                f"{_words(self.config.flap_window_s)}); further changes are summarised",
                now,
            )
            if flap is not None:
                self._notify(flap, TRIGGER, now)
        elif incident.notified:
            self._notify(incident, TRIGGER, now)

    # -- agents -----------------------------------------------------------------

    def heartbeat(self, agent: str, now: float) -> None:
        """An agent is alive: resolves its dead man's switch incident."""
        self.close(AGENT_SILENT, agent, "", now)

    def deadline(self, agent: str, last_heartbeat_at: float, interval_s: float | None) -> float:
        """When an agent that last sent a heartbeat at ``last_heartbeat_at`` turns silent."""
        interval = interval_s or self.config.default_interval_s
        # Heartbeats sent while this receiver was down are still on their way:
        # the clock starts no earlier than when the receiver started watching.
        since = max(last_heartbeat_at, self.watching_since)
        return since + interval + self.config.grace_for(agent)

    def sweep(self, now: float) -> float | None:
        """Opens dead man's switch incidents and ends flapping periods that are over.

        Returns:
            The next moment something could become due, or None when nothing is watched.
        """
        next_due: float | None = None
        with self.storage.transaction():
            for row in self.storage.agents():
                if row.last_heartbeat_at is None or row.id not in self.config.agents:
                    # Watched from its first heartbeat on, while it is registered.
                    continue
                due = self.deadline(row.id, row.last_heartbeat_at, row.interval_s)
                if now >= due:
                    silent_for = now - row.last_heartbeat_at
                    incident = self.storage.open_incident(
                        AGENT_SILENT, row.id, "", "silent",
                        self._naming_children(
                            row.id, "", f"{row.id}: no heartbeat for {_words(silent_for)} "
                            f"(expected every {_words(row.interval_s or 0)})"),
                        now, notified=not self.holds(row.id, "", now),
                    )
                    if incident is not None and incident.notified:
                        self._notify(incident, TRIGGER, now)
                elif next_due is None or due < next_due:
                    next_due = due
            for flap in self.storage.open_incidents():
                if flap.kind != CHECK_FLAPPING:
                    continue
                last = self.storage.last_opened_at(
                    outage_kind(flap.agent, flap.check), flap.agent, flap.check) or 0.0
                quiet_at = last + self.config.flap_window_s
                if now >= quiet_at:
                    self._end_flapping(flap, now)
                elif next_due is None or quiet_at < next_due:
                    next_due = quiet_at
        return next_due

    def _end_flapping(self, flap: Incident, now: float) -> None:
        resolved = self.storage.resolve_incident(CHECK_FLAPPING, flap.agent, flap.check, now)
        if resolved is not None:
            self._notify(resolved, RESOLVE, now)
        down = self.storage.open_incident_for(outage_kind(flap.agent, flap.check), flap.agent,
                                              flap.check)
        # Of receivers ending the same flapping period, the one that marks it sends it
        # (a maintenance window holds it: released when the window ends).
        if down is not None and not down.notified and \
                not self.holds(flap.agent, flap.check, now) and self.storage.mark_notified(down.id):
            self._notify(self.storage.incident(down.id), TRIGGER, now)

    def release_held(self, now: float) -> int:
        """Sends the incidents a maintenance window, a parent that is down or a service
        (their check is a member: services.py) held, once nothing holds them any more
        (those still open: a resolved one is never sent). Returns how many."""
        released = 0
        waiting = [incident for incident in self.storage.open_incidents()
                   if not incident.notified and incident.kind != CHECK_FLAPPING]
        if not waiting:
            return 0
        with self.storage.transaction():
            for incident in waiting:
                if incident.kind == outage_kind(incident.agent, incident.check) and \
                        self.storage.open_incident_for(
                            CHECK_FLAPPING, incident.agent, incident.check) is not None:
                    continue  # held by the flapping rule, not by maintenance or a parent
                if self.holds(incident.agent, incident.check, now):
                    continue
                # A parent's alert names what it holds by now (see dependency_wait):
                # the kinds whose summary named children when they opened.
                summary = self._naming_children(
                    incident.agent, incident.check,
                    incident.summary.split(HOLDS_SEPARATOR, 1)[0],
                ) if incident.kind in (CHECK_DOWN, AGENT_SILENT) else None
                # One receiver of several wins.
                if self.storage.mark_notified(incident.id, summary):
                    self._notify(self.storage.incident(incident.id), TRIGGER, now)
                    released += 1
        return released

    def is_silent(self, agent: str, last_heartbeat_at: float | None,
                  interval_s: float | None, now: float) -> bool:
        """Whether an agent is past its deadline (its checks then show ``unknown``)."""
        if last_heartbeat_at is None:
            return False
        return now >= self.deadline(agent, last_heartbeat_at, interval_s)


def outage_kind(agent: str, check: str) -> str:
    """The kind of outage a subject has (and its flapping incident summarises): a
    service's ("", name), an agent's own ("agent", "") or a check's."""
    if not agent:
        return SERVICE_DOWN
    return CHECK_DOWN if check else AGENT_UNREACHABLE


def _subject(agent: str, check: str) -> str:
    if not agent:
        return f"service {check}"
    return f"{agent}: check {check}" if check else f"agent {agent} (cannot reach its targets)"


def _words(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"
