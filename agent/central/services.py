"""Quorum across agents: a service checked by several agents is judged by how many see it down.

A service's members are the checks whose agent's latest heartbeat says ``service =
"<name>"`` and the ``"<agent>/<check>"`` its ``[services.<name>] checks`` names in
central.toml. A member *counts* (is a vantage point now) when its agent is not
silent, its check has reported a known status, no maintenance window covers it,
and, when it is down, no parent that is down holds it (dependencies.py); a member
that does not count is neither down nor up: it is left out.

Over the ``n`` counted members of which ``k`` are down (``down``, or ``degraded`` with
``alert_on_degraded``), with ``q`` the service's ``quorum`` or by default more than
half of ``n`` (``n // 2 + 1``), and ``q`` capped at ``n`` (too few agents reporting
must not make an outage invisible), a service is:

* ``unknown`` when ``n`` is 0 (no member reports);
* ``down`` when ``k >= q``;
* ``degraded`` when ``0 < k < q`` (some vantage points see it down, not a quorum);
* ``up`` otherwise.

The alerting rule, built on the hold that maintenance and dependencies use:

* A check that belongs to a service alerts through its service, never on its own.
  Its ``check_down`` incident is recorded and shown with why it waits ("orders-db up
  from 2 of 3 agents", "service orders-db is down", "agent a cannot reach its
  targets") and held (:meth:`Services.holds`) for as long as it is a member. So when
  the service goes down, the member incidents it held are not sent one by one (the
  service's alert covers them and names them), and members still down after it
  recovers stay held (single vantage points again). A check that stops being a
  member is released by ``Incidents.release_held`` like any held alert.
* ``service_down`` opens when the status turns ``down`` ("service orders-db down:
  seen down by 2 of 3 agents: a/pg, b/pg") and resolves at ``up`` or ``degraded``;
  ``unknown`` changes nothing (nobody reporting is not a recovery).
* ``agent_unreachable``: an agent whose counted members are two or more, all down,
  while for each of their services at least one other agent counts and none of
  those sees it down, opens ONE incident ("agent a cannot reach its targets: ...")
  instead of one per check, and its members are left out of their services' counts
  (its view is set aside). It resolves when the agent sees one of them up again or
  another agent sees one of those services down too (it is not alone any more);
  while the agent is silent it stays as it is (the silence alerts). A maintenance
  window or a parent holding the agent's silence holds it too.

Both are outages under the flapping rule, like a check's (incidents.py). Resolves
are never suppressed: a resolve goes out for every trigger that went out.

Bounded: at most :data:`MAX_SERVICES` services (by name) with at most
``MAX_SERVICE_MEMBERS`` members each are judged, the rest is logged once and left
alone (its checks alert on their own). One judgement reads the agents (one query)
and the member checks (one query per agent with members); an agent's latest
heartbeat is parsed again only when a new one arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from agent.central.channels.base import SERVICE_DOWN
from agent.central.config import MAX_SERVICE_MEMBERS, CentralConfig
from agent.central.dependencies import Dependencies
from agent.central.incidents import AGENT_UNREACHABLE, Incidents
from agent.central.maintenance import Maintenance
from agent.central.storage import AgentRow, CheckRow, Storage
from agent.common.logs import get_logger
from agent.outbound.messages import CheckReport

MAX_SERVICES: Final = 500
# An alert names at most this many checks; the rest are counted.
MAX_NAMED: Final = 10
# /api/v1/services lists at most this many members of each service (and counts them all).
MAX_API_MEMBERS: Final = 100
PAIRS_FOR_S: Final = 1.0

log = get_logger("central.services")

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Member:
    """One member check as the judgement saw it.

    Attributes:
        agent: its agent.
        check: its name.
        status: its shown status (``unknown`` while its agent is silent or before it reported).
        counted: whether it is a vantage point of the service now.
        down: whether it counts as down (counted and alerting).
        note: why it does not count ("agent silent", "maintenance", ...), or None.
    """

    agent: str
    check: str
    status: str
    counted: bool = False
    down: bool = False
    note: str | None = None

    @property
    def name(self) -> str:
        """``agent/check``."""
        return f"{self.agent}/{self.check}"


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One service's status and the per-agent view behind it."""

    name: str
    status: str
    quorum: int  # members that must see it down now (0 while none reports)
    quorum_configured: int | None
    members: tuple[Member, ...]

    @property
    def counted(self) -> list[Member]:
        """The members that are vantage points now."""
        return [member for member in self.members if member.counted]

    @property
    def down(self) -> list[Member]:
        """The counted members that see it down."""
        return [member for member in self.members if member.down]


@dataclass(frozen=True, slots=True)
class Judgement:
    """Every service's state at one moment, and the agents that cannot reach their targets."""

    services: Mapping[str, ServiceState]
    unreachable: Mapping[str, tuple[Member, ...]]
    silent: frozenset[str] = frozenset()
    services_of: Mapping[Pair, tuple[str, ...]] = field(default_factory=dict)

    def note(self, agent: str, check: str) -> str | None:
        """Why a member's outage waits, in words for the page, or None for a non-member."""
        if agent in self.unreachable:
            return f"agent {agent} cannot reach its targets"
        for name in self.services_of.get((agent, check), ()):
            state = self.services[name]
            if state.status == "down":
                return f"service {name} is down"
            counted = state.counted
            up = len(counted) - len(state.down)
            return f"{name} up from {up} of {len(counted)} {_vantage_word(counted)}"
        return None


# The judgement of a receiver with no services at all.
NO_SERVICES: Final = Judgement({}, {})


def _vantage_word(members: Sequence[Member]) -> str:
    """"agents" when each member is on its own agent (the usual case), else "checks"."""
    plural = len(members) != 1
    if len({member.agent for member in members}) == len(members):
        return "agents" if plural else "agent"
    return "checks" if plural else "check"


def _names(members: Sequence[Member]) -> str:
    names = sorted(member.name for member in members)
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


def service_summary(state: ServiceState) -> str:
    """The service's alert line: how many of the agents see it down, and which."""
    counted, down = state.counted, state.down
    return (f"service {state.name} down: seen down by {len(down)} of {len(counted)} "
            f"{_vantage_word(counted)}: {_names(down)}")


def unreachable_summary(agent: str, members: Sequence[Member],
                        services: Sequence[str]) -> str:
    """The alert line of an agent that alone sees its targets down."""
    return (f"agent {agent} cannot reach its targets: {_names(members)} are down while "
            f"other agents see {', '.join(sorted(services))} up")


class Services:
    """Judges services by a quorum of agents; opens and resolves their incidents.

    Args:
        storage: the store (agents, checks, latest heartbeats, open incidents).
        config: the receiver config (``[services.<name>]``, ``alert_on_degraded``).
        incidents: decides silence; opens and resolves incidents (writer side).
        dependencies: the parents of a member, and the agents' latest heartbeats.
        maintenance: the windows that set a member aside, or None.
        says_bounds: whether this one logs that the bounds were reached (the writer's
            side does; the read side judges the same store).
    """

    def __init__(self, storage: Storage, config: CentralConfig, incidents: Incidents,
                 dependencies: Dependencies, maintenance: Maintenance | None = None,
                 *, says_bounds: bool = True) -> None:
        self.storage = storage
        self.config = config
        self.incidents = incidents
        self.dependencies = dependencies
        self.maintenance = maintenance
        # Per agent: the last_heartbeat_at its keyed members were read at, and them.
        self._keyed: dict[str, tuple[float, list[Pair]]] = {}
        self._warned_bounds = not says_bounds
        self._may_have_open = True  # service incidents may be open (until looked at)
        self._pairs: frozenset[Pair] = frozenset()
        self._pairs_at = float("-inf")

    # -- membership -----------------------------------------------------------------

    def _keyed_members(self, agents: Sequence[AgentRow]) -> dict[str, list[tuple[str, str]]]:
        """``(check, service)`` pairs per registered agent, from its latest heartbeat."""
        keyed: dict[str, list[tuple[str, str]]] = {}
        for row in agents:
            if row.id not in self.config.agents or row.last_heartbeat_at is None:
                continue
            cached = self._keyed.get(row.id)
            if cached is None or cached[0] != row.last_heartbeat_at:
                # Most heartbeats name no service: a substring test spares parsing them.
                text = self.storage.last_heartbeat_json(row.id) or ""
                entries = [entry for entry in self.dependencies.listed(row.id)
                           if entry.service] if '"service"' in text else []
                cached = (row.last_heartbeat_at,
                          [(entry.name, entry.service or "") for entry in entries])
                self._keyed[row.id] = cached
            keyed[row.id] = cached[1]
        for gone in set(self._keyed) - set(self.config.agents):
            del self._keyed[gone]
        return keyed

    def members(self, agents: Sequence[AgentRow] | None = None) -> dict[str, list[Pair]]:
        """Every service's members, by service name (bounded, sorted)."""
        agents = self.storage.agents() if agents is None else agents
        by_service: dict[str, dict[Pair, None]] = {}
        for name, settings in self.config.services.items():
            by_service.setdefault(name, {}).update(dict.fromkeys(settings.checks))
        for agent, pairs in sorted(self._keyed_members(agents).items()):
            for check, service in pairs:
                by_service.setdefault(service, {})[(agent, check)] = None
        names = sorted(by_service)
        too_many = len(names) > MAX_SERVICES or any(
            len(members) > MAX_SERVICE_MEMBERS for members in by_service.values())
        if too_many and not self._warned_bounds:
            log.warning("more than %d services or %d members of one: the rest are not judged "
                        "(their checks alert on their own)", MAX_SERVICES, MAX_SERVICE_MEMBERS)
            self._warned_bounds = True
        return {name: sorted(by_service[name])[:MAX_SERVICE_MEMBERS]
                for name in names[:MAX_SERVICES]}

    def touches(self, agent: str, reports: Sequence[CheckReport]) -> bool:
        """Whether a message's reports may change a service (no store reads): one names
        a service, or is a member named in central.toml or by the agent's last heartbeat."""
        keyed = {check for check, _ in self._keyed.get(agent, (0.0, []))[1]}
        named = {pair for settings in self.config.services.values() for pair in settings.checks}
        return any(report.service is not None or report.name in keyed
                   or (agent, report.name) in named for report in reports)

    def service_of_check(self, agent: str, check: str) -> str | None:
        """The service a check belongs to, from central.toml or its agent's latest
        heartbeat alone (one small read: for an alert's labels)."""
        for name, settings in sorted(self.config.services.items()):
            if (agent, check) in settings.checks:
                return name
        return next((entry.service for entry in self.dependencies.listed(agent)
                     if entry.name == check and entry.service), None)

    def holds(self, agent: str, check: str, now: float) -> bool:
        """Whether this check's alerts go through its service (the shape of
        ``Incidents.holds``): every member's are."""
        return bool(check) and (agent, check) in self._member_pairs(now)

    def _member_pairs(self, now: float) -> frozenset[Pair]:
        # Asked for every held incident at every sweep: the members are read once per
        # sweep or message (each starts with forget), and at most a second apart.
        if not 0 <= now - self._pairs_at < PAIRS_FOR_S:
            self._pairs = frozenset(pair for pairs in self.members().values() for pair in pairs)
            self._pairs_at = now
        return self._pairs

    def forget(self) -> None:
        """Members are read again when next asked (a sweep or a message begins, the
        config changed)."""
        self._pairs_at = float("-inf")

    # -- judging ----------------------------------------------------------------------

    def _alerting(self, status: str) -> bool:
        return status == "down" or (status == "degraded" and self.config.alert_on_degraded)

    def judge(self, now: float) -> Judgement:
        """Every service's state as of ``now``. Reads only."""
        agents = self.storage.agents()
        members = self.members(agents)
        silent = frozenset(row.id for row in agents if self.incidents.is_silent(
            row.id, row.last_heartbeat_at, row.interval_s, now))
        if not members:
            return Judgement({}, {}, silent)
        names_by_agent: dict[str, set[str]] = {}
        services_of: dict[Pair, list[str]] = {}
        for name, pairs in members.items():
            for agent, check in pairs:
                names_by_agent.setdefault(agent, set()).add(check)
                services_of.setdefault((agent, check), []).append(name)
        rows = {(agent, check): row for agent, names in names_by_agent.items()
                for check, row in self.storage.checks_named(agent, sorted(names)).items()}
        windows = self.maintenance.windows(now) if self.maintenance is not None else []

        def vantage(agent: str, check: str) -> Member:
            row = rows.get((agent, check))
            if agent in silent:
                return Member(agent, check, "unknown", note="agent silent")
            if row is None or row.status == "unknown":
                return Member(agent, check, "unknown", note="not reported")
            if any(window.covers(agent, check) for window in windows):
                return Member(agent, check, row.status, note="maintenance")
            down = self._alerting(row.status)
            parent = self.dependencies.held_by(agent, check) if down else None
            if parent is not None:
                return Member(agent, check, row.status, note=f"parent {parent} is down")
            return Member(agent, check, row.status, counted=True, down=down)

        views = {name: [vantage(agent, check) for agent, check in pairs]
                 for name, pairs in members.items()}
        unreachable = _alone(views)
        states = {}
        for name, viewed in views.items():
            aside = tuple(
                replace(member, counted=False, down=False,
                        note=f"agent {member.agent} cannot reach its targets")
                if member.counted and member.agent in unreachable else member
                for member in viewed)
            settings = self.config.services.get(name)
            states[name] = _state(name, aside, settings.quorum if settings else None)
        return Judgement(states, unreachable, silent,
                         {pair: tuple(names) for pair, names in services_of.items()})

    # -- incidents (the writer's side) ------------------------------------------------

    def evaluate(self, now: float) -> Judgement:
        """Judges every service and opens or resolves ``service_down`` and
        ``agent_unreachable`` incidents to match (in the caller's transaction)."""
        judgement = self.judge(now)
        if not judgement.services and not self._may_have_open:
            return judgement  # no services, none before: nothing to open or resolve
        open_now = {(incident.kind, incident.agent, incident.check): incident
                    for incident in self.storage.open_incidents()
                    if incident.kind in (SERVICE_DOWN, AGENT_UNREACHABLE)}
        # Read again after services disappear (or at start: left open by an earlier run).
        self._may_have_open = bool(judgement.services or open_now)
        # Resolves first: an agent no longer alone is over before its service alerts.
        for kind, agent, check in open_now:
            if kind == SERVICE_DOWN and check not in judgement.services:
                self.incidents.close(kind, agent, check, now)  # no such service any more
            elif kind == AGENT_UNREACHABLE and agent not in judgement.unreachable \
                    and agent not in judgement.silent:
                self.incidents.close(kind, agent, check, now)
        for name, state in judgement.services.items():
            is_open = (SERVICE_DOWN, "", name) in open_now
            if state.status == "down" and not is_open:
                self.incidents.open(SERVICE_DOWN, "", name, "down", service_summary(state), now)
            elif state.status in ("up", "degraded") and is_open:
                self.incidents.close(SERVICE_DOWN, "", name, now)
        for agent, down in judgement.unreachable.items():
            if (AGENT_UNREACHABLE, agent, "") not in open_now:
                services = {name for member in down
                            for name in judgement.services_of.get((agent, member.check), ())}
                self.incidents.open(AGENT_UNREACHABLE, agent, "", "unreachable",
                                    unreachable_summary(agent, down, sorted(services)), now)
        return judgement


def _alone(views: Mapping[str, Sequence[Member]]) -> dict[str, tuple[Member, ...]]:
    """The agents whose counted members (two or more) are all down while, for each of
    their services, other agents count and none of them sees it down."""
    mine: dict[str, list[tuple[str, Member]]] = {}
    for name, viewed in views.items():
        for member in viewed:
            if member.counted:
                mine.setdefault(member.agent, []).append((name, member))
    alone = {}
    for agent, entries in mine.items():
        if len(entries) < 2 or not all(member.down for _, member in entries):
            continue
        others_up = True
        for name in {name for name, _ in entries}:
            others = [member for member in views[name]
                      if member.agent != agent and member.counted]
            if not others or any(member.down for member in others):
                others_up = False
                break
        if others_up:
            alone[agent] = tuple(member for _, member in entries)
    return alone


def _state(name: str, members: tuple[Member, ...], configured: int | None) -> ServiceState:
    counted = [member for member in members if member.counted]
    down = [member for member in counted if member.down]
    quorum = min(configured or len(counted) // 2 + 1, len(counted))
    if not counted:
        status = "unknown"
    elif len(down) >= quorum:
        status = "down"
    else:
        status = "degraded" if down else "up"
    return ServiceState(name, status, quorum, configured, members)


def state_json(state: ServiceState) -> dict[str, object]:
    """One service for ``/api/v1/services`` (at most MAX_API_MEMBERS members listed)."""
    return {
        "name": state.name,
        "status": state.status,
        "quorum": state.quorum,
        "quorum_configured": state.quorum_configured,
        "reporting": len(state.counted),
        "down": len(state.down),
        "members": [{"agent": member.agent, "check": member.check, "status": member.status,
                     "counted": member.counted, "note": member.note}
                    for member in state.members[:MAX_API_MEMBERS]],
        **({"members_total": len(state.members)}
           if len(state.members) > MAX_API_MEMBERS else {}),
    }


def service_order(state: ServiceState) -> tuple[int, str]:
    """Services worst first (down, degraded, unknown, up), then by name."""
    return (SERVICE_ORDER.get(state.status, len(SERVICE_ORDER)), state.name)


SERVICE_ORDER: Final = {"down": 0, "degraded": 1, "unknown": 2, "up": 3}


def held_because(row: CheckRow, parent: str | None, judgement: Judgement) -> str | None:
    """Why a down check's alert waits, in words ("parent dc1/uplink is down", "orders-db
    up from 2 of 3 agents"), or None when it alerts on its own or is not down."""
    if row.status not in ("down", "degraded"):
        return None
    if parent is not None:
        return f"parent {parent} is down"
    return judgement.note(row.agent, row.name)
