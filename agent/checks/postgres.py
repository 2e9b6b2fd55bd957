"""The PostgreSQL probe: SSLRequest, then a StartupMessage that never authenticates.

The SSLRequest's one-byte answer (``S`` or ``N``) proves a PostgreSQL backend is
there. With ``startup = true`` (the default) the probe then introduces itself as
``user`` (default ``heartwire``) and reads the first answer: a request for a
password, or an error such as "the database system is starting up" or "sorry, too
many clients already". It never sends a password (protocol 3.0, "Message Flow").

A server that answers ``S`` only continues over TLS: set ``tls = true`` (with the
TLS keys) to read its startup answer and the TLS facts; without it the probe stops
after the ``S``. Facts: ``pg_ssl`` (the server offers TLS), ``pg_auth`` (the
authentication it asks for), ``pg_sqlstate``.

Reasons: ``answered``, ``auth_required`` (an ok answer to a role or database that is
not let in), ``starting_up`` (degraded: starting or recovering), ``cannot_connect_now``
(degraded: another reason the server gives for refusing, such as a standby with
``hot_standby = off``), ``shutting_down``,
``too_many_connections``, ``tls_unavailable`` (``tls = true`` but the server says
``N``), ``server_error``, ``unexpected_reply``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import (
    ANSWERED,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
    run_exchange,
)
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3_0 = 196608
TERMINATE = b"X" + struct.pack("!i", 4)
# Error and authentication messages are short; a larger length is not PostgreSQL.
MESSAGE_LIMIT = 4096
# ParameterStatus messages (about 15), BackendKeyData, notices: then ReadyForQuery.
MAX_STARTUP_MESSAGES = 64

# How the server words a 57P03 that passes with time (postmaster.c, PostgreSQL 15).
_STARTING_UP = ("starting up", "not yet accepting connections", "in recovery mode")

_AUTH_METHODS = {0: "trust", 2: "kerberos", 3: "password", 5: "md5", 7: "gss", 9: "sspi",
                 10: "sasl"}


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "postgres"``: ``startup``, ``user``, ``database``, ``tls``."""
    startup = table.boolean("startup", True)
    user = table.nonempty_string("user", "heartwire")
    database = table.nonempty_string("database", user)
    return {
        "startup": startup,
        "user": user,
        "database": database,
        "tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False)),
    }


def startup_message(user: str, database: str) -> bytes:
    """A protocol 3.0 StartupMessage for ``user`` on ``database``."""
    parameters = b"".join(
        key + b"\0" + value.encode("utf-8") + b"\0"
        for key, value in ((b"user", user), (b"database", database),
                           (b"application_name", "heartwire"))
    ) + b"\0"
    return struct.pack("!ii", 8 + len(parameters), PROTOCOL_3_0) + parameters


def error_fields(payload: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse body (severity ``S``, code ``C``, message ``M``)."""
    fields: dict[str, str] = {}
    for field in payload.split(b"\0"):
        if field:
            fields[chr(field[0])] = field[1:].decode("utf-8", "replace")
    return fields


def classify_error(fields: Mapping[str, str]) -> ProbeFailure:
    """The outcome an ErrorResponse to the StartupMessage stands for."""
    code = fields.get("C", "")
    message = fields.get("M", "")
    facts = {"pg_sqlstate": code}
    if code == "57P03":  # cannot_connect_now
        if "shutting down" in message:
            return ProbeFailure(Outcome.FAILED, "shutting_down", message, facts)
        if any(phrase in message for phrase in _STARTING_UP):
            return ProbeFailure(Outcome.DEGRADED, "starting_up", message, facts)
        # A standby with hot_standby = off, for one: it will not take connections.
        return ProbeFailure(Outcome.DEGRADED, "cannot_connect_now", message, facts)
    if code == "53300":  # too_many_connections
        return ProbeFailure(Outcome.FAILED, "too_many_connections", message, facts)
    if code[:2] in ("28", "3D"):  # invalid authorization, invalid catalog name
        return ProbeFailure(Outcome.OK, "auth_required", message, facts)
    return ProbeFailure(Outcome.FAILED, "server_error", f"{code} {message}".strip(), facts)


async def _dialogue(exchange: Exchange) -> Observation:
    options = exchange.target.options
    await exchange.send(SSL_REQUEST)
    answer = await exchange.receive_exactly(1, "the answer to SSLRequest")
    if answer not in (b"S", b"N"):
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"the answer to SSLRequest was {printable(answer)!r}, not S or N")
    exchange.facts["pg_ssl"] = answer == b"S"
    settings = options.get("tls")
    if isinstance(settings, tls.TlsSettings):
        if answer == b"N":
            raise ProbeFailure(Outcome.FAILED, "tls_unavailable",
                               "the server does not offer TLS (it answered N to SSLRequest)")
        await tls.start_tls(exchange, settings)
    elif answer == b"S":
        # Only TLS may follow an S; without TLS settings this is as far as we go.
        return Observation(Outcome.OK, ANSWERED)
    if not options.get("startup"):
        return Observation(Outcome.OK, ANSWERED)
    await exchange.send(startup_message(str(options["user"]), str(options["database"])))
    kind, payload = await _receive_message(exchange)
    if kind == b"E":
        raise classify_error(error_fields(payload))
    if kind == b"R" and len(payload) >= 4:
        code = struct.unpack("!i", payload[:4])[0]
        exchange.facts["pg_auth"] = _AUTH_METHODS.get(code, str(code))
        if code == 0:
            await _finish_trusted_startup(exchange)
        return Observation(Outcome.OK, ANSWERED)
    if kind == b"v":  # NegotiateProtocolVersion: a newer server, still PostgreSQL
        return Observation(Outcome.OK, ANSWERED)
    raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                       f"message {printable(kind)!r} in answer to the StartupMessage")


async def _finish_trusted_startup(exchange: Exchange) -> None:
    """After AuthenticationOk the role and database are checked: read on to ReadyForQuery."""
    for _ in range(MAX_STARTUP_MESSAGES):
        kind, payload = await _receive_message(exchange)
        if kind == b"E":
            raise classify_error(error_fields(payload))
        if kind == b"Z":  # ReadyForQuery: we are in; leave politely
            await exchange.send(TERMINATE)
            return
    raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                       f"no ReadyForQuery within {MAX_STARTUP_MESSAGES} messages")


async def _receive_message(exchange: Exchange) -> tuple[bytes, bytes]:
    what = "the answer to the StartupMessage"
    header = await exchange.receive_exactly(5, what)
    kind, length = header[:1], struct.unpack("!i", header[1:])[0]
    if not 4 <= length <= MESSAGE_LIMIT:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"a {length}-byte message in answer to the StartupMessage")
    return kind, await exchange.receive_exactly(length - 4, what)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects, sends SSLRequest and (optionally) a StartupMessage within ``timeout``."""
    return await run_exchange(target, timeout, _dialogue)
