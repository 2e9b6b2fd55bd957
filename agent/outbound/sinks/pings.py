"""Push-style monitors that take one status per request: Uptime Kuma, Gatus, Better Stack.

Each maps the agent's heartbeat to its own monitor (when configured) and each
mapped heartwire check to a monitor of its own, pinged on every heartbeat and at
once on a state change.

* Uptime Kuma push monitors: ``GET <url>/api/push/<token>?status=up|down&msg=&ping=``;
  Kuma answers ``{"ok":true}`` when it recorded the beat, and
  ``{"ok":false,"msg":"Monitor not found or not active."}`` for a wrong token or a
  paused monitor (with 404 in 1.x, 500 in 2.x): refused for good either way.
* Gatus external endpoints: ``POST <url>/api/v1/endpoints/<key>/external?success=
  &error=&duration=`` with ``Authorization: Bearer <token>``.
* Better Stack heartbeats: ``POST <heartbeat-url>``, ``POST <heartbeat-url>/fail`` when down.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx

from agent.config.destinations import DestinationConfig
from agent.outbound.sinks.base import USER_AGENT, Answer, CheckStatus, PingSink

_HEADERS = {"user-agent": USER_AGENT}
KUMA_NO_MONITOR = "Monitor not found or not active."


class UptimeKumaSink(PingSink):
    """Uptime Kuma push monitors (``push_token`` for the agent, ``push_tokens`` per check)."""

    def _push(self, token: str, status: str, msg: str, latency_ms: float | None) -> httpx.Request:
        params = {"status": status, "msg": msg,
                  "ping": "" if latency_ms is None else f"{latency_ms:.3f}"}
        return httpx.Request("GET", f"{self.url}/api/push/{quote(token, safe='')}",
                             params=params, headers=_HEADERS)

    def agent_ping(self, monitor: str, summary: str) -> httpx.Request:
        """``status=up`` with the agent's summary as the message."""
        return self._push(monitor, "up", summary, None)

    def check_ping(self, monitor: str, status: CheckStatus) -> httpx.Request:
        """``status=up|down``, the reason as the message, the latency as ``ping``."""
        return self._push(monitor, "down" if status.failing else "up", status.summary(),
                          status.latency_ms)

    def not_recorded(self, answer: Answer) -> str | None:
        """Kuma answers ``{"ok":true}`` when it stored the beat."""
        try:
            said = json.loads(answer.body)
        except ValueError:
            said = None
        if isinstance(said, dict) and said.get("ok") is True:
            return None
        return f"Uptime Kuma answered {answer.status} {answer.body[:200]!r}"

    def refused(self, answer: Answer) -> str | None:
        """A wrong push token or a paused monitor, whatever the status."""
        try:
            said = json.loads(answer.body)
        except ValueError:
            return None
        if isinstance(said, dict) and said.get("ok") is False and \
                said.get("msg") == KUMA_NO_MONITOR:
            return f"Uptime Kuma answered {answer.status}: {KUMA_NO_MONITOR}"
        return None


class GatusSink(PingSink):
    """Gatus external endpoints (``key`` for the agent, ``keys`` per check)."""

    def _result(self, key: str, params: dict[str, str]) -> httpx.Request:
        return httpx.Request(
            "POST", f"{self.url}/api/v1/endpoints/{quote(key, safe='')}/external",
            params=params, headers={**_HEADERS, "authorization": f"Bearer {self.secret}"})

    def agent_ping(self, monitor: str, summary: str) -> httpx.Request:
        """``success=true`` for the agent's endpoint."""
        return self._result(monitor, {"success": "true"})

    def check_ping(self, monitor: str, status: CheckStatus) -> httpx.Request:
        """``success``, the reason as ``error`` when down, the latency as ``duration``."""
        params = {"success": "false" if status.failing else "true"}
        if status.failing:
            params["error"] = status.summary()
        if status.latency_ms is not None:
            params["duration"] = f"{max(1, round(status.latency_ms))}ms"
        return self._result(monitor, params)


class BetterStackSink(PingSink):
    """Better Stack heartbeats (``url`` for the agent, ``check_urls`` per check)."""

    def __init__(self, destination: DestinationConfig, secret: str | None) -> None:
        super().__init__(destination, secret)
        self.agent_monitor = destination.url  # the agent's heartbeat URL

    def _beat(self, url: str, body: str) -> httpx.Request:
        return httpx.Request("POST", url, content=body.encode(),
                             headers={**_HEADERS, "content-type": "text/plain; charset=utf-8"})

    def agent_ping(self, monitor: str, summary: str) -> httpx.Request:
        """A POST to the agent's heartbeat URL."""
        return self._beat(monitor, summary)

    def check_ping(self, monitor: str, status: CheckStatus) -> httpx.Request:
        """A POST to the check's heartbeat URL, ``/fail`` when down."""
        return self._beat(f"{monitor}/fail" if status.failing else monitor, status.summary())
