"""``GET /api/v1/checks/<agent>/<check>/history?since=&until=&step=``: one check's points.

Parameters (each at most once; anything else is refused):

* ``since``, ``until``: RFC 3339 times (``2026-01-01T00:00:00Z``) or seconds since
  the epoch; default the last 24 hours. ``until - since`` is at most the rollup
  retention.
* ``step``: ``raw`` (every stored observation, at most ``MAX_POINTS``; more sets
  ``truncated`` and ``next_since``) or a whole number of hours (``1h``, ``6h``,
  ``1d``): hourly rollups merged per step, at most ``MAX_POINTS`` steps. Default:
  ``raw`` up to 24 hours, ``1h`` beyond.

A bad parameter is a 400 with ``{"error": "bad_parameter", "message": ...}``; an
unknown check a 404. Each answer also lists the status changes in the range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from agent.central.history import HOUR, History, floor_to, parse_time
from agent.central.history_store import Rollup
from agent.central.latency_histogram import merge, quantiles
from agent.central.storage import Storage
from agent.common.tables import parse_duration
from agent.common.timefmt import rfc3339

MAX_POINTS: Final = 10_000
MAX_CHANGES: Final = 1_000
MAX_QUERY_BYTES: Final = 1024
DEFAULT_SPAN_S: Final = 86400.0
PARAMETERS: Final = ("since", "until", "step")
_EPOCH: Final = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?$")


class BadParameter(ValueError):
    """A query parameter that cannot be used; the message is the one-line answer."""


@dataclass(frozen=True, slots=True)
class Query:
    """A validated history query."""

    since: float
    until: float
    step_s: int | None  # None: raw


def _time(name: str, text: str) -> float:
    if _EPOCH.match(text):
        return float(text)
    moment = parse_time(text.replace(" ", "+"))  # a '+' in a query string reads as a space
    if moment is None:
        raise BadParameter(f"{name} must be an RFC 3339 time with a zone "
                           f"(2026-01-01T00:00:00Z) or seconds since the epoch")
    return moment


def parse_query(query_string: bytes, now: float, max_span_s: float) -> Query:
    """Validates the query string.

    Raises:
        BadParameter: naming the first parameter that is wrong.
    """
    if len(query_string) > MAX_QUERY_BYTES:
        raise BadParameter(f"the query string exceeds {MAX_QUERY_BYTES} bytes")
    try:
        text = query_string.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=len(PARAMETERS))
    except (UnicodeDecodeError, ValueError):
        raise BadParameter(f"the query string is malformed (expected "
                           f"{', '.join(PARAMETERS)}, each at most once)") from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            raise BadParameter(f"unknown parameter {name[:32]!r} "
                               f"(expected {', '.join(PARAMETERS)})")
        if name in given:
            raise BadParameter(f"{name} is given twice")
        given[name] = value
    until = _time("until", given["until"]) if "until" in given else now
    since = _time("since", given["since"]) if "since" in given else until - DEFAULT_SPAN_S
    if not since < until:
        raise BadParameter("since must be before until")
    if until - since > max_span_s:
        raise BadParameter(f"until - since must be at most {max_span_s / 86400:g} days "
                           "(the rollup retention)")
    step = given.get("step", "raw" if until - since <= DEFAULT_SPAN_S else "1h")
    if step == "raw":
        return Query(since, until, None)
    try:
        step_s = parse_duration(step)
    except ValueError:
        raise BadParameter('step must be "raw" or a whole number of hours ("1h", "6h", '
                           '"1d")') from None
    if step_s < HOUR or step_s % HOUR:
        raise BadParameter('step must be "raw" or a whole number of hours ("1h", "6h", "1d")')
    if (until - since) / step_s > MAX_POINTS:
        raise BadParameter(f"(until - since) / step must be at most {MAX_POINTS} points")
    return Query(since, until, int(step_s))


@dataclass(frozen=True, slots=True)
class RolledUp:
    """Hourly rollups merged over one step."""

    start: int
    count: int
    failures: int
    latency_min: float | None
    p50: float | None
    p95: float | None
    latency_max: float | None
    mean: float | None


def rolled_up(history: History, agent: str, check: str, since: float, until: float,
              step_s: int) -> list[RolledUp]:
    """One check's hourly rollups from ``since`` to ``until``, merged per ``step_s``
    (steps counted from the hour of ``since``); steps without rows are left out."""
    first = floor_to(since, HOUR)
    rows = history.store.rollups(agent, check, first, math.ceil(until / HOUR) * HOUR)
    by_step: dict[int, list[Rollup]] = {}
    for row in rows:
        by_step.setdefault(first + (row.hour - first) // step_s * step_s, []).append(row)
    points = []
    for start, group in sorted(by_step.items()):
        lowest = [row.latency_min for row in group if row.latency_min is not None]
        highest = [row.latency_max for row in group if row.latency_max is not None]
        counted = sum(row.latency_count for row in group)
        low = min(lowest) if lowest else None
        high = max(highest) if highest else None
        p50 = p95 = mean = None
        if counted and low is not None and high is not None:
            buckets = group[0].buckets if len(group) == 1 else merge([row.buckets
                                                                      for row in group])
            p50, p95 = quantiles(buckets, (0.5, 0.95), low, high)
            mean = round(sum(row.latency_sum for row in group) / counted, 3)
        points.append(RolledUp(start, sum(row.total for row in group),
                               sum(row.failures for row in group), low, p50, p95, high, mean))
    return points


def binned(history: History, agent: str, check: str, since: float, until: float,
           step_s: int, limit: int) -> list[RolledUp] | None:
    """One check's raw observations from ``since`` to ``until`` summarised per
    ``step_s`` (steps counted from ``since``), as hourly rollups are; steps without
    observations are left out.

    p50 and p95 are exact (nearest rank) here: the observations are at hand.

    Returns:
        The steps, or None when the range holds more than ``limit`` observations
        (what was read would end before ``until``).
    """
    rows = history.store.latencies(agent, check, since, until, limit + 1)
    if len(rows) > limit:
        return None
    by_step: dict[int, list[tuple[float | None, bool]]] = {}
    for at, latency, down in rows:
        start = int(since + (at - since) // step_s * step_s)
        by_step.setdefault(start, []).append((latency, down))
    points = []
    for start, observed in sorted(by_step.items()):
        latencies = sorted(latency for latency, _ in observed if latency is not None)
        low = high = p50 = p95 = mean = None
        if latencies:
            low, high = latencies[0], latencies[-1]
            # Nearest rank: exact, where an hour's rollup can only estimate.
            p50, p95 = (latencies[max(1, math.ceil(q * len(latencies))) - 1]
                        for q in (0.5, 0.95))
            mean = round(sum(latencies) / len(latencies), 3)
        points.append(RolledUp(start, len(observed), sum(down for _, down in observed), low,
                               p50, p95, high, mean))
    return points


def _rolled_up_json(point: RolledUp) -> dict[str, Any]:
    return {
        "at": rfc3339(point.start), "count": point.count, "failures": point.failures,
        "latency_ms": {"min": point.latency_min, "p50": point.p50, "p95": point.p95,
                       "max": point.latency_max, "mean": point.mean},
    }


def history_json(history: History, storage: Storage, agent: str, check: str,
                 query_string: bytes, now: float) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of one history request."""
    try:
        query = parse_query(query_string, now, history.config.history.rollup_retention_s)
    except BadParameter as exc:
        return 400, {"error": "bad_parameter", "message": str(exc)}
    if storage.check(agent, check) is None:
        return 404, {"error": "not_found", "message": f"no check {check!r} of agent {agent!r}"}
    body: dict[str, Any] = {
        "agent": agent, "check": check, "since": rfc3339(query.since),
        "until": rfc3339(query.until),
        "step": "raw" if query.step_s is None else f"{query.step_s}s",
        "truncated": False,
    }
    if query.step_s is None:
        rows = history.store.observations(agent, check, query.since, query.until,
                                          MAX_POINTS + 1)
        if len(rows) > MAX_POINTS:
            rows = rows[:MAX_POINTS]
            body["truncated"] = True
            # Seconds since the epoch: exact, where RFC 3339 here stops at milliseconds.
            body["next_since"] = f"{rows[-1].at + 1e-6:.6f}"
        body["points"] = [{"at": rfc3339(row.at), "status": row.status,
                           "latency_ms": row.latency_ms, "reason": row.reason} for row in rows]
    else:
        body["points"] = [
            _rolled_up_json(point) for point in
            rolled_up(history, agent, check, query.since, query.until, query.step_s)
        ]
    body["changes"] = [
        {"at": rfc3339(at), "previous": previous, "current": current}
        for at, previous, current in history.store.state_changes(
            agent, check, query.since, query.until, MAX_CHANGES)
    ]
    return 200, body

