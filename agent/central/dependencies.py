"""Dependencies: while a parent is down, the alerts of what depends on it wait.

Two sources of parents, the same effect:

* a check's ``depends_on`` in the agent's config (checks of the same agent), which
  the agent sends in every heartbeat (the receiver reads the latest one from the
  store, so every receiver on a shared database knows the same parents);
* ``[agents.<id>] depends_on = ["<agent>/<check>", ...]`` in ``central.toml``: every
  check of the agent depends on those checks of other agents (an uplink, a VPN
  gateway), and so does the agent's silence.

The alert of a check tied by a dependency waits ``[alerts] dependency_wait`` (30 s):
a parent's then names the children that reported down meanwhile, and a child's is
held by a parent that went down meanwhile (:meth:`Dependencies.waits`).

A parent is down while it has an open ``check_down`` incident; a parent agent that
is silent holds too (a silent agent is already the implicit parent of its own
checks: they show ``unknown``). A held incident is recorded and shown with
``held_by`` but not sent; the incidents module sends it once nothing holds it any
more (``Incidents.release_held``), and its resolve only when its trigger was sent.

Services (services.py) use the same hold: a check that belongs to a service alerts
through its service, so its own incident is held for as long as it is a member.
When the service goes down, the member incidents it held are not released one by
one (the service's alert names them); they stay held after it recovers (a member
still down is a single vantage point) and are released only when the check stops
being a member. A member held by a parent, or in maintenance, does not count
towards its service's quorum.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from agent.central.config import CentralConfig
from agent.central.storage import Storage

# The kinds named here as strings: incidents.py imports this module.
_CHECK_DOWN = "check_down"
_AGENT_SILENT = "agent_silent"


@dataclass(frozen=True, slots=True)
class ListedCheck:
    """One check as its agent's latest heartbeat lists it: what the receiver's rules
    about it need (its parents, the service it checks)."""

    name: str
    depends_on: tuple[object, ...] = ()
    service: str | None = None


def listed_checks(text: str) -> list[ListedCheck]:
    """The checks of a stored heartbeat ``data`` (JSON the receiver validated)."""
    heartbeat = json.loads(text)
    entries = heartbeat.get("checks") if isinstance(heartbeat, dict) else None
    listed = []
    for entry in entries or ():
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            service = entry.get("service")
            listed.append(ListedCheck(entry["name"], tuple(entry.get("depends_on") or ()),
                                      service if isinstance(service, str) else None))
    return listed


class Dependencies:
    """Which parent, if any, holds the alerts of a check (or of an agent's silence).

    Args:
        storage: the store (latest heartbeats, open incidents).
        config: the receiver config (agent-level ``depends_on``).
    """

    def __init__(self, storage: Storage, config: CentralConfig) -> None:
        self.storage = storage
        self.config = config
        # Per agent: its latest heartbeat's JSON and the (check, depends_on) pairs read
        # from it. A heartbeat may list 10,000 checks: parsed again only when it changed,
        # not at every sweep that asks whether a held incident may go out.
        self._read: dict[str, tuple[str, list[ListedCheck]]] = {}

    def parents(self, agent: str, check: str) -> Iterator[tuple[str, str]]:
        """The ``(agent, check)`` pairs ``check`` of ``agent`` depends on ("" : its silence)."""
        if check:
            for name, parents in self._listed(agent):
                if name == check:
                    yield from ((agent, parent) for parent in parents if isinstance(parent, str))
                    break
        settings = self.config.agents.get(agent)
        if settings is not None:
            yield from settings.depends_on

    def held_by(self, agent: str, check: str) -> str | None:
        """The first parent that is down now, as ``agent/check`` (or ``agent`` when it
        is silent), or None when no parent holds this check's alerts."""
        for parent_agent, parent_check in self.parents(agent, check):
            if self.storage.open_incident_for(_CHECK_DOWN, parent_agent, parent_check):
                return f"{parent_agent}/{parent_check}"
            if parent_agent != agent and self.storage.open_incident_for(
                    _AGENT_SILENT, parent_agent, ""):
                return parent_agent
        return None

    def holds(self, agent: str, check: str, now: float) -> bool:
        """Whether a parent holds the alerts of ``check`` of ``agent`` (the shape of
        ``Incidents.holds``)."""
        return self.held_by(agent, check) is not None

    def waits(self, agent: str, check: str, now: float) -> bool:
        """Whether the alert of ``check`` of ``agent`` still waits for the checks it is
        tied to (``[alerts] dependency_wait`` from its outage's start): a parent for
        its children, a child for its parents.

        Checks tied by ``depends_on`` report their outages on their own schedules,
        seconds apart (each often confirmed over two runs). A parent's alert sent at
        once would name none of the alerts it then holds; a child's outage that
        arrives just before its parent's would page. Waiting a little, as
        Alertmanager's ``group_wait`` does, lets the parent's alert say what it holds,
        lets a parent that goes down within the wait hold its child, and a check back
        within the wait pages no one. Checks tied to nothing alert at once.
        """
        wait = self.config.dependency_wait_s
        if not check or wait <= 0:
            return False
        # One indexed read first: the sweep asks this of every held incident every
        # second, and past its wait an outage needs no scan of the heartbeat's checks.
        outage = self.storage.open_incident_for(_CHECK_DOWN, agent, check)
        if outage is not None and now >= outage.opened_at + wait:
            return False
        return next(iter(self.parents(agent, check)), None) is not None or any(
            names for _, names in self._children(agent, check))

    def children_held(self, agent: str, check: str) -> list[str]:
        """What this parent holds as it goes down, as ``agent/check`` (``agent`` for a
        silence), for the parent's alert text: the checks that depend on it and report
        down, and the open unsent silences of agents that depend on it."""
        held: list[str] = []
        for child_agent, names in self._children(agent, check):
            rows = self.storage.checks_named(child_agent, names)
            held += [f"{child_agent}/{name}" for name, row in sorted(rows.items())
                     if self._alerting(row.status)]
            silence = self.storage.open_incident_for(_AGENT_SILENT, child_agent, "")
            if child_agent != agent and silence is not None and not silence.notified:
                held.append(child_agent)
        return held

    def _children(self, agent: str, check: str) -> Iterator[tuple[str, list[str]]]:
        """The agents with checks that may depend on ``check`` of ``agent``, and those
        checks' names (from their latest heartbeats)."""
        if check:
            yield agent, [name for name, parents in self._listed(agent) if check in parents]
        for child in self.config.agents.values():
            if child.id != agent and any(parent == agent and (not check or parent_check == check)
                                         for parent, parent_check in child.depends_on):
                yield child.id, [name for name, _ in self._listed(child.id)]

    def _listed(self, agent: str) -> Iterator[tuple[str, list[object]]]:
        """The checks an agent's latest heartbeat lists, with their ``depends_on``."""
        return ((entry.name, list(entry.depends_on)) for entry in self.listed(agent))

    def listed(self, agent: str) -> list[ListedCheck]:
        """The checks an agent's latest heartbeat lists (empty before its first)."""
        text = self.storage.last_heartbeat_json(agent)
        if text is None:
            return []
        cached = self._read.get(agent)
        if cached is None or cached[0] != text:
            listed = listed_checks(text)
            if agent in self.config.agents:  # bounded by the registered agents
                self._read[agent] = (text, listed)
            return listed
        return cached[1]

    def _alerting(self, status: str) -> bool:
        return status == "down" or (status == "degraded" and self.config.alert_on_degraded)
