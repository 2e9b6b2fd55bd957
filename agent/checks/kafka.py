"""The Kafka probe: an ApiVersions request (key 18, version 0), a well-formed answer.

Every broker since 0.10 answers ApiVersions before any authentication, and answers
version 0 even when it prefers newer ones (Kafka protocol guide, "Retrieving
Supported API versions"). Facts: ``kafka_api_count`` (APIs the broker offers),
``kafka_api_versions_max`` (its newest ApiVersions version).
Reasons: ``answered``, ``kafka_error`` (an error code in the answer),
``unexpected_reply``. ``tls = true`` for an SSL listener (TLS from the first byte).
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
    run_exchange,
)
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

API_VERSIONS = 18
CLIENT_ID = b"heartwire"
# A broker offers some 70 APIs at 6 bytes each; the limit leaves room for growth.
RESPONSE_LIMIT = 8192
UNSUPPORTED_VERSION = 35


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "kafka"``: ``tls`` and the TLS keys."""
    return {"tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False))}


def api_versions_request(correlation_id: int) -> bytes:
    """An ApiVersions v0 request with its size prefix."""
    body = struct.pack("!hhih", API_VERSIONS, 0, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    return struct.pack("!i", len(body)) + body


def parse_api_versions(body: bytes, correlation_id: int) -> dict[int, tuple[int, int]]:
    """The (min, max) versions per API key from an ApiVersions v0 response body.

    Raises:
        ProbeFailure: the body is not a well-formed answer to our request.
    """
    if len(body) < 10:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY, "an ApiVersions answer cut short")
    answered_id, error_code, count = struct.unpack("!ihi", body[:10])
    if answered_id != correlation_id:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"correlation id {answered_id}, expected {correlation_id}")
    if error_code not in (0, UNSUPPORTED_VERSION):
        raise ProbeFailure(Outcome.FAILED, "kafka_error", f"ApiVersions error code {error_code}")
    if count < 0 or len(body) != 10 + 6 * count:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"{count} API entries do not fit a {len(body)}-byte answer")
    entries = struct.iter_unpack("!hhh", body[10:])
    return {key: (low, high) for key, low, high in entries}


async def _dialogue(exchange: Exchange) -> Observation:
    correlation_id = 0x4857  # any value; the broker must echo it
    await exchange.send(api_versions_request(correlation_id))
    what = "the ApiVersions answer"
    (size,) = struct.unpack("!i", await exchange.receive_exactly(4, what))
    if not 10 <= size <= RESPONSE_LIMIT:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"a {size}-byte answer is not an ApiVersions response")
    versions = parse_api_versions(await exchange.receive_exactly(size, what), correlation_id)
    exchange.facts["kafka_api_count"] = len(versions)
    if API_VERSIONS in versions:
        exchange.facts["kafka_api_versions_max"] = versions[API_VERSIONS][1]
    return Observation(Outcome.OK, ANSWERED)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and asks for the broker's API versions within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
