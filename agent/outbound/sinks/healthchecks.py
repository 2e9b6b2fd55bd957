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
``Created``; any other 2xx body (e.g. ``OK (rate limited)``) did not record the
ping. Hosted hc-ping.com answers a UUID it does not know with ``200 OK (not
found)`` rather than a 404: that is a refusal for good, like the 404.
"""

from __future__ import annotations

import httpx

from agent.common.names import is_uuid
from agent.config.destinations import DestinationConfig
from agent.outbound.sinks.base import USER_AGENT, Answer, CheckStatus, PingSink

RECORDED_BODIES = ("OK", "Created")
UNKNOWN_CHECK_BODY = "OK (not found)"


class HealthchecksSink(PingSink):
    """Pings for the agent and for each mapped check (``secret``: the ping key)."""

    def __init__(self, destination: DestinationConfig, ping_key: str | None) -> None:
        super().__init__(destination, ping_key)
        self.create = destination.create

    def ping_url(self, check: str, *, fail: bool = False) -> str:
        """The ping URL of a Healthchecks check named by UUID or slug."""
        if is_uuid(check):
            return f"{self.url}/{check}" + ("/fail" if fail else "")
        url = f"{self.url}/{self.secret}/{check}" + ("/fail" if fail else "")
        return url + ("?create=1" if self.create else "")

    def _ping(self, check: str, body: str, *, fail: bool = False) -> httpx.Request:
        return httpx.Request(
            "POST", self.ping_url(check, fail=fail), content=body.encode(),
            headers={"content-type": "text/plain; charset=utf-8", "user-agent": USER_AGENT})

    def agent_ping(self, monitor: str, summary: str) -> httpx.Request:
        """A success ping with the agent's summary as its body."""
        return self._ping(monitor, summary)

    def check_ping(self, monitor: str, status: CheckStatus) -> httpx.Request:
        """Success ping, or ``/fail`` when down, with the reason in the body."""
        return self._ping(monitor, f"{status.name} {status.summary()}", fail=status.failing)

    def not_recorded(self, answer: Answer) -> str | None:
        """Healthchecks says ``OK`` or ``Created`` when it recorded the ping."""
        body = answer.body.strip()
        if body in RECORDED_BODIES:
            return None
        return f"Healthchecks answered {answer.status} {body[:200]!r}, not OK/Created"

    def refused(self, answer: Answer) -> str | None:
        """``OK (not found)``: no check has this UUID (a 404 says it by its status)."""
        if 200 <= answer.status < 300 and answer.body.strip() == UNKNOWN_CHECK_BODY:
            return f"Healthchecks answered {answer.status} {UNKNOWN_CHECK_BODY!r}: no such check"
        return None
