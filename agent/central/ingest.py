"""Verifying one signed message and applying it: the ``POST /v1/ingest`` endpoint's logic.

Each step refuses with its own status and error code, logged with the agent id and
the reason; a refused message is never stored:

====  ====================  ================================================
413   ``body_too_large``    the body exceeds ``[server] max_body_bytes``
400   ``missing_header``    a ``webhook-id`` / ``-timestamp`` / ``-signature`` is absent
400   ``malformed_json``    the body is not a JSON object
403   ``unknown_agent``     the envelope's ``agent`` is not registered
401   ``stale_timestamp``   ``webhook-timestamp`` is outside the tolerance
401   ``bad_signature``     no signature verifies with the agent's keys
400   ``id_mismatch``       the body's ``id`` is not the ``webhook-id``
422   ``invalid_message``   the message does not follow docs/protocol.md
====  ====================  ================================================

A message whose id was already applied is acknowledged (200, ``duplicate``) and
not applied again. A ``seq`` that skips numbers is applied and the gap recorded.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.central.config import CentralConfig
from agent.central.incidents import Incidents
from agent.central.storage import CheckRow, Storage
from agent.common.network_path import describe_path, parse_path
from agent.errors import SignatureError
from agent.logs import get_logger
from agent.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

log = get_logger("central.ingest")

STATUSES: Final = ("unknown", "up", "degraded", "down")
MESSAGE_TYPES: Final = ("heartbeat", "state_change", "results")


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer to one ingest request."""

    status: int
    body: dict[str, object]


class Rejected(Exception):
    """A refused message: the status, the error code and the reason."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


class InvalidMessage(ValueError):
    """The message does not follow the protocol's schema."""


def _parse_time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _need(mapping: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    if key not in mapping:
        raise InvalidMessage(f"{where}.{key} is required")
    value = mapping[key]
    # JSON true/false are not numbers here, though Python's bool is an int.
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
        raise InvalidMessage(f"{where}.{key} has the wrong type")
    return value


def _status(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = _need(mapping, key, str, where)
    if value not in STATUSES:
        raise InvalidMessage(f"{where}.{key} must be one of {', '.join(STATUSES)}")
    return str(value)


def _latency(mapping: Mapping[str, Any], where: str) -> float | None:
    value = _need(mapping, "latency_ms", (int, float, type(None)), where)
    return None if value is None else float(value)


def _optional(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise InvalidMessage(f"{where}.{key} has the wrong type")
    return value


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


def _heartbeat_check(item: object, where: str) -> CheckReport:
    if not isinstance(item, dict):
        raise InvalidMessage(f"{where} must be an object")
    return CheckReport(
        name=_need(item, "name", str, where),
        status=_status(item, "status", where),
        reason=_need(item, "reason", (str, type(None)), where),
        latency_ms=_latency(item, where),
        at=_need(item, "at", (str, type(None)), where),
        group=_optional(item, "group", str, where),
        host=_optional(item, "host", str, where),
        port=_optional(item, "port", int, where),
    )


def _observation(item: object, where: str) -> CheckReport:
    if not isinstance(item, dict):
        raise InvalidMessage(f"{where} must be an object")
    return CheckReport(
        name=_need(item, "check", str, where),
        status=_status(item, "status", where),
        reason=_need(item, "reason", str, where),
        latency_ms=_latency(item, where),
        at=_need(item, "at", str, where),
    )


def parse_reports(kind: str, data: Mapping[str, Any]) -> tuple[float | None, list[CheckReport]]:
    """Validates a message's ``data`` and returns its interval (heartbeats) and check reports.

    Raises:
        InvalidMessage: naming the first field that is wrong.
    """
    if kind == "heartbeat":
        interval = _need(data, "interval_s", (int, float), "data")
        if interval <= 0:
            raise InvalidMessage("data.interval_s must be greater than zero")
        checks = _need(data, "checks", list, "data")
        reports = [_heartbeat_check(item, f"data.checks[{i}]") for i, item in enumerate(checks)]
        return float(interval), reports
    if kind == "state_change":
        _status(data, "previous", "data")
        current = _status(data, "current", "data")
        report = _observation(_need(data, "observation", dict, "data"), "data.observation")
        if report.name != _need(data, "check", str, "data"):
            raise InvalidMessage("data.observation.check differs from data.check")
        path = None
        if data.get("path") is not None:
            try:
                path = describe_path(parse_path(data["path"]))
            except ValueError as exc:
                raise InvalidMessage(f"data.{exc}") from None
        return None, [CheckReport(report.name, current, report.reason, report.latency_ms,
                                  report.at, path=path)]
    results = _need(data, "results", list, "data")
    return None, [_observation(item, f"data.results[{i}]") for i, item in enumerate(results)]


class Ingest:
    """Verifies and applies messages.

    Args:
        config: the receiver config (agents and their keys, limits, tolerance).
        storage: where applied messages go.
        incidents: told about heartbeats and check statuses.
        wall_clock: seconds since the epoch (timestamp check, receipt times).
    """

    def __init__(
        self,
        config: CentralConfig,
        storage: Storage,
        incidents: Incidents,
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.storage = storage
        self.incidents = incidents
        self.wall_clock = wall_clock

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answers one ingest request (headers with lower-case names, the raw body)."""
        try:
            return self._apply(self._verified_envelope(headers, body))
        except Rejected as exc:
            log.warning("rejected message from agent %s: %s: %s", _agent_hint(body), exc.code,
                        exc.reason)
            return Answer(exc.status, {"error": exc.code, "message": exc.reason})

    def too_large(self, body_prefix: bytes) -> Answer:
        """The answer to a body over the size limit (logged like every rejection)."""
        reason = f"body exceeds {self.config.max_body_bytes} bytes"
        log.warning("rejected message from agent %s: body_too_large: %s",
                    _agent_hint(body_prefix), reason)
        return Answer(413, {"error": "body_too_large", "message": reason})

    def _verified_envelope(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
            if not headers.get(name):
                raise Rejected(400, "missing_header", f"the {name} header is missing")
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Rejected(400, "malformed_json", f"the body is not JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise Rejected(400, "malformed_json", "the body is not a JSON object")
        agent = envelope.get("agent")
        if not isinstance(agent, str) or not agent:
            raise Rejected(422, "invalid_message", "the envelope has no agent")
        settings = self.config.agents.get(agent)
        if settings is None:
            raise Rejected(403, "unknown_agent", f"agent {agent!r} is not registered")
        now = self.wall_clock()
        timestamp = headers[TIMESTAMP_HEADER]
        if timestamp.isascii() and timestamp.isdigit() and \
                abs(int(timestamp) - now) > self.config.tolerance_s:
            raise Rejected(
                401, "stale_timestamp",
                f"webhook-timestamp {timestamp} is more than {self.config.tolerance_s:g}s "
                f"from the receiver's clock ({int(now)})",
            )
        try:
            verify(headers, body, settings.keys, now=now, tolerance_s=self.config.tolerance_s)
        except SignatureError as exc:
            raise Rejected(401, "bad_signature", str(exc)) from None
        if envelope.get("id") != headers[ID_HEADER]:
            raise Rejected(400, "id_mismatch", "the body's id is not the webhook-id header")
        return envelope

    def _apply(self, envelope: dict[str, Any]) -> Answer:
        try:
            kind = _need(envelope, "type", str, "message")
            if kind not in MESSAGE_TYPES:
                raise InvalidMessage(f"message.type must be one of {', '.join(MESSAGE_TYPES)}")
            seq = _need(envelope, "seq", int, "message")
            if seq < 1:
                raise InvalidMessage("message.seq must be at least 1")
            _need(envelope, "timestamp", str, "message")
            interval, reports = parse_reports(kind, _need(envelope, "data", dict, "message"))
        except InvalidMessage as exc:
            raise Rejected(422, "invalid_message", str(exc)) from None

        agent: str = envelope["agent"]
        msg_id: str = envelope["id"]
        if self.storage.has_message(msg_id):
            log.info("duplicate message %s from agent %s acknowledged, not applied", msg_id, agent)
            return Answer(200, {"status": "duplicate", "id": msg_id})
        now = self.wall_clock()
        with self.storage.transaction():
            gap = self.storage.record_message(agent, msg_id, seq, kind, now)
            if kind == "heartbeat":
                assert interval is not None
                self.storage.record_heartbeat(agent, now, interval, envelope["data"])
                self.incidents.heartbeat(agent, now)
            for report in reports:
                self._apply_check(agent, report, msg_id, now)
        if gap is not None:
            log.warning("agent %s: seq gap, expected %d, received %d", agent, *gap)
        return Answer(200, {"status": "stored", "id": msg_id})

    def _apply_check(self, agent: str, report: CheckReport, msg_id: str, now: float) -> None:
        stored = self.storage.check(agent, report.name)
        if stored is not None:
            new_at, old_at = _parse_time(report.at), _parse_time(stored.at)
            if new_at is not None and old_at is not None and new_at < old_at:
                return  # older news than what we hold (a late or re-delivered message)
        previous = stored.status if stored is not None else "unknown"
        self.storage.save_check(
            CheckRow(agent, report.name, report.status, report.reason, report.latency_ms,
                     report.at, report.group, report.host, report.port),
            now,
        )
        if previous != report.status:
            self.storage.add_state_change(agent, report.name, previous, report.status,
                                          report.at, now, msg_id)
        self.incidents.check_status(agent, report.name, report.status, report.reason, now,
                                    path=report.path)


_AGENT_FIELD: Final = re.compile(rb'"agent"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def _agent_hint(body: bytes) -> str:
    """The ``agent`` field of a (possibly truncated or broken) body, for log lines."""
    match = _AGENT_FIELD.search(body)
    return match.group(1).decode() if match else "-"
