"""The MySQL / MariaDB probe: reads the server's initial handshake packet.

The server speaks first (client/server protocol, "Initial Handshake"): protocol
version 10, then the server version. Nothing is sent back, so no login is tried.
Facts: ``mysql_protocol``, ``mysql_version``.

A server that will not serve sends an error packet instead, with MySQL's own code:
``too_many_connections`` (1040), ``host_blocked`` (degraded, 1129: this host made too
many broken connections; ``FLUSH HOSTS`` clears it), ``host_not_allowed`` (ok,
1130: the server answers but not to this host). Other reasons: ``answered``,
``server_error``, ``unexpected_reply``.
"""

from __future__ import annotations

import struct

from agent.checks.exchange import (
    ANSWERED,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
    run_exchange,
)
from agent.model import Observation, Outcome, Target

# The greeting is well under 200 bytes; an error packet carries a short message.
PACKET_LIMIT = 4096

_ERRORS = {
    1040: (Outcome.FAILED, "too_many_connections"),  # ER_CON_COUNT_ERROR
    1129: (Outcome.DEGRADED, "host_blocked"),  # ER_HOST_IS_BLOCKED
    1130: (Outcome.OK, "host_not_allowed"),  # ER_HOST_NOT_PRIVILEGED
}


def classify_error(payload: bytes) -> ProbeFailure:
    """The outcome of an ERR packet (``0xff``, code, optional ``#sqlstate``, message)."""
    code = struct.unpack("<H", payload[1:3])[0] if len(payload) >= 3 else 0
    message = payload[3:]
    if message.startswith(b"#"):
        message = message[6:]
    outcome, reason = _ERRORS.get(code, (Outcome.FAILED, "server_error"))
    return ProbeFailure(outcome, reason, printable(message), {"mysql_error": code})


async def _dialogue(exchange: Exchange) -> Observation:
    what = "the MySQL handshake packet"
    header = await exchange.receive_exactly(4, what)
    length = int.from_bytes(header[:3], "little")
    if not 1 <= length <= PACKET_LIMIT:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"a {length}-byte first packet is not a MySQL handshake")
    payload = await exchange.receive_exactly(length, what)
    if payload[0] == 0xFF:
        raise classify_error(payload)
    version_end = payload.find(b"\0", 1)
    if payload[0] != 10 or version_end < 0:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"the first packet is not a protocol 10 handshake: "
                           f"{printable(payload[:64])!r}")
    exchange.facts["mysql_protocol"] = payload[0]
    version = printable(payload[1:version_end])
    # MariaDB prefixes "5.5.5-" so that old clients do not mistake 10.x for 1.0.
    exchange.facts["mysql_version"] = version.removeprefix("5.5.5-")
    return Observation(Outcome.OK, ANSWERED)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and reads the server's handshake packet within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue)
