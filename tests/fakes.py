"""Fake probes for scheduler tests: scripted outcomes on trio's (mock) clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from agent.checks import ProbeKind
from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Reason, Target

OPEN = Observation(Outcome.OK, Reason.OPEN, latency_ms=1.0, address="192.0.2.1")
REFUSED = Observation(Outcome.FAILED, Reason.REFUSED, detail="Connection refused")


def make_check(name: str = "db", **overrides: object) -> CheckConfig:
    """A CheckConfig with test-friendly defaults."""
    settings: dict[str, object] = {
        "host": f"{name}.test",
        "port": 5432,
        "interval_s": 10.0,
        "timeout_s": 2.0,
    }
    settings.update(overrides)
    return CheckConfig(name=name, **settings)  # type: ignore[arg-type]


@dataclass
class ScriptedProbe:
    """Answers each host with its scripted observations in turn (then the last one
    again), taking ``duration_s`` of (virtual) time per run."""

    scripts: dict[str, list[Observation]] = field(default_factory=dict)
    duration_s: float = 0.0
    starts: list[tuple[float, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def script(self, host: str, observations: Iterable[Observation]) -> None:
        self.scripts[host] = list(observations)

    async def __call__(self, target: Target, *, timeout: float) -> Observation:
        self.starts.append((trio.current_time(), target.host))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.sleep(self.duration_s)
        finally:
            self.in_flight -= 1
        script = self.scripts.get(target.host, [OPEN])
        return script.pop(0) if len(script) > 1 else script[0]

    def registry(self) -> dict[str, ProbeKind]:
        return {"tcp": ProbeKind(self)}

    def start_times(self, host: str) -> list[float]:
        return [at for at, started_host in self.starts if started_host == host]
