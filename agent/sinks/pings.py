"""Push-style monitors that take one status per request: Uptime Kuma, Gatus, Better Stack.

Each maps the agent's heartbeat to its own monitor (when configured) and each
mapped heartwire check to a monitor of its own, pinged on every heartbeat and at
once on a state change.

* Uptime Kuma push monitors: ``GET <url>/api/push/<token>?status=up|down&msg=&ping=``;
  Kuma answers ``{"ok":true}`` when it recorded the beat.
* Gatus external endpoints: ``POST <url>/api/v1/endpoints/<key>/external?success=
  &error=&duration=`` with ``Authorization: Bearer <token>``.
* Better Stack heartbeats: ``POST <heartbeat-url>``, ``POST <heartbeat-url>/fail`` when down.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx

from agent.destinations import DestinationConfig
from agent.sinks.base import USER_AGENT, CheckStatus, agent_summary, statuses
from agent.spool import HEARTBEAT, STATE_CHANGE, OutboxMessage

_HEADERS = {"user-agent": USER_AGENT}


class _PingSink:
    """Shared mapping: agent heartbeat → own monitor; mapped checks → theirs."""

    types = (HEARTBEAT, STATE_CHANGE)

    def __init__(self, destination: DestinationConfig, secret: str | None) -> None:
        self.url = destination.url
        self.secret = secret
        self.agent_monitor = destination.check
        self.check_names = dict(destination.check_names)

    def _request(self, monitor: str, status: CheckStatus) -> httpx.Request:
        raise NotImplementedError

    def _agent_request(self, summary: str) -> httpx.Request | None:
        if self.agent_monitor is None:
            return None
        return self._request(self.agent_monitor, CheckStatus("agent", "up", summary, None))

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        """The agent's beat (heartbeats) and one beat per mapped check."""
        envelope = message.envelope()
        found: list[httpx.Request | None] = []
        if envelope["type"] == HEARTBEAT:
            found.append(self._agent_request(agent_summary(envelope)))
        found += [self._request(self.check_names[status.name], status)
                  for status in statuses(envelope) if status.name in self.check_names]
        return [request for request in found if request is not None]

    def not_recorded(self, response: httpx.Response) -> str | None:
        """Any 2xx records the beat unless a subclass knows better."""
        return None


class UptimeKumaSink(_PingSink):
    """Uptime Kuma push monitors (``push_token`` for the agent, ``push_tokens`` per check)."""

    def _request(self, monitor: str, status: CheckStatus) -> httpx.Request:
        params: dict[str, str] = {
            "status": "down" if status.failing else "up",
            "msg": status.reason if status.name == "agent" and status.reason
            else status.summary(),
            "ping": "" if status.latency_ms is None else f"{status.latency_ms:.3f}",
        }
        return httpx.Request("GET", f"{self.url}/api/push/{quote(monitor, safe='')}",
                             params=params, headers=_HEADERS)

    def not_recorded(self, response: httpx.Response) -> str | None:
        """Kuma answers ``{"ok":true}`` when it stored the beat."""
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("ok") is True:
            return None
        return f"Uptime Kuma answered {response.status_code} {response.text[:200]!r}"


class GatusSink(_PingSink):
    """Gatus external endpoints (``key`` for the agent, ``keys`` per check)."""

    def _request(self, monitor: str, status: CheckStatus) -> httpx.Request:
        params = {"success": "false" if status.failing else "true"}
        if status.failing:
            params["error"] = status.summary()
        if status.latency_ms is not None:
            params["duration"] = f"{max(1, round(status.latency_ms))}ms"
        return httpx.Request(
            "POST", f"{self.url}/api/v1/endpoints/{quote(monitor, safe='')}/external",
            params=params, headers={**_HEADERS, "authorization": f"Bearer {self.secret}"})


class BetterStackSink(_PingSink):
    """Better Stack heartbeats (``url`` for the agent, ``check_urls`` per check)."""

    def __init__(self, destination: DestinationConfig, secret: str | None) -> None:
        super().__init__(destination, secret)
        self.agent_monitor = destination.url  # the agent's heartbeat URL

    def _request(self, monitor: str, status: CheckStatus) -> httpx.Request:
        url = f"{monitor}/fail" if status.failing else monitor
        return httpx.Request("POST", url, content=status.summary().encode(),
                             headers={**_HEADERS, "content-type": "text/plain; charset=utf-8"})
