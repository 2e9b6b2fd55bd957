"""``GET /metrics``: the receiver's view in the Prometheus text format (version 0.0.4).

Per check (labels ``agent``, ``check``, ``group``):

* ``heartwire_check_up``: 1 while the shown status is ``up`` or ``degraded``, else 0
  (a silent agent's checks show ``unknown``: 0);
* ``heartwire_check_status{status=...}``: 1 for the shown status, 0 for the others;
* ``heartwire_check_maintenance``: 1 while a maintenance window holds its alerts;
* ``heartwire_check_latency_seconds``: the latest latency (absent when none);
* ``heartwire_check_uptime_ratio{window="24h"|"7d"|"30d"|"90d"}``: uptime as a
  ratio, time-weighted (history.py; absent while nothing is known).

Per service (label ``service``; services.py): ``heartwire_service_up``, 1 while the
service is ``up`` or ``degraded`` (fewer than a quorum see it down), else 0 (down, or
``unknown`` while no member reports).

Per agent: ``heartwire_agent_last_heartbeat_timestamp_seconds`` and
``heartwire_agent_silent``. The receiver's own: ``heartwire_messages_total{outcome}``
(``stored``, ``duplicate`` or the refusal's error code) and the
``heartwire_ingest_duration_seconds`` histogram (verifying and storing one message).
The counters start at zero when the receiver starts, as Prometheus expects.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from agent.central.history import WINDOWS
from agent.central.ingest import Answer
from agent.central.views import Views
from agent.outbound.messages import STATUSES

CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1.0, 2.5)


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, object]) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in pairs.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


class ReceiverCounters:
    """Messages by outcome and the ingest duration histogram, since the receiver started."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}
        self.duration_counts = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.duration_sum_s = 0.0

    def count(self, answer: Answer, seconds: float) -> None:
        """Counts one answered ingest request and how long it took."""
        outcome = answer.body.get("error") or answer.body.get("status") or str(answer.status)
        key = str(outcome)
        self.messages[key] = self.messages.get(key, 0) + 1
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        self.duration_sum_s += seconds


class Metrics:
    """Renders ``/metrics``.

    Args:
        views: the shown status and uptime of checks (silence applied), the agents.
        counters: the receiver's own counters.
        wall_clock: seconds since the epoch.
    """

    def __init__(self, views: Views, counters: ReceiverCounters,
                 wall_clock: Callable[[], float]) -> None:
        self.views = views
        self.counters = counters
        self.wall_clock = wall_clock

    def render(self, now: float | None = None) -> str:
        """The whole exposition as of ``now`` (default: the clock): every check, since a
        scrape that missed some would make their series vanish. Blocking (it reads the
        store): the app runs it in its reader thread."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str,
                   samples: Iterable[tuple[str, Mapping[str, object], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for suffix, labels, value in samples:
                lines.append(f"{name}{suffix}{_labels(labels) if labels else ''} {_number(value)}")

        now = self.wall_clock() if now is None else now
        checks = self.views.checks(now)  # shown statuses and uptime, silence applied

        def subject(row: Mapping[str, object]) -> dict[str, object]:
            return {"agent": row["agent"], "check": row["name"], "group": row["group"] or ""}

        family("heartwire_check_up", "gauge",
               "1 while the check's shown status is up or degraded, else 0.",
               (("", subject(row), 1.0 if row["status"] in ("up", "degraded") else 0.0)
                for row in checks))
        family("heartwire_check_status", "gauge",
               "1 for the check's shown status, 0 for the others.",
               (("", {**subject(row), "status": status}, 1.0 if row["status"] == status else 0.0)
                for row in checks for status in STATUSES))
        family("heartwire_check_maintenance", "gauge",
               "1 while a maintenance window holds the check's alerts.",
               (("", subject(row), 1.0 if row["maintenance"] else 0.0) for row in checks))
        family("heartwire_check_latency_seconds", "gauge",
               "The check's latest latency.",
               (("", subject(row), float(row["latency_ms"]) / 1000.0)
                for row in checks if row["latency_ms"] is not None))
        uptime_samples = []
        for row in checks:
            for window in WINDOWS:
                value = row["uptime"][window]
                if value is not None:
                    uptime_samples.append(("", {**subject(row), "window": window},
                                           value / 100.0))
        family("heartwire_check_uptime_ratio", "gauge",
               "Time-weighted uptime of the window (up and degraded over known time).",
               uptime_samples)

        services = self.views.services_list(now)["services"]
        family("heartwire_service_up", "gauge",
               "1 while fewer than a quorum of the agents reporting the service see it down "
               "(up or degraded), else 0.",
               (("", {"service": service["name"]},
                 1.0 if service["status"] in ("up", "degraded") else 0.0)
                for service in services))

        agents = self.views.storage.agents()
        family("heartwire_agent_last_heartbeat_timestamp_seconds", "gauge",
               "When the agent's last heartbeat was received.",
               (("", {"agent": agent.id}, agent.last_heartbeat_at)
                for agent in agents if agent.last_heartbeat_at is not None))
        silent = self.views.incidents.is_silent
        family("heartwire_agent_silent", "gauge",
               "1 while the agent is past its heartbeat interval plus grace.",
               (("", {"agent": agent.id},
                 1.0 if silent(agent.id, agent.last_heartbeat_at, agent.interval_s, now) else 0.0)
                for agent in agents))

        # Copies: the event loop counts on while this thread renders.
        messages = self.counters.messages.copy()
        duration_counts = list(self.counters.duration_counts)
        duration_sum_s = self.counters.duration_sum_s
        family("heartwire_messages_total", "counter",
               "Ingest requests answered, by outcome (stored, duplicate or the error code).",
               (("", {"outcome": outcome}, float(count))
                for outcome, count in sorted(messages.items())))
        cumulative = 0
        buckets: list[tuple[str, Mapping[str, object], float]] = []
        for bound, count in zip((*DURATION_BUCKETS_S, float("inf")), duration_counts,
                                strict=True):
            cumulative += count
            buckets.append(("_bucket", {"le": "+Inf" if bound == float("inf") else repr(bound)},
                            float(cumulative)))
        buckets.append(("_sum", {}, duration_sum_s))
        buckets.append(("_count", {}, float(cumulative)))
        family("heartwire_ingest_duration_seconds", "histogram",
               "Time to verify and apply one ingest request.", buckets)
        return "\n".join(lines) + "\n"
