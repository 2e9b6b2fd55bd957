"""The probe registry: check kind name → how to probe it and which options it takes.

Every probe has the same shape (``async def probe(target, *, timeout) -> Observation``)
and reports failure as a returned :class:`~agent.model.Observation`, never as an
exception. A probe knows nothing of scheduling, state or delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from agent.checks import (
    amqp,
    dns_query,
    expect,
    http,
    icmp,
    kafka,
    mongodb,
    mysql,
    ntp,
    postgres,
    redis,
    smtp,
    ssh,
    tcp,
    tls,
    udp,
)
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


PROBES: dict[str, ProbeKind] = {
    "tcp": ProbeKind(tcp.probe, bounds_own_timeout=True),
    "tls": ProbeKind(tls.probe, tls.read_options),
    "ssh": ProbeKind(ssh.probe),
    "smtp": ProbeKind(smtp.probe, smtp.read_options),
    "redis": ProbeKind(redis.probe, redis.read_options),
    "expect": ProbeKind(expect.probe, expect.read_options),
    "postgres": ProbeKind(postgres.probe, postgres.read_options),
    "mysql": ProbeKind(mysql.probe),
    "amqp": ProbeKind(amqp.probe, amqp.read_options),
    "mongodb": ProbeKind(mongodb.probe, mongodb.read_options),
    "kafka": ProbeKind(kafka.probe, kafka.read_options),
    "http": ProbeKind(http.probe, http.read_options),
    "dns": ProbeKind(dns_query.probe, dns_query.read_options, bounds_own_timeout=True,
                     default_port=dns_query.DEFAULT_PORT, transport="udp"),
    "udp": ProbeKind(udp.probe, udp.read_options, bounds_own_timeout=True, transport="udp"),
    "ntp": ProbeKind(ntp.probe, ntp.read_options, bounds_own_timeout=True,
                     default_port=ntp.DEFAULT_PORT, transport="udp"),
    "icmp": ProbeKind(icmp.probe, icmp.read_options, bounds_own_timeout=True,
                      transport="icmp"),
}
