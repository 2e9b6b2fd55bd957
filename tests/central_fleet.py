"""A small fleet with two days of history, fed through the receiver's real ingest.

Three agents in four groups: a database and an API that stay up with varying
latency, a cache that was down for two hours yesterday and is down again now,
a degraded mail relay, and an agent (``edge1``) that went silent ten minutes ago.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.central.config import AgentSettings, CentralConfig
from agent.central.server import Central
from agent.common.timefmt import rfc3339
from tests.central_support import AGENT_KEY, BASE_TIME, Messages, make_config, signed

HOUR = 3600.0
HOURS = 48
END = BASE_TIME + HOURS * HOUR  # "now" once the fleet is built

# check -> (agent, group, host, port, typical latency in ms)
CHECKS: dict[str, tuple[str, str | None, str, int, float]] = {
    "postgres-primary": ("dc1", "Databases", "10.0.0.5", 5432, 0.8),
    "redis-sessions": ("dc1", "Caches", "10.0.0.6", 6379, 0.3),
    "api-gateway": ("dc1", "Web", "10.0.0.7", 443, 24.0),
    "postgres-replica": ("dc2", "Databases", "10.1.0.5", 5432, 1.6),
    "smtp-relay": ("dc2", "Mail", "10.1.0.9", 587, 140.0),
    "vpn-gateway": ("edge1", "Network", "192.0.2.1", 1194, 12.0),
    "<b>odd</b>": ("dc2", None, "10.1.0.10", 22, 2.0),
}


class Clock:
    """A wall clock moved by hand."""

    def __init__(self, now: float = BASE_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fleet_config(tmp_path: Path) -> CentralConfig:
    """The test config with the three agents, all signing with the test key."""
    config = make_config(tmp_path)
    agents = {agent: AgentSettings(agent, (AGENT_KEY.public_key(),))
              for agent in ("dc1", "dc2", "edge1")}
    return replace(config, agents=MappingProxyType(agents))


def _status(check: str, moment: float) -> str:
    hour = (moment - BASE_TIME) / HOUR
    if check == "redis-sessions" and (20 <= hour < 22 or hour >= HOURS - 0.3):
        return "down"
    if check == "smtp-relay" and hour >= HOURS - 3:
        return "degraded"
    return "up"


def _latency(check: str, moment: float) -> float | None:
    if _status(check, moment) == "down":
        return None
    typical = CHECKS[check][4]
    wave = 1.0 + 0.5 * math.sin((moment - BASE_TIME) / HOUR / 3.0)
    return round(typical * wave * (3.0 if _status(check, moment) == "degraded" else 1.0), 3)


def _observation(check: str, moment: float) -> dict[str, Any]:
    status = _status(check, moment)
    return {"check": check, "status": status,
            "reason": {"up": "open", "down": "refused", "degraded": "slow"}[status],
            "latency_ms": _latency(check, moment), "dns_ms": None, "address": None,
            "detail": None, "consecutive_failures": 0, "at": rfc3339(moment)}


def _send(central: Central, clock: Clock, message: dict[str, Any]) -> None:
    headers, body = signed(message, timestamp=clock.now)
    answer = central.ingest.handle(headers, body)
    assert answer.status == 200, answer.body


def build_fleet(central: Central, clock: Clock) -> None:
    """Feeds two days of observations every 6 minutes, a heartbeat per agent each
    hour, and runs the watcher's sweep as the hours pass; leaves the clock at END."""
    builders = {agent: Messages(agent) for agent in ("dc1", "dc2", "edge1")}
    for hour in range(HOURS):
        for step in range(10):
            clock.now = BASE_TIME + hour * HOUR + step * 360.0 + 30.0
            silent_from = END - 600.0
            for agent, messages in builders.items():
                if agent == "edge1" and clock.now > silent_from:
                    continue
                names = [name for name, spec in CHECKS.items() if spec[0] == agent]
                observations = [_observation(name, clock.now - 1.0) for name in names]
                _send(central, clock, messages.envelope("results", {"results": observations}))
                last = hour == HOURS - 1
                if step in (0, 9) or (agent == "edge1" and last):
                    checks = [{
                        "name": name, "status": item["status"], "reason": item["reason"],
                        "latency_ms": item["latency_ms"], "at": item["at"],
                        "group": CHECKS[name][1], "host": CHECKS[name][2],
                        "port": CHECKS[name][3],
                    } for name, item in zip(names, observations, strict=True)]
                    # edge1 reports every 6 minutes at 30 s intervals in its last hour.
                    interval = 30.0 if agent == "edge1" and last else 2 * HOUR
                    _send(central, clock, messages.heartbeat(checks, interval_s=interval))
            central.watch_once()
    clock.now = END
    central.watch_once()
