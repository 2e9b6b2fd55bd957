"""The messages of docs/protocol.md, defined once: built by the agent, checked by the receiver.

The agent builds every message it sends here (:func:`envelope`, :func:`heartbeat_data`,
:func:`state_change_data`, :func:`observation_data`, :class:`CheckSnapshot`) and
reads its own heartbeats back here (:func:`heartbeat_counts`, when the outbox
carries a superseded heartbeat's drop counts forward). The receiver reads what
arrives with the same module, so that a field renamed in one place is renamed on
both sides; tests check both against the JSON Schema in docs/protocol.md.

Reading is two steps, both pure and cheap whatever the bytes:

* :func:`parse_json` turns a body into a JSON object, refusing what would be
  expensive or ambiguous to parse: nesting deeper than :data:`MAX_DEPTH` (found by a
  linear pre-scan *before* the parser recurses), integers longer than
  :data:`MAX_INT_DIGITS`, ``NaN``/``Infinity`` and floats that overflow to infinity.
* :func:`validate` checks a parsed message against the schema, field by field, and
  returns it as a :class:`Message`; the first wrong field raises
  :class:`InvalidMessage` naming it (``data.checks[3].port must be at most 65535``).

Limits (documented in docs/protocol.md, "Limits"):

====================================  ==============================================
ids                                   ``msg_`` + 32 lower-case hex digits
``agent``                             1-64 letters, digits, ``.``, ``_``, ``-``
counters, ``seq``                     integers 0 .. 2^53 - 1
``interval_s``                        a finite number, 0 < x <= 7 days
``latency_ms``, ``dns_ms``            ``null`` or a finite number, 0 <= x <= one day
``port``                              ``null`` or an integer 0 .. 65535
check names                           1-128 characters
``group``, ``version``                at most 256 characters
``host``, ``address``                 at most 255 characters
``reason``                            at most 256 characters
``detail``                            at most 4,096 characters
times (``timestamp``, ``at``, ...)    RFC 3339 with a UTC offset (``Z`` or ``+01:00``)
``checks``, ``results``               at most ``max_checks`` entries (configurable)
a heartbeat check's ``service``       absent, ``null`` or 1-64 letters, digits, ``._-``
a maintenance ``data``                ``action`` start/end; ``duration_s`` 0 < x <= 7 days;
                                      at most 100 ``checks`` (agent check names);
                                      ``reason`` at most 200 characters
====================================  ==============================================

Unknown fields are allowed (newer agents may send more) but count against the body
size and nesting limits like everything else.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agent import __version__
from agent.common.dependency_graph import MAX_DEPENDS_ON
from agent.common.names import MAX_HOST_CHARS, MAX_LABEL_CHARS, NAME_RULE, is_valid_name
from agent.common.network_path import describe_path, parse_path, path_data
from agent.common.timefmt import rfc3339
from agent.model import Result, StateChange, Status

STATUSES: Final = ("unknown", "up", "degraded", "down")
HEARTBEAT: Final = "heartbeat"
STATE_CHANGE: Final = "state_change"
RESULTS: Final = "results"
# Written by ``heartwire maintenance`` on the agent's host; the receiver starts or
# ends the agent's own maintenance window.
MAINTENANCE: Final = "maintenance"
MESSAGE_TYPES: Final = (HEARTBEAT, STATE_CHANGE, RESULTS, MAINTENANCE)
MAINTENANCE_ACTIONS: Final = ("start", "end")
# A window always ends on its own: at most a week (as the receiver's own windows).
MAX_MAINTENANCE_S: Final = 7 * 86400.0
MAX_MAINTENANCE_CHECKS: Final = 100
MAX_MAINTENANCE_REASON_CHARS: Final = 200
# The outbox's counters a heartbeat reports (reset when a heartbeat takes them), and
# the field of ``data.dropped`` each one fills; ``rejected`` is ``data.rejected``.
DROPPED_COUNTERS: Final = {
    "dropped.results": "results",
    "dropped.heartbeats": "heartbeats",
    "dropped.state_changes": "state_changes",
    "dropped.set_aside": "set_aside",
}
REJECTED_COUNTER: Final = "rejected"
REPORTED_COUNTERS: Final = (*DROPPED_COUNTERS, REJECTED_COUNTER)

MAX_DEPTH: Final = 16
MAX_INT_DIGITS: Final = 64
# The largest integer every JSON reader holds exactly (and SQLite's INTEGER as well).
MAX_COUNT: Final = 2**53 - 1
MAX_INTERVAL_S: Final = 7 * 86400.0
MAX_MS: Final = 86_400_000.0
MAX_NAME_CHARS: Final = 128
MAX_REASON_CHARS: Final = 256
MAX_DETAIL_CHARS: Final = 4096
DEFAULT_MAX_CHECKS: Final = 10_000

MESSAGE_ID: Final = re.compile(r"msg_[0-9a-f]{32}")
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})"
)
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_BRACKETS: Final = bytes(set(range(256)) - set(b"[]{}"))


class MalformedJSON(ValueError):
    """The body is not a JSON object this receiver is willing to parse."""


class InvalidMessage(ValueError):
    """The message does not follow the protocol's schema (the text names the field)."""


def nesting_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether a JSON text nests arrays/objects deeper than ``max_depth`` (or is unbalanced).

    Linear in the body (``max_depth`` rounds of C-speed byte replacement), never
    recursive: escapes and strings are removed, then everything but brackets, then
    innermost ``[]``/``{}`` pairs are stripped once per level. Anything left after
    ``max_depth`` rounds is too deep or not JSON at all.
    """
    skeleton = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not skeleton:
            return False
        # One level per round: pairs become a mark first, so that removing "[]"
        # cannot complete a "{}" within the same round ("{[]}" is two levels).
        stripped = skeleton.replace(b"[]", b"x").replace(b"{}", b"x").replace(b"x", b"")
        if len(stripped) == len(skeleton):
            return True  # no innermost pair at all: unbalanced
        skeleton = stripped
    return bool(skeleton)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MalformedJSON(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJSON(f"the number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> object:
    raise MalformedJSON(f"{text} is not JSON")


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses a request body into a JSON object within the nesting and number limits.

    Raises:
        MalformedJSON: not UTF-8 JSON, not an object, or past a limit.
    """
    if nesting_exceeds(body, MAX_DEPTH):
        raise MalformedJSON(f"the body nests deeper than {MAX_DEPTH} levels or is unbalanced")
    try:
        value = json.loads(body, parse_int=_bounded_int, parse_float=_finite_float,
                           parse_constant=_no_constant)
    except MalformedJSON:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedJSON(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedJSON("the body is not a JSON object")
    return value


def parse_time(text: object) -> datetime.datetime | None:
    """An RFC 3339 date-time with an offset as an aware datetime, else None."""
    if not isinstance(text, str) or len(text) > 40 or not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One check's status as a message reports it."""

    name: str
    status: str
    reason: str | None
    latency_ms: float | None
    at: str | None
    group: str | None = None
    host: str | None = None
    port: int | None = None
    # A state change's path trace, in words ("path to ...: stopped after ..."), or None.
    path: str | None = None
    # The agent's checks this one depends on (a heartbeat's ``depends_on``).
    depends_on: tuple[str, ...] = ()
    # The service it checks with other agents' checks (a heartbeat's ``service``).
    service: str | None = None


@dataclass(frozen=True, slots=True)
class MaintenanceRequest:
    """A ``maintenance`` message's ``data``: start a window now, or end the agent's."""

    action: str
    duration_s: float | None = None
    checks: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message that follows the schema.

    Attributes:
        kind: ``heartbeat``, ``state_change`` or ``results``.
        id: the message id.
        seq: the per-agent sequence number (0 only for a test heartbeat).
        agent: the agent id.
        timestamp: the envelope's ``timestamp``.
        data: the validated ``data`` object, as received.
        interval_s: a heartbeat's ``interval_s``, else None.
        reports: the check statuses the message carries.
        test: whether this is ``heartwire send-test``'s heartbeat (verify, store nothing).
        maintenance: a ``maintenance`` message's request, else None.
    """

    kind: str
    id: str
    seq: int
    agent: str
    timestamp: str
    data: dict[str, Any]
    interval_s: float | None
    reports: tuple[CheckReport, ...]
    test: bool = False
    maintenance: MaintenanceRequest | None = None


class _Fields:
    """Typed, bounded reads of one JSON object, errors named by their path."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise InvalidMessage(f"{where} must be an object")
        self.mapping: Mapping[str, Any] = value
        self.where = where

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.mapping:
            if required:
                raise InvalidMessage(f"{self.where}.{key} is required")
            return None
        return self.mapping[key]

    def _fail(self, key: str, rule: str) -> InvalidMessage:
        return InvalidMessage(f"{self.where}.{key} {rule}")

    def string(self, key: str, max_chars: int, *, nullable: bool = False,
               required: bool = True, min_chars: int = 0) -> str | None:
        if key not in self.mapping and not required:
            return None
        value = self._get(key, True)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "must be a string" + (" or null" if nullable else ""))
        if not min_chars <= len(value) <= max_chars:
            raise self._fail(key, f"must be {min_chars}-{max_chars} characters long")
        return value

    def name(self, key: str) -> str:
        value = self.string(key, MAX_NAME_CHARS, min_chars=1)
        assert value is not None
        return value

    def count(self, key: str, *, required: bool = True) -> int:
        value = self._get(key, required)
        # JSON true/false are not numbers here, though Python's bool is an int.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "must be an integer")
        if not 0 <= value <= MAX_COUNT:
            raise self._fail(key, f"must be between 0 and {MAX_COUNT}")
        return value

    def number(self, key: str, maximum: float, *, nullable: bool,
               positive: bool = False) -> float | None:
        value = self._get(key, True)
        if value is None and nullable:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._fail(key, "must be a number" + (" or null" if nullable else ""))
        number = float(value)
        low_ok = number > 0 if positive else number >= 0
        if not (math.isfinite(number) and low_ok and number <= maximum):
            low = "greater than 0" if positive else "at least 0"
            raise self._fail(key, f"must be {low} and at most {maximum:g}")
        return number

    def port(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise self._fail(key, "must be null or an integer between 0 and 65535")
        return value

    def status(self, key: str) -> str:
        value = self._get(key, True)
        if value not in STATUSES:
            raise self._fail(key, f"must be one of {', '.join(STATUSES)}")
        return str(value)

    def time(self, key: str, *, nullable: bool = False) -> str | None:
        value = self._get(key, True)
        if value is None and nullable:
            return None
        if parse_time(value) is None:
            raise self._fail(key, "must be an RFC 3339 date-time with a UTC offset")
        return str(value)

    def array(self, key: str, max_items: int) -> list[Any]:
        value = self._get(key, True)
        if not isinstance(value, list):
            raise self._fail(key, "must be an array")
        if len(value) > max_items:
            raise self._fail(key, f"has {len(value)} entries; at most {max_items} are accepted")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self._get(key, True), f"{self.where}.{key}")


def _heartbeat_check(item: object, where: str) -> CheckReport:
    fields = _Fields(item, where)
    return CheckReport(
        name=fields.name("name"),
        status=fields.status("status"),
        reason=fields.string("reason", MAX_REASON_CHARS, nullable=True),
        latency_ms=fields.number("latency_ms", MAX_MS, nullable=True),
        at=fields.time("at", nullable=True),
        group=fields.string("group", MAX_LABEL_CHARS, nullable=True, required=False),
        host=fields.string("host", MAX_HOST_CHARS, nullable=True, required=False),
        port=fields.port("port"),
        depends_on=_depends_on(fields),
        service=_service(fields),
    )


def _depends_on(fields: _Fields) -> tuple[str, ...]:
    """A heartbeat check's optional ``depends_on``: at most MAX_DEPENDS_ON check names."""
    if fields.mapping.get("depends_on") is None:
        return ()
    names = fields.array("depends_on", MAX_DEPENDS_ON)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not is_valid_name(name):
            raise InvalidMessage(f"{fields.where}.depends_on[{index}] {NAME_RULE}")
    return tuple(dict.fromkeys(names))


def _service(fields: _Fields) -> str | None:
    """A heartbeat check's optional ``service``: absent, null or one valid name."""
    service = fields.mapping.get("service")
    if service is None:
        return None
    if not isinstance(service, str) or not is_valid_name(service):
        raise InvalidMessage(f"{fields.where}.service {NAME_RULE}")
    return service


def _observation(item: object, where: str) -> CheckReport:
    fields = _Fields(item, where)
    report = CheckReport(
        name=fields.name("check"),
        status=fields.status("status"),
        reason=fields.string("reason", MAX_REASON_CHARS),
        latency_ms=fields.number("latency_ms", MAX_MS, nullable=True),
        at=fields.time("at"),
    )
    fields.number("dns_ms", MAX_MS, nullable=True)
    fields.string("address", MAX_HOST_CHARS, nullable=True)
    fields.string("detail", MAX_DETAIL_CHARS, nullable=True)
    fields.count("consecutive_failures")
    return report


def _heartbeat(data: _Fields, max_checks: int) -> tuple[float, list[CheckReport], bool]:
    data.string("version", MAX_LABEL_CHARS)
    data.time("started_at")
    interval = data.number("interval_s", MAX_INTERVAL_S, nullable=False, positive=True)
    assert interval is not None
    checks = data.array("checks", max_checks)
    reports = [_heartbeat_check(item, f"data.checks[{i}]") for i, item in enumerate(checks)]
    for key in ("runs", "skipped", "rejected"):
        data.count(key)
    outbox = data.sub("outbox")
    for key in ("depth", "bytes"):
        outbox.count(key)
    dropped = data.sub("dropped")
    for key in ("results", "heartbeats", "state_changes"):
        dropped.count(key)
    test = data.mapping.get("test", False)
    if not isinstance(test, bool):
        raise InvalidMessage("data.test must be true or false")
    return interval, reports, test


def _state_change(data: _Fields) -> CheckReport:
    check = data.name("check")
    data.status("previous")
    current = data.status("current")
    if "observation" not in data.mapping:
        raise InvalidMessage("data.observation is required")
    report = _observation(data.mapping["observation"], "data.observation")
    if report.name != check:
        raise InvalidMessage("data.observation.check differs from data.check")
    path = None
    if data.mapping.get("path") is not None:
        try:
            path = describe_path(parse_path(data.mapping["path"]))
        except ValueError as exc:
            raise InvalidMessage(f"data.{exc}") from None
    return CheckReport(report.name, current, report.reason, report.latency_ms, report.at,
                       path=path)


def _maintenance(data: _Fields) -> MaintenanceRequest:
    action = data._get("action", True)
    if action not in MAINTENANCE_ACTIONS:
        raise data._fail("action", f"must be one of {', '.join(MAINTENANCE_ACTIONS)}")
    allowed = {"action"} if action == "end" else {"action", "duration_s", "checks", "reason"}
    extra = sorted(set(data.mapping) - allowed)
    if extra:
        raise data._fail(extra[0], f"is not a field of a maintenance {action}")
    if action == "end":
        return MaintenanceRequest("end")
    duration = data.number("duration_s", MAX_MAINTENANCE_S, nullable=False, positive=True)
    checks = data.array("checks", MAX_MAINTENANCE_CHECKS)
    for index, name in enumerate(checks):
        if not isinstance(name, str) or not is_valid_name(name):
            raise InvalidMessage(f"{data.where}.checks[{index}] {NAME_RULE}")
    reason = data.string("reason", MAX_MAINTENANCE_REASON_CHARS, nullable=True)
    return MaintenanceRequest("start", duration, tuple(dict.fromkeys(checks)), reason)


def validate(envelope: Mapping[str, Any], *, max_checks: int = DEFAULT_MAX_CHECKS) -> Message:
    """Checks a parsed message against docs/protocol.md's schema and limits.

    Args:
        envelope: the parsed body.
        max_checks: the most entries a heartbeat's ``checks`` (or ``results``) may hold.

    Returns:
        The message, its check reports extracted.

    Raises:
        InvalidMessage: naming the first field that is wrong.
    """
    fields = _Fields(envelope, "message")
    kind = fields.mapping.get("type")
    if kind not in MESSAGE_TYPES:
        raise InvalidMessage(f"message.type must be one of {', '.join(MESSAGE_TYPES)}")
    msg_id = fields.mapping.get("id")
    if not isinstance(msg_id, str) or not MESSAGE_ID.fullmatch(msg_id):
        raise InvalidMessage("message.id must be msg_ followed by 32 lower-case hex digits")
    agent = fields.mapping.get("agent")
    if not isinstance(agent, str) or not is_valid_name(agent):
        raise InvalidMessage("message.agent must be 1-64 letters, digits, '.', '_' or '-'")
    seq = fields.count("seq")
    timestamp = fields.time("timestamp")
    assert timestamp is not None
    data = fields.sub("data")
    interval: float | None = None
    test = False
    maintenance: MaintenanceRequest | None = None
    reports: list[CheckReport] = []
    if kind == HEARTBEAT:
        interval, reports, test = _heartbeat(data, max_checks)
    elif kind == STATE_CHANGE:
        reports = [_state_change(data)]
    elif kind == "maintenance":
        maintenance = _maintenance(data)
    else:
        results = data.array("results", max_checks)
        reports = [_observation(item, f"data.results[{i}]") for i, item in enumerate(results)]
    if test != (seq == 0):
        raise InvalidMessage("message.seq is 0 exactly for a test heartbeat (data.test true)")
    return Message(kind=kind, id=msg_id, seq=seq, agent=agent, timestamp=timestamp,
                   data=dict(data.mapping), interval_s=interval, reports=tuple(reports),
                   test=test, maintenance=maintenance)


# -- building (the agent's side) ------------------------------------------------


class OutboxSize(Protocol):
    """How much waits in the outbox, as a heartbeat reports it."""

    @property
    def messages(self) -> int: ...

    @property
    def bytes(self) -> int: ...


def envelope(msg_type: str, msg_id: str, seq: int, agent: str, at: float,
             data: Mapping[str, object]) -> dict[str, object]:
    """The envelope every message travels in (``seq`` 0 only for a test heartbeat)."""
    return {"type": msg_type, "id": msg_id, "seq": seq, "agent": agent,
            "timestamp": rfc3339(at), "data": data}


def encode(message: Mapping[str, object]) -> bytes:
    """A message's body: compact UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def clip(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when it was cut.

    What a probe reports comes partly from the server (a banner, an error page, a
    scoped address) and may be any length; the validator above refuses a field over
    its limit, so the agent clips it rather than send a message refused for ever.
    """
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def observation_data(result: Result) -> dict[str, Any]:
    """One observation as the protocol writes it (docs/protocol.md), each text clipped
    to the receiver's limit."""
    seen = result.observation
    return {
        "check": result.check,
        "status": result.status.value,
        "reason": clip(seen.reason, MAX_REASON_CHARS),
        "latency_ms": seen.latency_ms,
        "dns_ms": seen.dns_ms,
        "address": clip(seen.address, MAX_HOST_CHARS),
        "detail": clip(seen.detail, MAX_DETAIL_CHARS),
        "consecutive_failures": result.consecutive_failures,
        "at": rfc3339(result.at),
    }


def state_change_data(change: StateChange) -> dict[str, Any]:
    """A state change's ``data`` object (``path`` only when a trace was made)."""
    data = {"check": change.check, "previous": change.previous.value,
            "current": change.current.value, "observation": observation_data(change.result)}
    if change.path is not None:
        data["path"] = path_data(change.path)
    return data


def results_data(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """A results message's ``data`` object: observations from :func:`observation_data`."""
    return {"results": observations}


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """A check's latest status, as a heartbeat lists it."""

    name: str
    status: Status
    last: Result | None
    # Where the check points and how it is shown, so a receiver can group its page.
    group: str | None = None
    host: str | None = None
    port: int | None = None
    # The checks of this agent it depends on (config ``depends_on``).
    depends_on: tuple[str, ...] = ()
    # The service this check checks, shared with other agents' checks (config ``service``).
    service: str | None = None

    def data(self) -> dict[str, Any]:
        """The heartbeat's entry for this check (``depends_on`` and ``service`` only when
        it has them)."""
        last = self.last
        entry: dict[str, Any] = {
            "name": self.name,
            "group": self.group,
            "host": self.host,
            "port": self.port,
            "status": self.status.value,
            "reason": last.observation.reason if last else None,
            "latency_ms": last.observation.latency_ms if last else None,
            "at": rfc3339(last.at) if last else None,
        }
        if self.depends_on:
            entry["depends_on"] = list(self.depends_on)
        if self.service is not None:
            entry["service"] = self.service
        return entry


def heartbeat_data(
    *, started_at: float, interval_s: float, checks: list[CheckSnapshot], runs: int,
    skipped: int, counts: Mapping[str, int], depth: OutboxSize, test: bool = False
) -> dict[str, Any]:
    """A heartbeat's ``data`` object.

    Args:
        started_at: when the agent started (seconds since the epoch).
        interval_s: the heartbeat interval.
        checks: every check's latest status.
        runs: probe runs completed since start.
        skipped: runs skipped since start (the previous one still running).
        counts: the outbox's counters (:data:`REPORTED_COUNTERS`) since the previous
            heartbeat; a missing one is 0.
        depth: what waits in the outbox.
        test: ``heartwire send-test``'s heartbeat (the receiver stores nothing).
    """
    data: dict[str, Any] = {
        "version": __version__,
        "started_at": rfc3339(started_at),
        "interval_s": interval_s,
        "checks": [check.data() for check in checks],
        "runs": runs,
        "skipped": skipped,
        "outbox": {"depth": depth.messages, "bytes": depth.bytes},
        "dropped": {field: counts.get(counter, 0)
                    for counter, field in DROPPED_COUNTERS.items()},
        "rejected": counts.get(REJECTED_COUNTER, 0),
    }
    if test:
        data["test"] = True
    return data


def heartbeat_counts(data: Mapping[str, Any]) -> dict[str, int]:
    """The outbox counters a heartbeat's ``data`` reports, read back (positive ones only).

    The inverse of :func:`heartbeat_data` for the counts: what a heartbeat that will
    never be sent carried goes back into the counters for the next one.
    """
    dropped = data.get("dropped")
    dropped = dropped if isinstance(dropped, Mapping) else {}
    carried = {counter: dropped.get(field, 0) for counter, field in DROPPED_COUNTERS.items()}
    carried[REJECTED_COUNTER] = data.get("rejected", 0)
    return {counter: amount for counter, amount in carried.items()
            if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0}
