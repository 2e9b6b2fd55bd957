"""The probe registry: check kind name → how to probe it and which options it takes.

Every probe has the same shape (``async def probe(target, *, timeout) -> Observation``)
and reports failure as a returned :class:`~agent.model.Observation`, never as an
exception. A probe knows nothing of scheduling, state or delivery.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from agent.checks.proxy import read_proxy
from agent.common.tables import Table
from agent.model import Observation, Target


class ProbeFn(Protocol):
    """The one signature every probe has."""

    async def __call__(self, target: Target, *, timeout: float) -> Observation: ...


def no_options(table: Table) -> Mapping[str, object]:
    """Options reader for kinds that take no settings of their own."""
    return {}


def with_proxy(
    read_options: Callable[[Table], Mapping[str, object]],
) -> Callable[[Table], Mapping[str, object]]:
    """The options reader of a TCP-based kind, plus its ``proxy`` key."""

    def read_options_and_proxy(table: Table) -> Mapping[str, object]:
        options = read_options(table)
        proxy_url = read_proxy(table)
        return options if proxy_url is None else {**options, "proxy": proxy_url}

    return read_options_and_proxy


@dataclass(frozen=True, slots=True)
class ProbeKind:
    """A registered kind of check.

    Attributes:
        probe: the probe function.
        read_options: reads and validates the kind's own keys from a check's table
            (it must mark every key it reads; the config loader rejects the rest).
        bounds_own_timeout: the probe provably ends by its timeout (every wait is
            under its deadline, and tests/faults runs it against hostile servers),
            so the scheduler need not arm a second timer around it.
        default_port: the port a check of this kind uses when it sets none;
            None: ``port`` is required.
        transport: what the probe speaks underneath: "tcp", "udp", or "icmp"
            (a host without a port). Every "tcp" kind takes a ``proxy`` key:
            its options reader is wrapped with :func:`with_proxy`.
    """

    probe: ProbeFn
    read_options: Callable[[Table], Mapping[str, object]] = no_options
    bounds_own_timeout: bool = False
    default_port: int | None = None
    transport: str = "tcp"

    def __post_init__(self) -> None:
        # Every kind that speaks over one TCP connection can go through a proxy.
        if self.transport == "tcp":
            object.__setattr__(self, "read_options", with_proxy(self.read_options))

    @property
    def has_port(self) -> bool:
        """Whether checks of this kind address a port (every kind but icmp)."""
        return self.transport != "icmp"


@dataclass(frozen=True, slots=True)
class _KindEntry:
    """Where a kind's code lives, and what is known of it without importing it.

    Attributes:
        module: the module holding ``probe`` (and ``read_options`` when it has one).
        has_options: the module defines ``read_options``.
        bounds_own_timeout, default_port, transport: as in :class:`ProbeKind`.
    """

    module: str
    has_options: bool = True
    bounds_own_timeout: bool = False
    default_port: int | None = None
    transport: str = "tcp"


# A probe module is imported on the first use of its kind (the config loader reading a
# check of that kind), not when this package is: a TCP-only agent then never loads the
# TLS, database or DNS client code, and ``heartwire check`` starts in a fraction of the
# time. The default ports are written here rather than read from the modules for the
# same reason (tests assert they match the modules' DEFAULT_PORT).
_KINDS: dict[str, _KindEntry] = {
    "tcp": _KindEntry("agent.checks.tcp", has_options=False, bounds_own_timeout=True),
    "tls": _KindEntry("agent.checks.tls"),
    "ssh": _KindEntry("agent.checks.ssh", has_options=False),
    "smtp": _KindEntry("agent.checks.smtp"),
    "redis": _KindEntry("agent.checks.redis"),
    "expect": _KindEntry("agent.checks.expect"),
    "postgres": _KindEntry("agent.checks.postgres"),
    "mysql": _KindEntry("agent.checks.mysql", has_options=False),
    "amqp": _KindEntry("agent.checks.amqp"),
    "mongodb": _KindEntry("agent.checks.mongodb"),
    "kafka": _KindEntry("agent.checks.kafka"),
    "http": _KindEntry("agent.checks.http"),
    "dns": _KindEntry("agent.checks.dns_query", bounds_own_timeout=True,
                      default_port=53, transport="udp"),
    "udp": _KindEntry("agent.checks.udp", bounds_own_timeout=True, transport="udp"),
    "ntp": _KindEntry("agent.checks.ntp", bounds_own_timeout=True,
                      default_port=123, transport="udp"),
    "icmp": _KindEntry("agent.checks.icmp", bounds_own_timeout=True, transport="icmp"),
}


class _Registry(Mapping[str, ProbeKind]):
    """Every kind's name, each :class:`ProbeKind` built (its module imported) on first use."""

    def __init__(self, kinds: Mapping[str, _KindEntry]) -> None:
        self._kinds = kinds
        self._loaded: dict[str, ProbeKind] = {}

    def __getitem__(self, name: str) -> ProbeKind:
        try:
            return self._loaded[name]
        except KeyError:
            pass
        entry = self._kinds[name]  # an unknown kind: KeyError, as from a dict
        module = importlib.import_module(entry.module)
        read_options = (cast(Callable[[Table], Mapping[str, object]], module.read_options)
                        if entry.has_options else no_options)
        kind = ProbeKind(cast(ProbeFn, module.probe), read_options,
                         bounds_own_timeout=entry.bounds_own_timeout,
                         default_port=entry.default_port, transport=entry.transport)
        self._loaded[name] = kind
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


PROBES: Mapping[str, ProbeKind] = _Registry(_KINDS)
