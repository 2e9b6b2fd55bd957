"""The NTP probe: one client request (mode 3, RFC 5905), the server's stratum and offset.

The request carries a random transmit timestamp instead of the clock (as RFC 9109
suggests for clients): a server's reply must echo it as its origin timestamp, so a
reply to someone else, or forged without seeing the request, is not taken. The
offset is the server's clock minus this host's, from the four timestamps of
RFC 5905 section 8; ``latency_ms`` is the round trip (request sent to reply read).

Reasons: ``answered``; ``unsynchronized`` (degraded: the server says its clock is
not synchronized: leap indicator 3, stratum 16, or stratum 0 without a kiss
code), ``clock_offset`` (degraded: the offset exceeds ``max_offset``),
``kiss_of_death`` (stratum 0 with a kiss code, ``RATE``, ``DENY``, ... in
``detail``: the server asks us to go away),
``unexpected_reply``, and the datagram reasons ``refused``, ``unreachable``,
``timeout``. Facts: ``ntp_stratum``, ``ntp_offset_ms``, ``ntp_delay_ms``,
``ntp_reference``, ``ntp_version``, ``ntp_root_delay_ms``, ``ntp_root_dispersion_ms``.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Mapping

import trio

from agent.checks import datagram
from agent.checks.exchange import ANSWERED, UNEXPECTED_REPLY, ProbeFailure
from agent.common.tables import Table
from agent.model import FactValue, Observation, Outcome, Target

DEFAULT_PORT = 123
UNSYNCHRONIZED = "unsynchronized"
CLOCK_OFFSET = "clock_offset"
KISS_OF_DEATH = "kiss_of_death"
# Seconds from the NTP era 0 epoch (1900) to the Unix epoch (1970).
NTP_TO_UNIX_S = 2_208_988_800
PACKET = struct.Struct("!BBbbII4sQQQQ")
# LI 0 (no warning), version 4, mode 3 (client).
REQUEST_FIRST_BYTE = (0 << 6) | (4 << 3) | 3
MODE_SERVER = 4
LEAP_UNSYNCHRONIZED = 3
STRATUM_UNSYNCHRONIZED = 16
READ_LIMIT = 1024
# Replies that do not echo our request (late answers to an earlier one) are skipped
# up to this many.
MAX_STRAY_REPLIES = 16


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "ntp"``: ``max_offset`` (a duration; off by default)."""
    return {"max_offset_s": table.duration("max_offset", None)}


def wall_clock() -> float:
    """Seconds since the epoch: an offset compares the server's wall clock with ours."""
    return time.time()


def _from_ntp(timestamp: int) -> float:
    """A 64-bit NTP timestamp as Unix seconds (era 0, which lasts until 2036)."""
    return timestamp / 2**32 - NTP_TO_UNIX_S


def _short(value: int) -> float:
    """A 16.16 fixed-point NTP short format value, in milliseconds."""
    return round(value / 2**16 * 1000.0, 3)


def _reference(stratum: int, refid: bytes) -> str:
    """The reference id: a source name ("GPS") for stratum 0-1, else an IPv4 address."""
    if stratum <= 1:
        return refid.rstrip(b"\0").decode("ascii", "replace")
    return socket.inet_ntop(socket.AF_INET, refid)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Asks the NTP server at ``target`` for the time within ``timeout``."""
    max_offset_s = target.options.get("max_offset_s")
    assert max_offset_s is None or isinstance(max_offset_s, float)

    async def dialogue(datagrams: datagram.Datagrams) -> Observation:
        nonce = secrets.randbits(64)
        request = PACKET.pack(REQUEST_FIRST_BYTE, 0, 0, 0, 0, 0, b"\0" * 4, 0, 0, 0, nonce)
        started = trio.current_time()
        sent_at = wall_clock()
        await datagrams.send(request)
        for _ in range(MAX_STRAY_REPLIES):
            reply = await datagrams.receive(READ_LIMIT)
            received_at = wall_clock()
            fields = _unpack(reply)
            if fields[8] == nonce:  # the origin timestamp echoes our request
                round_trip_s = trio.current_time() - started
                return _judge(fields, sent_at, received_at, round_trip_s, max_offset_s)
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"{MAX_STRAY_REPLIES} replies in a row answered another request")

    return await datagram.run_datagrams(target, timeout, dialogue)


def _unpack(reply: bytes) -> tuple[int, ...]:
    if len(reply) < PACKET.size:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"an NTP reply is at least {PACKET.size} bytes, got {len(reply)}")
    fields = PACKET.unpack_from(reply)
    mode = fields[0] & 0x7
    if mode != MODE_SERVER:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"the reply is NTP mode {mode}, not a server's (4)")
    return tuple(value if isinstance(value, int) else int.from_bytes(value, "big")
                 for value in fields)


def _judge(fields: tuple[int, ...], sent_at: float, received_at: float, round_trip_s: float,
           max_offset_s: float | None) -> Observation:
    first, stratum, _, _, root_delay, root_dispersion, refid, _, _, receive, transmit = fields
    leap, version = first >> 6, (first >> 3) & 0x7
    refid_bytes = refid.to_bytes(4, "big")
    code = refid_bytes.rstrip(b"\0")
    if stratum == 0 and code and code.isascii() and code.isalnum():
        # A kiss code in the reference id; without one, stratum 0 only means
        # "unspecified" (chrony answers so while it is not synchronized).
        kiss = code.decode("ascii")
        raise ProbeFailure(Outcome.FAILED, KISS_OF_DEATH, f"kiss-o'-death {kiss!r}",
                           {"ntp_kiss_code": kiss})
    server_received, server_sent = _from_ntp(receive), _from_ntp(transmit)
    offset_s = ((server_received - sent_at) + (server_sent - received_at)) / 2
    delay_s = (received_at - sent_at) - (server_sent - server_received)
    facts: dict[str, FactValue] = {
        "ntp_stratum": stratum,
        "ntp_version": version,
        "ntp_offset_ms": datagram.ms(offset_s),
        "ntp_delay_ms": datagram.ms(max(delay_s, 0.0)),
        "ntp_reference": _reference(stratum, refid_bytes),
        "ntp_root_delay_ms": _short(root_delay),
        "ntp_root_dispersion_ms": _short(root_dispersion),
    }
    latency_ms = datagram.ms(round_trip_s)
    if leap == LEAP_UNSYNCHRONIZED or stratum == 0 or stratum >= STRATUM_UNSYNCHRONIZED:
        return Observation(Outcome.DEGRADED, UNSYNCHRONIZED, latency_ms=latency_ms,
                           detail=f"the server's clock is not synchronized (leap "
                           f"indicator {leap}, stratum {stratum})", facts=facts)
    if max_offset_s is not None and abs(offset_s) > max_offset_s:
        return Observation(Outcome.DEGRADED, CLOCK_OFFSET, latency_ms=latency_ms,
                           detail=f"the server's clock is {offset_s * 1000:+.1f} ms from "
                           f"ours, more than max_offset ({max_offset_s * 1000:g} ms)",
                           facts=facts)
    return Observation(Outcome.OK, ANSWERED, latency_ms=latency_ms, facts=facts)
