"""Loading the agent's TOML config into frozen, validated dataclasses.

The main file (``/etc/heartwire/agent.toml`` unless told otherwise) is read first,
then every ``conf.d/*.toml`` beside it in lexical order (the systemd drop-in
convention). Checks from all files merge by name. Every problem is reported as a
:class:`~agent.errors.ConfigError` naming the file and the key path; the rest of
the program only ever sees the dataclasses below.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.checks import PROBES
from agent.common.dependency_graph import MAX_DEPENDS_ON, find_cycle
from agent.common.names import (
    MAX_HOST_CHARS,
    MAX_LABEL_CHARS,
    NAME_RULE,
    is_valid_name,
    shown_name,
)
from agent.common.tables import Table, format_duration, read_toml
from agent.config.destinations import (
    CentralSettings,
    DestinationConfig,
    read_central,
    read_destinations,
)
from agent.model import FAMILIES, Target

DEFAULT_CONFIG_PATH = Path("/etc/heartwire/agent.toml")
CONFIG_ENV_VAR = "HEARTWIRE_CONFIG"
# Overrides ``[agent] state_dir`` (as does ``heartwire run --state-dir``).
STATE_DIR_ENV_VAR = "HEARTWIRE_STATE_DIR"
DROPIN_DIR = "conf.d"


DEFAULT_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_FAILURES_BEFORE_DOWN = 2
DEFAULT_MAX_CONCURRENT_CHECKS = 256
DEFAULT_STATE_DIR = Path("/var/lib/heartwire")
# Below a second a check becomes load, not monitoring.
MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class CheckDefaults:
    """Settings every check inherits unless it sets its own (``[defaults]``)."""

    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    degraded_after_s: float | None = None
    failures_before_down: int = DEFAULT_FAILURES_BEFORE_DOWN
    family: str = "any"


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One check, with every default filled in.

    Attributes:
        name: the check's name (its key under ``[checks]``).
        host: hostname or IP literal to connect to.
        port: TCP or UDP port (0 for kinds without one, such as icmp).
        kind: the probe kind ("tcp", ...).
        interval_s: time from one run's start to the next.
        timeout_s: total deadline of one run (always less than the interval).
        degraded_after_s: a successful run slower than this is degraded; None: never.
        failures_before_down: consecutive failures before the status becomes down.
        family: "any", "ipv4" or "ipv6".
        group: display group ("Infrastructure"), or None.
        tags: free-form labels.
        depends_on: the checks of this agent it depends on: while one is down, a
            receiver holds this check's alerts.
        service: the service this check checks (``"orders-db"``), shared with other
            agents' checks of it: a receiver judges the service by a quorum of them.
        options: the kind's own settings.
        source: the file the check is defined in.
    """

    name: str
    host: str
    port: int
    kind: str = "tcp"
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    degraded_after_s: float | None = None
    failures_before_down: int = DEFAULT_FAILURES_BEFORE_DOWN
    family: str = "any"
    group: str | None = None
    tags: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    service: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    source: str = ""

    def target(self) -> Target:
        """Where and how the probe connects."""
        return Target(host=self.host, port=self.port, family=self.family, options=self.options)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The ``[agent]`` table."""

    id: str
    state_dir: Path = DEFAULT_STATE_DIR
    max_concurrent_checks: int = DEFAULT_MAX_CONCURRENT_CHECKS


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration.

    Attributes:
        agent: the ``[agent]`` settings.
        defaults: the ``[defaults]`` every check inherited from.
        checks: every check, main file first, then drop-ins in lexical order.
        files: the files read, in order.
        central: the ``[central]`` reporting settings.
        destinations: where reports go (``[destinations.*]``), in file order.
        effective: the same config as one TOML document in the files' own terms
            (every key the readers know, defaults filled in, drop-ins merged), for
            ``heartwire config show``; not redacted. Left out of comparisons.
    """

    agent: AgentSettings
    defaults: CheckDefaults
    checks: tuple[CheckConfig, ...]
    files: tuple[str, ...]
    central: CentralSettings = field(default_factory=CentralSettings)
    destinations: tuple[DestinationConfig, ...] = ()
    effective: Mapping[str, object] = field(
        default_factory=dict, compare=False, repr=False, metadata={"internal": True}
    )

    def check_names(self) -> list[str]:
        """The names of all checks, in config order."""
        return [check.name for check in self.checks]


def config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Which config file to read: ``--config``, then ``$HEARTWIRE_CONFIG``, then the default."""
    if cli_value:
        return Path(cli_value)
    if environ.get(CONFIG_ENV_VAR):
        return Path(environ[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH


def state_dir_override(
    cli_value: str | None, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The state directory given outside the config (``--state-dir``, then
    ``$HEARTWIRE_STATE_DIR``), or None to use ``[agent] state_dir``.

    The daemon and the commands that look for its pid file both ask here, so they
    agree on where it is.
    """
    value = cli_value or environ.get(STATE_DIR_ENV_VAR)
    return Path(value) if value else None


def dropin_files(main_file: Path) -> list[Path]:
    """The drop-in files that go with ``main_file``, in the order they are read."""
    directory = main_file.parent / DROPIN_DIR
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.glob("*.toml") if path.is_file())


def load(path: Path) -> Config:
    """Reads and validates the main config file and its drop-ins.

    Raises:
        ConfigError: naming the file, the key path and what is wrong.
    """
    documents = [(str(path), read_toml(path))]
    documents += [(str(dropin), read_toml(dropin)) for dropin in dropin_files(path)]
    return parse(documents)


def parse(documents: list[tuple[str, dict[str, object]]]) -> Config:
    """Validates already-read TOML documents: the main file first, then drop-ins.

    Raises:
        ConfigError: naming the file, the key path and what is wrong.
    """
    main_file, main_raw = documents[0]
    main = Table(main_raw, main_file)
    agent = _read_agent(main.table("agent"))
    defaults = _read_defaults(main.table("defaults"))
    check_tables = _collect_keyed(main, "checks", documents[1:])
    central = read_central(main.table("central"))
    destinations = read_destinations(main.table("destinations"))
    main.finish()

    checks = tuple(_read_check(table, defaults) for table in check_tables)
    _check_dependencies(checks, check_tables)
    effective = main.effective()
    effective["checks"] = {check.name: table.effective()
                           for check, table in zip(checks, check_tables, strict=True)}
    return Config(
        agent=agent,
        defaults=defaults,
        checks=checks,
        files=tuple(file for file, _ in documents),
        central=central,
        destinations=destinations,
        effective=effective,
    )


def _collect_keyed(
    main: Table, section: str, dropins: list[tuple[str, dict[str, object]]]
) -> list[Table]:
    """The tables under ``[section.*]`` from the main file and every drop-in.

    A name defined twice is an error naming both files.
    """
    found: dict[str, Table] = {}
    for parent in [main, *(Table(raw, file) for file, raw in dropins)]:
        if parent is not main:
            for key in parent:
                if key != section:
                    raise parent.error(
                        key, f"only [{section}.*] tables may appear in a drop-in file; "
                        f"set {key!r} in {main.file}"
                    )
        keyed = parent.table(section)
        for name in keyed:
            table = keyed.table(name)
            if name in found:
                raise table.error(None, f"{name!r} is already defined in {found[name].file}")
            found[name] = table
        keyed.finish()
    return list(found.values())


def _read_agent(table: Table) -> AgentSettings:
    agent_id = table.nonempty_string("id", socket.gethostname() or "heartwire")
    if not is_valid_name(agent_id):
        raise table.error("id", f"{NAME_RULE}, got {agent_id!r}")
    settings = AgentSettings(
        id=agent_id,
        state_dir=Path(table.nonempty_string("state_dir", str(DEFAULT_STATE_DIR))),
        max_concurrent_checks=table.integer(
            "max_concurrent_checks", DEFAULT_MAX_CONCURRENT_CHECKS, minimum=1, maximum=100_000
        ),
    )
    table.finish()
    return settings


def _read_timing(table: Table, inherited: CheckDefaults) -> CheckDefaults:
    """Reads the timing keys shared by ``[defaults]`` and each check, with their rules."""
    interval_s = table.duration("interval", inherited.interval_s)
    timeout_s = table.duration("timeout", inherited.timeout_s)
    degraded_after_s = table.duration("degraded_after", inherited.degraded_after_s)
    failures = table.integer(
        "failures_before_down", inherited.failures_before_down, minimum=1, maximum=1000
    )
    family = table.choice("family", FAMILIES, inherited.family)

    # Point at the key the operator wrote, so the message says what to edit.
    if interval_s < MIN_INTERVAL_S:
        key = "interval" if table.has("interval") else None
        raise table.error(key, f"interval must be at least {format_duration(MIN_INTERVAL_S)}, "
                          f"got {format_duration(interval_s)}")
    if timeout_s >= interval_s:
        key = "timeout" if table.has("timeout") or not table.has("interval") else "interval"
        raise table.error(
            key,
            f"timeout ({format_duration(timeout_s)}) must be less than "
            f"interval ({format_duration(interval_s)})",
        )
    if degraded_after_s is not None and degraded_after_s >= timeout_s:
        key = "degraded_after" if table.has("degraded_after") else "timeout"
        raise table.error(
            key,
            f"degraded_after ({format_duration(degraded_after_s)}) must be less than "
            f"timeout ({format_duration(timeout_s)})",
        )
    return CheckDefaults(interval_s, timeout_s, degraded_after_s, failures, family)


def _read_defaults(table: Table) -> CheckDefaults:
    defaults = _read_timing(table, CheckDefaults())
    table.finish()
    return defaults


def _check_length(table: Table, key: str, text: str, limit: int) -> None:
    """Refuses a ``key`` longer than ``limit`` characters (what the receiver stores)."""
    if len(text) > limit:
        raise table.error(key, f"at most {limit} characters, got {len(text)}")


def _check_literal_family(table: Table, host: str, family: str) -> None:
    """An IP literal of one family can never be reached over the other."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return
    if family != "any" and family != f"ipv{version}":
        key = "family" if table.has("family") else "host"
        raise table.error(key, f"host {host} is an IPv{version} address but family is {family!r}")


def _read_port(table: Table, kind_name: str) -> int:
    """The check's port: required, the kind's default (dns: 53), or 0 for icmp (none)."""
    kind = PROBES[kind_name]
    if not kind.has_port:
        if table.has("port"):
            raise table.error("port", f"{kind_name} checks have no port")
        return 0
    if kind.default_port is None:
        return table.integer("port", minimum=1, maximum=65535)
    return table.integer("port", kind.default_port, minimum=1, maximum=65535)


def _read_check(table: Table, defaults: CheckDefaults) -> CheckConfig:
    name = table.path.split(".", 1)[1]
    if not is_valid_name(name):
        raise table.error(None, f"check name {NAME_RULE}, got {name!r}")
    kind_name = table.choice("kind", sorted(PROBES), "tcp")
    host = table.nonempty_string("host")
    _check_length(table, "host", host, MAX_HOST_CHARS)
    if any(char.isspace() for char in host):
        raise table.error("host", f"must not contain white space, got {host!r}")
    if not host.isprintable():  # DEL, ESC, bidi overrides: never a host, often a trick
        raise table.error("host", f"must not contain control characters, got {host!r}")
    port = _read_port(table, kind_name)
    timing = _read_timing(table, defaults)
    _check_literal_family(table, host.strip("[]"), timing.family)
    group = table.optional_string("group")
    if group is not None:
        _check_length(table, "group", group, MAX_LABEL_CHARS)
    tags = table.string_list("tags")
    depends_on = table.string_list("depends_on")
    if len(depends_on) > MAX_DEPENDS_ON:
        raise table.error("depends_on", f"at most {MAX_DEPENDS_ON} checks, got {len(depends_on)}")
    if name in depends_on:
        raise table.error("depends_on", f"check {name!r} cannot depend on itself")
    service = _read_service(table)
    options = PROBES[kind_name].read_options(table)
    table.finish()
    return CheckConfig(
        name=name,
        host=host.strip("[]"),  # accept "[::1]" as written in URLs
        port=port,
        kind=kind_name,
        interval_s=timing.interval_s,
        timeout_s=timing.timeout_s,
        degraded_after_s=timing.degraded_after_s,
        failures_before_down=timing.failures_before_down,
        family=timing.family,
        group=group,
        tags=tags,
        depends_on=tuple(dict.fromkeys(depends_on)),
        service=service,
        options=options,
        source=table.file,
    )


def _read_service(table: Table) -> str | None:
    """A check's optional ``service``: a name like a check's (it goes into heartbeats)."""
    if not table.has("service"):
        table.mark_read("service")
        return None
    service = table.string("service")
    if not is_valid_name(service):
        raise table.error("service", f"service name {NAME_RULE}, got {shown_name(service)}")
    return service


def _check_dependencies(checks: tuple[CheckConfig, ...], tables: list[Table]) -> None:
    """Every ``depends_on`` names a defined check, and no chain of them comes back."""
    names = {check.name for check in checks}
    by_name = dict(zip((check.name for check in checks), tables, strict=True))
    for check, table in zip(checks, tables, strict=True):
        for index, parent in enumerate(check.depends_on):
            if parent not in names:
                raise table.error(f"depends_on[{index}]", f"no check named {parent!r}")
    cycle = find_cycle({check.name: check.depends_on for check in checks})
    if cycle is not None:
        raise by_name[cycle[0]].error("depends_on", f"a dependency cycle: {' -> '.join(cycle)}")


def definition_line(file: str | Path, section: str, name: str) -> int | None:
    """The 1-based line where ``[section.name]`` is defined in ``file``, for messages.

    Recognises a ``[section.name]`` (or ``[section.name.sub]``) header, a ``name = ...``
    or ``name.key = ...`` line inside ``[section]``, and a top-level dotted
    ``section.name.key = ...`` line, with bare or quoted names. It reads text, not
    TOML, so it only serves to point an operator at a line; None when not found.
    """
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    word = f"(?:{re.escape(name)}|\"{re.escape(name)}\"|'{re.escape(name)}')"
    sect = re.escape(section)
    header = re.compile(rf"^\s*\[\s*{sect}\s*\.\s*{word}\s*(?:\]|\.)")
    in_section = re.compile(rf"^\s*{word}\s*(?:=|\.)")
    top_level = re.compile(rf"^\s*{sect}\s*\.\s*{word}\s*(?:=|\.)")
    any_header = re.compile(r"^\s*\[")
    section_header = re.compile(rf"^\s*\[\s*{sect}\s*\]")
    current: str | None = None  # None: top level; "section": inside [section]; "": elsewhere
    for number, text in enumerate(lines, start=1):
        if header.match(text):
            return number
        if any_header.match(text):
            current = section if section_header.match(text) else ""
            continue
        if current is None and top_level.match(text):
            return number
        if current == section and in_section.match(text):
            return number
    return None

