"""Healthchecks.io (hosted or self-hosted) through its ping API.

* The agent's heartbeat → a success ping of the agent's own check (``check``).
* Each heartwire check mapped under ``checks`` → a ping of its own Healthchecks
  check on every heartbeat (so Healthchecks' period and grace apply) and at once on
  a state change: ``up``/``degraded`` → success ping, ``down`` → ``/fail``.
* A check is named by UUID (``<base>/<uuid>``) or by slug with the project's ping
  key (``<base>/<ping-key>/<slug>``, ``?create=1`` when ``create = true``).
* Every ping is a ``POST`` whose text body (reason, detail, latency) shows in the
  check's event log.

Healthchecks answers ``200 OK`` / ``201 Created`` with the body ``OK`` or
``Created``; any other 2xx body (e.g. ``OK (not found)``) did not record the ping.
"""

from __future__ import annotations

import re

import httpx

from agent.destinations import DestinationConfig
from agent.sinks.base import USER_AGENT, CheckStatus, agent_summary, statuses
from agent.spool import HEARTBEAT, STATE_CHANGE, OutboxMessage

_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
RECORDED_BODIES = ("OK", "Created")


class HealthchecksSink:
    """Pings for the agent and for each mapped check."""

    types = (HEARTBEAT, STATE_CHANGE)

    def __init__(self, destination: DestinationConfig, ping_key: str | None) -> None:
        self.base = destination.url
        self.ping_key = ping_key
        self.agent_check = destination.check
        self.check_names = dict(destination.check_names)
        self.create = destination.create

    def ping_url(self, check: str, *, fail: bool = False) -> str:
        """The ping URL of a Healthchecks check named by UUID or slug."""
        if _UUID.match(check):
            url = f"{self.base}/{check}"
        else:
            url = f"{self.base}/{self.ping_key}/{check}"
        if fail:
            url += "/fail"
        if self.create and not _UUID.match(check):
            url += "?create=1"
        return url

    def _ping(self, check: str, body: str, *, fail: bool = False) -> httpx.Request:
        return httpx.Request(
            "POST", self.ping_url(check, fail=fail), content=body.encode(),
            headers={"content-type": "text/plain; charset=utf-8", "user-agent": USER_AGENT})

    def _check_ping(self, status: CheckStatus) -> httpx.Request | None:
        slug = self.check_names.get(status.name)
        if slug is None:
            return None
        return self._ping(slug, f"{status.name} {status.summary()}", fail=status.failing)

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        """The agent's ping (heartbeats) and one ping per mapped check."""
        envelope = message.envelope()
        pings = []
        if envelope["type"] == HEARTBEAT and self.agent_check:
            pings.append(self._ping(self.agent_check, agent_summary(envelope)))
        for status in statuses(envelope):
            request = self._check_ping(status)
            if request is not None:
                pings.append(request)
        return pings

    def not_recorded(self, response: httpx.Response) -> str | None:
        """Healthchecks says ``OK`` or ``Created`` when it recorded the ping."""
        body = response.text.strip()
        if body in RECORDED_BODIES:
            return None
        return f"Healthchecks answered {response.status_code} {body[:200]!r}, not OK/Created"
