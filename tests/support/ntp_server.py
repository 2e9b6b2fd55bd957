"""A tiny NTP server on a loopback UDP port, for what a real one cannot be told to do.

It answers each mode 3 request as RFC 5905 describes, from a clock that runs
``offset_s`` ahead of this host's, with the stratum, leap indicator and reference
id the test sets (a kiss-o'-death is stratum 0 with a kiss code).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import trio

from tests.support.udp_server import serve_udp

PACKET = struct.Struct("!BBbbII4sQQQQ")
NTP_TO_UNIX_S = 2_208_988_800


def to_ntp(unix_s: float) -> int:
    """Unix seconds as a 64-bit NTP timestamp."""
    return int((unix_s + NTP_TO_UNIX_S) * 2**32)


@dataclass
class NtpBehaviour:
    """What the server answers: its clock offset, stratum, leap indicator, reference id."""

    offset_s: float = 0.0
    stratum: int = 2
    leap: int = 0
    refid: bytes = bytes([10, 0, 0, 1])

    def answer(self, request: bytes) -> bytes:
        """The mode 4 reply to one request (its transmit timestamp echoed as origin)."""
        fields = PACKET.unpack_from(request)
        received = to_ntp(time.time() + self.offset_s)
        first = (self.leap << 6) | (4 << 3) | 4
        return PACKET.pack(first, self.stratum, 6, -20, 1 << 14, 1 << 13, self.refid,
                           received, fields[10], received, to_ntp(time.time() + self.offset_s))


async def serve_ntp(
    behaviour: NtpBehaviour, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answers NTP requests on 127.0.0.1 until cancelled; reports the port."""

    def answer(request: bytes) -> bytes | None:
        return behaviour.answer(request) if len(request) >= PACKET.size else None

    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_udp, answer)
        task_status.started(port)
