"""The wire schema of docs/protocol.md, enforced with a bound on every value.

Two steps, both pure and cheap whatever the bytes:

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
from typing import Any, Final

from agent.common.names import NAME_RULE, is_valid_name
from agent.common.network_path import describe_path, parse_path

STATUSES: Final = ("unknown", "up", "degraded", "down")
MESSAGE_TYPES: Final = ("heartbeat", "state_change", "results", "maintenance")
MAINTENANCE_ACTIONS: Final = ("start", "end")
# A window always ends on its own: at most a week (as the receiver's own windows).
MAX_MAINTENANCE_S: Final = 7 * 86400.0
MAX_MAINTENANCE_CHECKS: Final = 100
MAX_MAINTENANCE_REASON_CHARS: Final = 200

MAX_DEPTH: Final = 16
MAX_INT_DIGITS: Final = 64
# The largest integer every JSON reader holds exactly (and SQLite's INTEGER as well).
MAX_COUNT: Final = 2**53 - 1
MAX_INTERVAL_S: Final = 7 * 86400.0
MAX_MS: Final = 86_400_000.0
MAX_NAME_CHARS: Final = 128
MAX_LABEL_CHARS: Final = 256
MAX_HOST_CHARS: Final = 255
MAX_REASON_CHARS: Final = 256
MAX_DETAIL_CHARS: Final = 4096
DEFAULT_MAX_CHECKS: Final = 10_000

MESSAGE_ID: Final = re.compile(r"msg_[0-9a-f]{32}")
AGENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
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
    )


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
    if not isinstance(agent, str) or not AGENT_ID.fullmatch(agent):
        raise InvalidMessage("message.agent must be 1-64 letters, digits, '.', '_' or '-'")
    seq = fields.count("seq")
    timestamp = fields.time("timestamp")
    assert timestamp is not None
    data = fields.sub("data")
    interval: float | None = None
    test = False
    maintenance: MaintenanceRequest | None = None
    reports: list[CheckReport] = []
    if kind == "heartbeat":
        interval, reports, test = _heartbeat(data, max_checks)
    elif kind == "state_change":
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
