"""Verifying one signed message and applying it: the ``POST /v1/ingest`` endpoint's logic.

Each step refuses with its own status and error code, logged with the agent id and
the reason; a refused message is never stored:

====  ====================  ================================================
413   ``body_too_large``    the body exceeds ``[server] max_body_bytes``
408   ``body_timeout``      the body did not arrive within ``[server] body_timeout``
400   ``missing_header``    a ``webhook-id`` / ``-timestamp`` / ``-signature`` is absent
400   ``malformed_json``    the body is not a JSON object
403   ``unknown_agent``     the envelope's ``agent`` is not registered
401   ``stale_timestamp``   ``webhook-timestamp`` is outside the tolerance
401   ``bad_signature``     no signature verifies with the agent's keys
400   ``id_mismatch``       the body's ``id`` is not the ``webhook-id``
422   ``invalid_message``   the message does not follow docs/protocol.md
503   ``storage_unavailable``  the store failed (nothing committed; the agent retries)
====  ====================  ================================================

A message whose id this agent already sent is acknowledged (200, ``duplicate``) and
not applied again. A valid ``seq`` 0 test heartbeat (``heartwire send-test``) is
verified and acknowledged (200, ``test``) and stored nowhere. A ``seq`` that skips
numbers is applied and the gap recorded.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from agent.central.config import CentralConfig
from agent.central.history import History
from agent.central.incidents import Incidents
from agent.central.maintenance import AGENT, Maintenance
from agent.central.services import Services
from agent.central.storage import STORAGE_ERRORS, CheckRow, DuplicateMessage, Storage
from agent.common.logs import get_logger
from agent.common.names import is_valid_name
from agent.common.signing import (
    ID_HEADER,
    MAX_TIMESTAMP_DIGITS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    StaleTimestampError,
    check_timestamp,
    verify,
)
from agent.common.timefmt import rfc3339
from agent.errors import SignatureError
from agent.outbound.messages import (
    CheckReport,
    InvalidMessage,
    MalformedJSON,
    Message,
    parse_json,
    parse_time,
    validate,
)

log = get_logger("central.ingest")

# Several keys during a rotation, never dozens: each pair costs a signature check.
MAX_SIGNATURES: Final = 8


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


def _aware_time(text: str | None) -> datetime.datetime | None:
    # Rows stored by an older receiver may hold naive times: they compare with nothing.
    when = parse_time(text)
    return when if when is not None and when.tzinfo is not None else None


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
        self.history: History | None = None
        self.maintenance: Maintenance | None = None  # applies maintenance messages
        self.services: Services | None = None  # judges services by a quorum of agents

    def handle(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Answer:
        """Answers one ingest request (headers with lower-case names, the raw body).

        Args:
            headers: the request headers, names in lower case.
            body: the raw body.
            now: the wall time of the request (default: the clock). The ASGI app reads
                the clock on the event loop and calls this in a worker thread.
        """
        now = self.wall_clock() if now is None else now
        try:
            message = self._verified_envelope(headers, body, now)
        except Rejected as exc:
            log.warning("rejected message from agent %s: %s: %s", _agent_hint(body), exc.code,
                        exc.reason)
            return Answer(exc.status, {"error": exc.code, "message": exc.reason})
        try:
            return self._apply(message, now)
        except STORAGE_ERRORS as exc:
            # Not the message's fault (a full disk, a database down): the agent keeps it
            # and retries; nothing was committed.
            log.error("cannot store message %s from agent %s: %s", message.id, message.agent,
                      exc)
            return Answer(503, {"error": "storage_unavailable",
                                "message": "the receiver cannot store messages right now"})

    def too_large(self, body_prefix: bytes) -> Answer:
        """The answer to a body over the size limit (logged like every rejection)."""
        reason = f"body exceeds {self.config.max_body_bytes} bytes"
        log.warning("rejected message from agent %s: body_too_large: %s",
                    _agent_hint(body_prefix), reason)
        return Answer(413, {"error": "body_too_large", "message": reason})

    def too_slow(self, body_prefix: bytes, timeout_s: float) -> Answer:
        """The answer to a body that did not arrive in time (logged like every rejection)."""
        reason = f"the body did not arrive within {timeout_s:g}s"
        log.warning("rejected message from agent %s: body_timeout: %s",
                    _agent_hint(body_prefix), reason)
        return Answer(408, {"error": "body_timeout", "message": reason})

    def _verified_envelope(self, headers: Mapping[str, str], body: bytes,
                           now: float) -> Message:
        for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
            if not headers.get(name):
                raise Rejected(400, "missing_header", f"the {name} header is missing")
        try:
            envelope = parse_json(body)
        except MalformedJSON as exc:
            raise Rejected(400, "malformed_json", str(exc)) from None
        agent = envelope.get("agent")
        if not isinstance(agent, str) or not is_valid_name(agent):
            raise Rejected(422, "invalid_message", "the envelope has no valid agent id")
        settings = self.config.agents.get(agent)
        if settings is None:
            raise Rejected(403, "unknown_agent", f"agent {agent!r} is not registered")
        timestamp = headers[TIMESTAMP_HEADER]
        try:
            check_timestamp(timestamp, now=now, tolerance_s=self.config.tolerance_s)
        except StaleTimestampError:
            raise Rejected(
                401, "stale_timestamp",
                f"webhook-timestamp {timestamp[:MAX_TIMESTAMP_DIGITS + 1]} is more than "
                f"{self.config.tolerance_s:g}s from the receiver's clock ({int(now)})",
            ) from None
        except SignatureError:
            pass  # not a number at all: verify() answers that as a bad signature
        if len(headers[SIGNATURE_HEADER].split()) > MAX_SIGNATURES:
            raise Rejected(401, "bad_signature",
                           f"more than {MAX_SIGNATURES} signatures in {SIGNATURE_HEADER}")
        try:
            verify(headers, body, settings.keys, now=now, tolerance_s=self.config.tolerance_s)
        except SignatureError as exc:
            raise Rejected(401, "bad_signature", str(exc)) from None
        if envelope.get("id") != headers[ID_HEADER]:
            raise Rejected(400, "id_mismatch", "the body's id is not the webhook-id header")
        try:
            return validate(envelope, max_checks=self.config.max_checks)
        except InvalidMessage as exc:
            raise Rejected(422, "invalid_message", str(exc)) from None

    def _apply(self, message: Message, now: float) -> Answer:
        agent, msg_id = message.agent, message.id
        if message.test:
            # heartwire send-test: proof that the path and the keys work, nothing more.
            log.info("test heartbeat %s from agent %s verified, not stored", msg_id, agent)
            return Answer(200, {"status": "test", "id": msg_id})
        if self.storage.has_message(agent, msg_id):
            log.info("duplicate message %s from agent %s acknowledged, not applied", msg_id, agent)
            return Answer(200, {"status": "duplicate", "id": msg_id})
        try:
            with self.storage.transaction():
                gap = self.storage.record_message(agent, msg_id, message.seq, message.kind, now)
                if message.interval_s is not None:
                    self.storage.record_heartbeat(agent, now, message.interval_s, message.data)
                    self.incidents.heartbeat(agent, now)
                if self.services is not None:
                    # Membership as of now (a heartbeat here or at another receiver may
                    # have named services), read once for this message's alerts.
                    self.services.forget()
                stored = self.storage.checks_named(
                    agent, [report.name for report in message.reports])
                applied, changed = [], []
                for report in message.reports:
                    # A name twice in one message compares with what the first stored.
                    before = stored.get(report.name)
                    row = self._save_check(agent, report, before, msg_id, now)
                    if row is not None:
                        stored[report.name] = row
                        applied.append(report)
                        if before is None or before.status != row.status:
                            changed.append(report)
                # Every state is saved before any alert, and checks without parents go
                # first: a parent that went down in the same heartbeat holds its
                # children's alerts and names them (a stable sort keeps the order of a
                # name listed twice).
                for report in sorted(applied, key=lambda report: bool(report.depends_on)):
                    self.incidents.check_status(agent, report.name, report.status,
                                                report.reason, now, path=report.path)
                # A member's new status may change its service now; the rest (silence,
                # windows) the watcher's next sweep sees within a second.
                if self.services is not None and self.services.touches(agent, changed):
                    self.services.evaluate(now)
                if message.maintenance is not None:
                    self._apply_maintenance(message, now)
        except DuplicateMessage:
            # Another receiver applied the same retried message a moment earlier.
            log.info("duplicate message %s from agent %s acknowledged, not applied", msg_id, agent)
            return Answer(200, {"status": "duplicate", "id": msg_id})
        if gap is not None:
            log.warning("agent %s: seq gap, expected %d, received %d", agent, *gap)
        return Answer(200, {"status": "stored", "id": msg_id})

    def _apply_maintenance(self, message: Message, now: float) -> None:
        request = message.maintenance
        if request is None or self.maintenance is None:
            return
        store, agent = self.maintenance.store, message.agent
        if request.action == "end":
            ended = store.end_from_agent(agent, now)
            log.info("agent %s ended its maintenance (%d window(s))", agent, ended)
        else:
            assert request.duration_s is not None
            # The window runs from when the operator ran the command (the message may
            # have waited in the outbox), never from the future, and ends on its own.
            written = _aware_time(message.timestamp)
            starts = now if written is None else min(written.timestamp(), now)
            ends = starts + request.duration_s
            if ends <= now:
                log.info("agent %s: maintenance message %s arrived after its window ended",
                         agent, message.id)
                return
            reason = request.reason or "maintenance started on the agent"
            number = store.add(agent, request.checks, starts, ends, reason, now, source=AGENT)
            log.info("agent %s started maintenance window %d for %s until %s", agent, number,
                     ", ".join(request.checks) or "the whole agent", rfc3339(ends))
        self.maintenance.changed()

    def _save_check(self, agent: str, report: CheckReport, stored: CheckRow | None,
                    msg_id: str, now: float) -> CheckRow | None:
        """Saves one check's report; returns the check's state now held, or None when
        the report is older news than what the store holds (nothing to apply)."""
        if self.history is not None:
            self.history.observe(agent, report, stored.at if stored else None, now)
        if stored is not None:
            new_at, old_at = _aware_time(report.at), _aware_time(stored.at)
            if new_at is not None and old_at is not None and new_at < old_at:
                return None  # older news than what we hold (a late or re-delivered message)
        previous = stored.status if stored is not None else "unknown"
        row = CheckRow(agent, report.name, report.status, report.reason, report.latency_ms,
                       report.at, report.group, report.host, report.port)
        self.storage.save_check(row, now)
        if previous != report.status:
            self.storage.add_state_change(agent, report.name, previous, report.status,
                                          report.at, now, msg_id)
            if self.history is not None:
                self.history.status_changed(agent, report.name, report.status, report.at, now)
        return row


_AGENT_FIELD: Final = re.compile(rb'"agent"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def _agent_hint(body: bytes) -> str:
    """The ``agent`` field of a (possibly truncated or broken) body, for log lines."""
    match = _AGENT_FIELD.search(body)
    return match.group(1).decode() if match else "-"
