"""Plain values that flow from the probes to the tracker and beyond.

All are frozen dataclasses: once made, nothing changes them, so they can be shared
between tasks and queued without copying.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# A fact a probe learned about the service (TLS version, server banner, ...).
FactValue = str | int | float | bool | None

_NO_FACTS: Mapping[str, FactValue] = MappingProxyType({})


class Outcome(enum.StrEnum):
    """What one probe saw, before any confirmation logic."""

    OK = "ok"  # the service answered as expected
    DEGRADED = "degraded"  # the service answered but says it is impaired
    FAILED = "failed"  # no usable answer


class Status(enum.StrEnum):
    """The status the agent reports for a check."""

    UNKNOWN = "unknown"  # no status confirmed yet (just started)
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class Reason(enum.StrEnum):
    """Why an observation came out as it did: the TCP vocabulary.

    Protocol probes add their own reasons in the service's terms (``auth_required``,
    ``starting_up``, ...); a ``reason`` field is therefore a plain string.
    """

    OPEN = "open"  # the handshake completed
    REFUSED = "refused"  # the host answered with a reset: nothing listens there
    TIMEOUT = "timeout"  # no answer before the deadline
    DNS = "dns"  # the name did not resolve
    UNREACHABLE = "unreachable"  # no route, network or host unreachable
    ERROR = "error"  # anything else; the OS message is in ``detail``


FAMILIES = ("any", "ipv4", "ipv6")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a probe connects and how.

    Attributes:
        host: a hostname or an IP literal.
        port: the TCP port.
        family: "any", "ipv4" or "ipv6": which address families may be used.
        options: kind-specific settings, already validated by the probe's module.
    """

    host: str
    port: int
    family: str = "any"
    options: Mapping[str, object] = field(default_factory=lambda: _NO_FACTS)


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of one probe run.

    Attributes:
        outcome: ok, degraded or failed.
        reason: one word from the vocabulary (see :class:`Reason`).
        latency_ms: the TCP handshake time, or None when no connection was made.
        dns_ms: the name resolution time, or None for an IP literal.
        address: the IP address actually connected to (or last tried), or None.
        detail: the OS or server message behind a failure, or None.
        facts: what a protocol probe learned (versions, expiry, ...).
    """

    outcome: Outcome
    reason: str
    latency_ms: float | None = None
    dns_ms: float | None = None
    address: str | None = None
    detail: str | None = None
    facts: Mapping[str, FactValue] = field(default_factory=lambda: _NO_FACTS)


@dataclass(frozen=True, slots=True)
class Result:
    """An observation of a named check with the status the tracker gave it.

    Attributes:
        check: the check's name.
        status: the status after this observation.
        observation: what the probe saw.
        consecutive_failures: failed observations in a row, this one included.
        at: wall-clock time of the probe's start, in seconds since the epoch.
    """

    check: str
    status: Status
    observation: Observation
    consecutive_failures: int
    at: float


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of a path trace.

    Attributes:
        hop: the probe's TTL (1 is the first router).
        address: who answered that probe, or None when nobody did.
        rtt_ms: the round trip of that answer, or None.
    """

    hop: int
    address: str | None
    rtt_ms: float | None


# How a path trace ended (see agent/checks/tracepath.py).
PATH_ENDS = ("reached", "unreachable", "no_answer", "error")


@dataclass(frozen=True, slots=True)
class NetworkPath:
    """The route towards a target as a short trace saw it when the check went down.

    Attributes:
        target: the address traced.
        hops: the hops from the first to the last one that answered (or the end).
        end: "reached" (the target answered), "unreachable" (a router said so),
            "no_answer" (nothing answered beyond the last hop) or "error".
        detail: what the last answer said ("Network is unreachable"), or None.
    """

    target: str
    hops: tuple[Hop, ...]
    end: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A check's status flipped; ``result`` is the observation that flipped it.

    ``path`` is the route to the target, traced when the check turned down.
    """

    check: str
    previous: Status
    current: Status
    result: Result
    path: NetworkPath | None = None
