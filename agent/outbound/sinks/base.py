"""What every sink has in common: the interface and reading statuses from a message."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agent import __version__
from agent.common.wording import counted
from agent.config.destinations import DestinationConfig
from agent.outbound.messages import HEARTBEAT, STATE_CHANGE
from agent.outbound.spool import OutboxMessage

USER_AGENT = f"heartwire/{__version__}"


@dataclass(frozen=True, slots=True)
class Answer:
    """A destination's answer to one request, as much of it as the agent reads.

    Attributes:
        status: the HTTP status code.
        reason: the reason phrase (as sent: may be empty or hostile).
        headers: the response headers.
        body: at most the first few KiB of the body, decoded leniently; empty when
            there was none or it could not be read (a reset, corrupt compression).
        host: the host that answered, for messages.
    """

    status: int
    reason: str
    headers: httpx.Headers
    body: str
    host: str


class Sink(Protocol):
    """How one destination protocol is spoken."""

    @property
    def types(self) -> Collection[str]:
        """The message types this destination takes; others are passed over."""
        ...

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        """The requests that deliver ``message`` (none: nothing to send for it)."""
        ...

    def not_recorded(self, answer: Answer) -> str | None:
        """For a 2xx answer: why it did not record the message, or None if it did."""
        ...

    def refused(self, answer: Answer) -> str | None:
        """Why the destination refused the request for good, whatever the status
        says (a service that answers "no such monitor" with 200 or 500), or None."""
        ...


@dataclass(frozen=True, slots=True)
class CheckStatus:
    """One check's status as a message reports it.

    Attributes:
        name: the check's name.
        status: up, degraded, down or unknown.
        reason: the observation's reason word, or None.
        latency_ms: the handshake time, or None.
        detail: the OS or server message, or None.
    """

    name: str
    status: str
    reason: str | None
    latency_ms: float | None
    detail: str | None = None

    @property
    def failing(self) -> bool:
        """Whether third-party services should be told "down"."""
        return self.status == "down"

    def summary(self) -> str:
        """One short line: ``down: refused (Connection refused), 0.4 ms``."""
        text = f"{self.status}: {self.reason or '-'}"
        if self.detail:
            text += f" ({self.detail})"
        if self.latency_ms is not None:
            text += f", {self.latency_ms:.1f} ms"
        return text


def statuses(envelope: Mapping[str, Any]) -> list[CheckStatus]:
    """The check statuses a heartbeat or state change carries (known statuses only)."""
    data = envelope["data"]
    if envelope["type"] == HEARTBEAT:
        found = [CheckStatus(c["name"], c["status"], c.get("reason"), c.get("latency_ms"))
                 for c in data["checks"]]
    elif envelope["type"] == STATE_CHANGE:
        seen = data["observation"]
        found = [CheckStatus(data["check"], data["current"], seen.get("reason"),
                             seen.get("latency_ms"), seen.get("detail"))]
    else:
        found = []
    return [status for status in found if status.status != "unknown"]


def agent_summary(envelope: Mapping[str, Any]) -> str:
    """``dc1-agent: 12 checks, 11 up, 1 down`` for a heartbeat."""
    counts: dict[str, int] = {}
    for check in envelope["data"]["checks"]:
        counts[check["status"]] = counts.get(check["status"], 0) + 1
    parts = [f"{count} {status}" for status, count in sorted(counts.items())]
    total = len(envelope["data"]["checks"])
    summary = f"{envelope['agent']}: {counted(total, 'check')}"
    return summary + (", " + ", ".join(parts) if parts else "")


class PingSink:
    """Services that take one status per request (Healthchecks, Uptime Kuma, ...).

    The agent's heartbeat pings its own monitor (``check`` in the config), and every
    check mapped in ``check_monitor_tokens`` pings its own monitor on each heartbeat (so the
    service's own timeout applies) and at once on a state change. Subclasses say
    how one ping looks.
    """

    types = (HEARTBEAT, STATE_CHANGE)

    def __init__(self, destination: DestinationConfig, secret: str | None) -> None:
        self.url = destination.url
        self.secret = secret
        self.agent_monitor = destination.monitor_token
        self.check_monitor_tokens = dict(destination.check_monitor_tokens)

    def agent_ping(self, monitor: str, summary: str) -> httpx.Request:
        """The request that says "the agent is alive" (``summary``: its checks)."""
        raise NotImplementedError

    def check_ping(self, monitor: str, status: CheckStatus) -> httpx.Request:
        """The request that reports one check's status."""
        raise NotImplementedError

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        """The agent's ping (heartbeats only), then one ping per mapped check."""
        envelope = message.envelope()
        pings = []
        if envelope["type"] == HEARTBEAT and self.agent_monitor is not None:
            pings.append(self.agent_ping(self.agent_monitor, agent_summary(envelope)))
        pings += [self.check_ping(self.check_monitor_tokens[status.name], status)
                  for status in statuses(envelope) if status.name in self.check_monitor_tokens]
        return pings

    def not_recorded(self, answer: Answer) -> str | None:
        """Any 2xx records the ping unless a subclass knows better."""
        return None

    def refused(self, answer: Answer) -> str | None:
        """The status says it unless a subclass knows better."""
        return None
