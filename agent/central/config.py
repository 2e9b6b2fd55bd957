"""Loading the receiver's TOML config (``/etc/heartwire/central.toml``) strictly.

The main file is read first, then every ``agents.d/*.toml`` beside it in lexical
order: ``heartwire central agents add`` writes one file there per agent, so an
agent is registered without editing the main file. Every problem is a
:class:`~agent.errors.ConfigError` naming the file and the key path; the rest of the
receiver only sees the frozen dataclasses below.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from agent.central.channels import CHANNEL_KINDS, ChannelSettings
from agent.central.maintenance import WeeklyWindow, read_weekly
from agent.central.storage import Retention, StorageSettings, is_postgres
from agent.central.storage.base import DEFAULT_POOL_SIZE
from agent.common.dependency_graph import MAX_DEPENDS_ON, find_cycle
from agent.common.keyfiles import read_secret, read_sources
from agent.common.loopback import is_loopback_host
from agent.common.names import NAME_RULE, is_valid_name, shown_name
from agent.common.signing import VerifyKey, read_verify_key
from agent.common.tables import Table, read_toml
from agent.errors import ConfigError, HeartwireError
from agent.outbound.messages import DEFAULT_MAX_CHECKS

DEFAULT_CONFIG_PATH: Final = Path("/etc/heartwire/central.toml")
AGENTS_DIR: Final = "agents.d"
DEFAULT_LISTEN: Final = "127.0.0.1:8470"
DEFAULT_STATE_DIR: Final = Path("/var/lib/heartwire-central")
# A heartbeat lists every check of its agent (about 150 bytes each): 8 MiB leaves
# room for tens of thousands of checks while still refusing absurd bodies.
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
DEFAULT_TOLERANCE_S: Final = 300.0
# A whole request body must arrive within this; a client trickling bytes is cut off.
DEFAULT_BODY_TIMEOUT_S: Final = 10.0
# Requests in progress at once; past it the one reading its body longest makes way.
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 256
DEFAULT_DEDUP_RETENTION_S: Final = 7 * 86400.0
# A read token guards a page anyone on the network could otherwise guess at.
MIN_READ_TOKEN_CHARS: Final = 16
DEFAULT_STATE_HISTORY_RETENTION_S: Final = 90 * 86400.0
DEFAULT_SEQ_GAP_RETENTION_S: Final = 30 * 86400.0
DEFAULT_NOTIFICATION_RETENTION_S: Final = 30 * 86400.0
DEFAULT_INCIDENT_RETENTION_S: Final = 365 * 86400.0
DEFAULT_INTERVAL_S: Final = 30.0
DEFAULT_GRACE_S: Final = 60.0
DEFAULT_FLAP_WINDOW_S: Final = 3600.0
# How long a parent's alert waits for the checks that depend on it to report down,
# so that it names the alerts it holds (Alertmanager's group_wait, for one parent).
# Longer than ten minutes would keep a real outage from a human too long.
DEFAULT_DEPENDENCY_WAIT_S: Final = 30.0
MAX_DEPENDENCY_WAIT_S: Final = 600.0
DEFAULT_FLAP_THRESHOLD: Final = 3
DEFAULT_RETRY_INITIAL_S: Final = 10.0
DEFAULT_RETRY_MAX_S: Final = 600.0
DEFAULT_RAW_RETENTION_S: Final = 7 * 86400.0
DEFAULT_ROLLUP_RETENTION_S: Final = 400 * 86400.0
# A receiver sending an alert holds it this long; killed meanwhile, another
# receiver sends it after that. Longer than a send may take (dispatch.py).
DEFAULT_DELIVERY_LEASE_S: Final = 120.0
# The most members a [services.<name>] table names, and the largest quorum: a
# service is a handful of vantage points, never a fleet.
MAX_SERVICE_MEMBERS: Final = 1000


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """One ``[agents.<id>]`` table.

    Attributes:
        id: the agent's ``[agent] id``.
        keys: the keys its messages may be signed with (several during a rotation):
            ``keys`` (whpk_ public keys) and whsec_ secrets from ``secret_file``,
            ``secret_env`` or ``secret_credential`` (each a string or an array).
        grace_s: how long after ``interval_s`` a missing heartbeat alerts; None: the default.
        depends_on: ``(agent, check)`` pairs of other agents this one depends on (an
            uplink, a VPN gateway): while one is down, this agent's alerts are held.
        source: the file the agent is defined in.
    """

    id: str
    keys: tuple[VerifyKey, ...]
    grace_s: float | None = None
    depends_on: tuple[tuple[str, str], ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """One ``[services.<name>]`` table.

    Attributes:
        name: the service's name, the one checks give as ``service``.
        checks: ``(agent, check)`` members named here, in addition to the checks whose
            heartbeat entry carries ``service = name``.
        quorum: how many reporting members must see it down; None: more than half.
        source: the file the service is defined in.
    """

    name: str
    checks: tuple[tuple[str, str], ...] = ()
    quorum: int | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """The ``[history]`` table.

    Attributes:
        enabled: whether observations, rollups and uptime are kept at all.
        raw_retention_s: how long raw observations are kept.
        rollup_retention_s: how long hourly rollups are kept.
    """

    enabled: bool = True
    raw_retention_s: float = DEFAULT_RAW_RETENTION_S
    rollup_retention_s: float = DEFAULT_ROLLUP_RETENTION_S


def read_history(table: Table) -> HistorySettings:
    """Reads the ``[history]`` table (every key optional)."""
    settings = HistorySettings(
        enabled=table.boolean("enabled", True),
        raw_retention_s=table.duration("raw_retention", DEFAULT_RAW_RETENTION_S),
        rollup_retention_s=table.duration("rollup_retention", DEFAULT_ROLLUP_RETENTION_S),
    )
    if settings.raw_retention_s < 3600:
        raise table.error("raw_retention", "must be at least 1h")
    if settings.rollup_retention_s < settings.raw_retention_s:
        raise table.error("rollup_retention", "must not be less than raw_retention")
    table.finish()
    return settings


@dataclass(frozen=True, slots=True)
class CentralConfig:
    """The whole receiver config, defaults filled in.

    Attributes:
        listen: ``host:port`` addresses to serve on (loopback unless told otherwise).
        certfile: a PEM certificate to serve HTTPS directly, or None (plain HTTP,
            e.g. behind a TLS-terminating reverse proxy).
        keyfile: its private key (a private file), or None.
        state_dir: where the SQLite database lives.
        storage_url: ``[storage] url``: a ``postgresql://`` URL, or "" for SQLite.
        storage_password: the PostgreSQL password (from a file, variable or credential).
        storage_pool_size: PostgreSQL connections this receiver keeps at most.
        max_body_bytes: bigger request bodies are refused with 413.
        max_checks: the most entries of a heartbeat's ``checks`` (and ``results``).
        body_timeout_s: how long a client may take to send a whole request body.
        max_concurrent_requests: requests handled at once.
        read_tokens: tokens that open the read side (``/``, ``/api/v1/*``); empty:
            the read side is public.
        tolerance_s: how far ``webhook-timestamp`` may be from the receiver's clock.
        dedup_retention_s: how long applied message ids are remembered.
        retention: how long each kind of history is kept (dedup_retention_s included).
        default_interval_s: the heartbeat interval assumed when a heartbeat states none.
        grace_s: default slack after an agent's interval before it counts as silent.
        alert_on_degraded: whether ``degraded`` opens an incident like ``down``.
        flap_window_s: the window of the flapping rule.
        dependency_wait_s: how long the alert of a check that others depend on waits
            for them (0: it goes out at once).
        flap_threshold: incidents of one check within the window before it is flapping.
        retry_initial_s: the most a failed channel delivery waits before its first retry.
        retry_max_s: cap of the doubling retry delay.
        delivery_lease_s: how long a receiver holds an alert it is sending.
        agents: the known agents, by id.
        channels: where alerts go, by name.
        files: the files read, in order.
        history: what is kept of observations and for how long.
        maintenance: the weekly maintenance windows.
        services: the services judged by a quorum of agents, by name (those named
            only by their checks' ``service`` key are not here).
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    certfile: Path | None = None
    keyfile: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    storage_url: str = ""
    storage_password: str | None = field(default=None, repr=False)
    storage_pool_size: int = DEFAULT_POOL_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_checks: int = DEFAULT_MAX_CHECKS
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    read_tokens: tuple[str, ...] = field(default=(), repr=False)
    tolerance_s: float = DEFAULT_TOLERANCE_S
    dedup_retention_s: float = DEFAULT_DEDUP_RETENTION_S
    state_history_retention_s: float = DEFAULT_STATE_HISTORY_RETENTION_S
    seq_gap_retention_s: float = DEFAULT_SEQ_GAP_RETENTION_S
    notification_retention_s: float = DEFAULT_NOTIFICATION_RETENTION_S
    incident_retention_s: float = DEFAULT_INCIDENT_RETENTION_S
    default_interval_s: float = DEFAULT_INTERVAL_S
    grace_s: float = DEFAULT_GRACE_S
    alert_on_degraded: bool = False
    flap_window_s: float = DEFAULT_FLAP_WINDOW_S
    dependency_wait_s: float = DEFAULT_DEPENDENCY_WAIT_S
    flap_threshold: int = DEFAULT_FLAP_THRESHOLD
    retry_initial_s: float = DEFAULT_RETRY_INITIAL_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    delivery_lease_s: float = DEFAULT_DELIVERY_LEASE_S
    agents: Mapping[str, AgentSettings] = field(default_factory=lambda: MappingProxyType({}))
    channels: Mapping[str, ChannelSettings] = field(
        default_factory=lambda: MappingProxyType({})
    )
    files: tuple[str, ...] = ()
    history: HistorySettings = HistorySettings()
    maintenance: tuple[WeeklyWindow, ...] = ()
    services: Mapping[str, ServiceSettings] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def grace_for(self, agent: str) -> float:
        """The grace period of one agent (its own, or the default)."""
        settings = self.agents.get(agent)
        if settings is not None and settings.grace_s is not None:
            return settings.grace_s
        return self.grace_s

    @property
    def storage(self) -> StorageSettings:
        """Where the receiver keeps its state."""
        return StorageSettings(self.state_dir, self.storage_url, self.storage_password,
                               self.storage_pool_size)

    @property
    def retention(self) -> Retention:
        """The retention of every kind of history, for pruning."""
        return Retention(
            messages_s=self.dedup_retention_s,
            state_history_s=self.state_history_retention_s,
            seq_gaps_s=self.seq_gap_retention_s,
            notifications_s=self.notification_retention_s,
            incidents_s=self.incident_retention_s,
        )


def _listen(table: Table) -> tuple[str, ...]:
    addresses = table.string_list("listen", (DEFAULT_LISTEN,))
    if not addresses:
        raise table.error("listen", "must name at least one host:port")
    for index, address in enumerate(addresses):
        host, sep, port = address.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise table.error(
                f"listen[{index}]",
                f'expected "host:port" (e.g. "{DEFAULT_LISTEN}"), got {address!r}',
            )
    return addresses


def _storage_url(table: Table) -> str:
    """``[storage] url``: "" (SQLite) or a PostgreSQL URL that holds no password."""
    url = table.optional_string("url") or ""
    if url in ("", "sqlite"):
        return ""
    if not is_postgres(url):
        raise table.error("url", 'expected "sqlite" or "postgresql://user@host:port/database"')
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError as exc:
        raise table.error("url", f"not a valid URL: {exc}") from None
    query = urllib.parse.parse_qs(parts.query)
    if parts.password is not None or "password" in query:
        # central.toml is often world-readable: a secret never goes inline.
        raise table.error("url", "must not hold a password; give it with password_file, "
                          "password_env or password_credential")
    return url


def _storage_password(table: Table, url: str) -> str | None:
    sources = read_sources(table, "password")
    if not sources:
        return None
    if not url:
        raise ConfigError(table.file, sources[0].key, "a password needs a PostgreSQL url")
    if len(sources) > 1:
        raise ConfigError(table.file, sources[1].key, "give the password once")
    try:
        return read_secret(sources[0])
    except HeartwireError as exc:
        raise ConfigError(table.file, sources[0].key, str(exc)) from None


def _optional_path(table: Table, key: str) -> Path | None:
    value = table.optional_string(key)
    return Path(value) if value else None


def _read_keys(table: Table) -> tuple[VerifyKey, ...]:
    keys: list[VerifyKey] = []
    for index, text in enumerate(table.string_list("keys")):
        if not text.startswith("whpk_"):
            # A shared secret inline would sit in a config that is often world-readable.
            raise table.error(
                f"keys[{index}]",
                "only whpk_ public keys go inline; give whsec_ secrets with secret_file, "
                "secret_env or secret_credential",
            )
        try:
            keys.append(read_verify_key(text))
        except HeartwireError as exc:
            raise table.error(f"keys[{index}]", str(exc)) from None
    for source in read_sources(table, "secret"):
        try:
            keys.append(read_verify_key(read_secret(source)))
        except HeartwireError as exc:
            raise ConfigError(table.file, source.key, str(exc)) from None
    if not keys:
        raise table.error(None, "needs keys, secret_file, secret_env or secret_credential")
    return tuple(keys)


def read_agent(table: Table, agent_id: str) -> AgentSettings:
    """Reads one ``[agents.<id>]`` table."""
    if not is_valid_name(agent_id):
        raise table.error(None, f"agent id {agent_id!r} {NAME_RULE}")
    settings = AgentSettings(
        id=agent_id,
        keys=_read_keys(table),
        grace_s=table.duration("grace", None, positive=False) if table.has("grace") else None,
        depends_on=_read_depends_on(table, agent_id),
        source=table.file,
    )
    table.mark_read("grace")
    table.finish()
    return settings


def _read_check_pairs(table: Table, key: str, most: int) -> list[tuple[str, str]]:
    """``key = ["<agent>/<check>", ...]``, at most ``most`` of them, duplicates dropped."""
    written = table.string_list(key)
    if len(written) > most:
        raise table.error(key, f"at most {most} checks, got {len(written)}")
    pairs: list[tuple[str, str]] = []
    for index, text in enumerate(written):
        agent, _, check = text.partition("/")
        if not is_valid_name(agent) or not is_valid_name(check):
            raise table.error(f"{key}[{index}]",
                              f"expected \"<agent>/<check>\", got {shown_name(text)}")
        pairs.append((agent, check))
    return list(dict.fromkeys(pairs))


def _read_depends_on(table: Table, agent_id: str) -> tuple[tuple[str, str], ...]:
    """``depends_on = ["<agent>/<check>", ...]``: checks of other agents."""
    pairs = _read_check_pairs(table, "depends_on", MAX_DEPENDS_ON)
    for index, (agent, _) in enumerate(pairs):
        if agent == agent_id:
            raise table.error(f"depends_on[{index}]",
                              f"agent {agent_id!r} cannot depend on itself (its checks "
                              "say depends_on in the agent's own config)")
    return tuple(pairs)


def read_services(top: Table) -> dict[str, ServiceSettings]:
    """The ``[services.<name>]`` tables: ``checks`` (``"<agent>/<check>"``) and ``quorum``."""
    services_table = top.table("services")
    services: dict[str, ServiceSettings] = {}
    for name in services_table:
        table = services_table.table(name)
        if not is_valid_name(name):
            raise table.error(None, f"service name {shown_name(name)} {NAME_RULE}")
        quorum = (table.integer("quorum", minimum=1, maximum=MAX_SERVICE_MEMBERS)
                  if table.has("quorum") else None)
        table.mark_read("quorum")
        checks = tuple(_read_check_pairs(table, "checks", MAX_SERVICE_MEMBERS))
        table.finish()
        services[name] = ServiceSettings(name, checks, quorum, table.file)
    services_table.finish()
    return services


def _check_service_members(services: Mapping[str, ServiceSettings],
                           agents: Mapping[str, AgentSettings]) -> None:
    """Every member a services table names is a check of a registered agent."""
    for service in services.values():
        for index, (agent, _) in enumerate(service.checks):
            if agent not in agents:
                raise ConfigError(service.source, f"services.{service.name}.checks[{index}]",
                                  f"agent {agent!r} is not registered")


def _check_agent_dependencies(agents: dict[str, AgentSettings]) -> None:
    """Every parent agent is registered, and no chain of agents comes back."""
    for settings in agents.values():
        for index, (parent, _) in enumerate(settings.depends_on):
            if parent not in agents:
                raise ConfigError(settings.source, f"agents.{settings.id}.depends_on[{index}]",
                                  f"agent {parent!r} is not registered")
    cycle = find_cycle({agent_id: [parent for parent, _ in settings.depends_on]
                        for agent_id, settings in agents.items()})
    if cycle is not None:
        first = agents[cycle[0]]
        raise ConfigError(first.source, f"agents.{first.id}.depends_on",
                          f"a dependency cycle between agents: {' -> '.join(cycle)}")


def _read_agents(
    top: Table, into: dict[str, AgentSettings]
) -> None:
    agents = top.table("agents")
    for agent_id in agents:
        sub = agents.table(agent_id)
        if agent_id in into:
            earlier = into[agent_id].source
            raise sub.error(None, f"agent {agent_id!r} is already defined in {earlier}")
        into[agent_id] = read_agent(sub, agent_id)
    agents.finish()


def load(path: Path) -> CentralConfig:
    """Reads the receiver config and its ``agents.d/*.toml`` drop-ins.

    Raises:
        ConfigError: a file is unreadable or invalid; the message names file and key.
    """
    file = str(path)
    top = Table(read_toml(path), file)

    server = top.table("server")
    listen = _listen(server)
    certfile = _optional_path(server, "certfile")
    keyfile = _optional_path(server, "keyfile")
    if (certfile is None) != (keyfile is None):
        missing = "keyfile" if certfile else "certfile"
        raise server.error(missing, "certfile and keyfile go together")
    max_body = server.integer(
        "max_body_bytes", DEFAULT_MAX_BODY_BYTES, minimum=1024, maximum=64 * 1024 * 1024
    )
    max_checks = server.integer("max_checks", DEFAULT_MAX_CHECKS, minimum=1, maximum=1_000_000)
    body_timeout = server.duration("body_timeout", DEFAULT_BODY_TIMEOUT_S)
    max_concurrent_requests = server.integer(
        "max_concurrent_requests", DEFAULT_MAX_CONCURRENT_REQUESTS, minimum=1, maximum=100_000
    )
    tolerance = server.duration("timestamp_tolerance", DEFAULT_TOLERANCE_S)
    read_tokens = []
    for source in read_sources(server, "read_token"):
        try:
            token = read_secret(source)
        except HeartwireError as exc:
            raise ConfigError(server.file, source.key, str(exc)) from None
        if len(token) < MIN_READ_TOKEN_CHARS:
            raise ConfigError(server.file, source.key,
                              f"the token must be at least {MIN_READ_TOKEN_CHARS} characters")
        read_tokens.append(token)
    server.finish()

    storage = top.table("storage")
    state_dir = Path(storage.nonempty_string("state_dir", str(DEFAULT_STATE_DIR)))
    storage_url = _storage_url(storage)
    storage_password = _storage_password(storage, storage_url)
    pool_size = storage.integer("pool_size", DEFAULT_POOL_SIZE, minimum=1, maximum=100)
    retention = storage.duration("dedup_retention", DEFAULT_DEDUP_RETENTION_S)
    if retention < tolerance:
        # A replay inside the timestamp window must still find its id.
        raise storage.error("dedup_retention", "must be at least [server] timestamp_tolerance")
    history_retention = storage.duration("state_history_retention",
                                         DEFAULT_STATE_HISTORY_RETENTION_S)
    gap_retention = storage.duration("seq_gap_retention", DEFAULT_SEQ_GAP_RETENTION_S)
    notification_retention = storage.duration("notification_retention",
                                              DEFAULT_NOTIFICATION_RETENTION_S)
    incident_retention = storage.duration("incident_retention", DEFAULT_INCIDENT_RETENTION_S)
    storage.finish()

    alerts = top.table("alerts")
    default_interval = alerts.duration("default_interval", DEFAULT_INTERVAL_S)
    grace = alerts.duration("grace", DEFAULT_GRACE_S, positive=False)
    on_degraded = alerts.boolean("alert_on_degraded", False)
    flap_window = alerts.duration("flap_window", DEFAULT_FLAP_WINDOW_S)
    flap_threshold = alerts.integer("flap_threshold", DEFAULT_FLAP_THRESHOLD, minimum=1)
    dependency_wait = alerts.duration("dependency_wait", DEFAULT_DEPENDENCY_WAIT_S,
                                      positive=False)
    if dependency_wait > MAX_DEPENDENCY_WAIT_S:
        raise alerts.error("dependency_wait", f"at most {MAX_DEPENDENCY_WAIT_S:g}s, "
                           f"got {dependency_wait:g}s")
    retry_initial = alerts.duration("retry_initial", DEFAULT_RETRY_INITIAL_S)
    retry_max = alerts.duration("retry_max", DEFAULT_RETRY_MAX_S)
    delivery_lease = alerts.duration("delivery_lease", DEFAULT_DELIVERY_LEASE_S)
    if retry_max < retry_initial:
        raise alerts.error("retry_max", "must not be less than retry_initial")
    if incident_retention < flap_window:
        # The flapping rule counts the incidents of the last flap_window.
        raise storage.error("incident_retention", "must be at least [alerts] flap_window")
    alerts.finish()

    history = read_history(top.table("history"))
    maintenance = read_weekly(top.table("maintenance"))
    services = read_services(top)

    agents: dict[str, AgentSettings] = {}
    _read_agents(top, agents)

    channels_table = top.table("channels")
    channels: dict[str, ChannelSettings] = {}
    for name in channels_table:
        sub = channels_table.table(name)
        kind = sub.choice("kind", tuple(CHANNEL_KINDS))
        channels[name] = CHANNEL_KINDS[kind](sub, name)
        sub.finish()
    channels_table.finish()
    top.finish()

    files = [file]
    dropins = path.parent / AGENTS_DIR
    if dropins.is_dir():
        for dropin in sorted(dropins.glob("*.toml")):
            extra = Table(read_toml(dropin), str(dropin))
            _read_agents(extra, agents)
            extra.finish()
            files.append(str(dropin))

    _check_agent_dependencies(agents)
    _check_service_members(services, agents)
    for window in maintenance:
        if window.agent not in agents:
            raise ConfigError(file, f"maintenance.{window.name}.agent",
                              f"agent {window.agent!r} is not registered")

    return CentralConfig(
        listen=listen,
        certfile=certfile,
        keyfile=keyfile,
        state_dir=state_dir,
        storage_url=storage_url,
        storage_password=storage_password,
        storage_pool_size=pool_size,
        max_body_bytes=max_body,
        max_checks=max_checks,
        body_timeout_s=body_timeout,
        max_concurrent_requests=max_concurrent_requests,
        read_tokens=tuple(read_tokens),
        tolerance_s=tolerance,
        dedup_retention_s=retention,
        state_history_retention_s=history_retention,
        seq_gap_retention_s=gap_retention,
        notification_retention_s=notification_retention,
        incident_retention_s=incident_retention,
        default_interval_s=default_interval,
        grace_s=grace,
        alert_on_degraded=on_degraded,
        flap_window_s=flap_window,
        dependency_wait_s=dependency_wait,
        flap_threshold=flap_threshold,
        retry_initial_s=retry_initial,
        retry_max_s=retry_max,
        delivery_lease_s=delivery_lease,
        agents=MappingProxyType(agents),
        channels=MappingProxyType(channels),
        files=tuple(files),
        history=history,
        maintenance=maintenance,
        services=MappingProxyType(services),
    )


def is_loopback(address: str) -> bool:
    """Whether a ``host:port`` listen address is on loopback only."""
    return is_loopback_host(address.rpartition(":")[0])
