"""ICMP errors for datagram sockets, read from the Linux error queue (``IP_RECVERR``).

A UDP (or ICMP datagram) socket with ``IP_RECVERR`` set queues every ICMP error
that concerns it: "port unreachable" from the target, "time exceeded" from a
router, "host unreachable" from the last router before a dead host. Each entry
says who sent it (the offender), the ICMP type and code, and carries the start of
the datagram that caused it, so a probe can tell which of its packets it was.
This is what tracepath(8) uses; it needs no privilege.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

# linux/in.h and linux/in6.h; Python 3.11 does not name them.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

# linux/errqueue.h: struct sock_extended_err, then the offender's sockaddr.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
ORIGIN_LOCAL = 1
ORIGIN_ICMP = 2
ORIGIN_ICMP6 = 3

# ICMP types (RFC 792, RFC 4443) the probes tell apart.
ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
ICMP_PORT_UNREACH = 3
ICMP6_DEST_UNREACH = 1
ICMP6_TIME_EXCEEDED = 3
ICMP6_PORT_UNREACH = 4

# The error queue entry carries the offending datagram's payload; probes need only
# its first bytes to know which of their datagrams it was.
PAYLOAD_LIMIT = 256
_ANCILLARY_LIMIT = 512


@dataclass(frozen=True, slots=True)
class QueuedError:
    """One ICMP (or local) error the kernel queued for a socket.

    Attributes:
        errno: the error it maps to (ECONNREFUSED, EHOSTUNREACH, ...).
        origin: ORIGIN_ICMP, ORIGIN_ICMP6 or ORIGIN_LOCAL.
        icmp_type: the ICMP type.
        icmp_code: the ICMP code.
        offender: the address of the host that sent it, or None.
        payload: the start of the datagram that caused it.
    """

    errno: int
    origin: int
    icmp_type: int
    icmp_code: int
    offender: str | None
    payload: bytes

    @property
    def time_exceeded(self) -> bool:
        """A router dropped the datagram because its TTL ran out."""
        return (self.origin, self.icmp_type) in (
            (ORIGIN_ICMP, ICMP_TIME_EXCEEDED),
            (ORIGIN_ICMP6, ICMP6_TIME_EXCEEDED),
        )

    @property
    def port_unreachable(self) -> bool:
        """The target itself answered: nothing listens on that port."""
        return (self.origin, self.icmp_type, self.icmp_code) in (
            (ORIGIN_ICMP, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH),
            (ORIGIN_ICMP6, ICMP6_DEST_UNREACH, ICMP6_PORT_UNREACH),
        )

    def describe(self) -> str:
        """The error in words, with who said so ("10.1.0.1: No route to host")."""
        text = "TTL exceeded in transit" if self.time_exceeded else os_words(self.errno)
        return f"{self.offender}: {text}" if self.offender else text


def os_words(code: int) -> str:
    """The OS's message for an errno ("Connection refused")."""
    return os.strerror(code) if code else "error"


def enable(sock: socket.socket) -> None:
    """Asks the kernel to queue ICMP errors for ``sock`` (IPv4 or IPv6)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def read_queued(sock: socket.socket) -> QueuedError | None:
    """Takes the oldest queued error of non-blocking ``sock``, or None if there is none.

    Reading it also clears the pending socket error it raised.
    """
    try:
        payload, ancillary, _, _ = sock.recvmsg(PAYLOAD_LIMIT, _ANCILLARY_LIMIT, MSG_ERRQUEUE)
    except (BlockingIOError, InterruptedError):
        return None
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            return _parse(data, payload)
    return None


def _parse(data: bytes, payload: bytes) -> QueuedError | None:
    if len(data) < _EXTENDED_ERR.size:
        return None
    code, origin, icmp_type, icmp_code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
    return QueuedError(code, origin, icmp_type, icmp_code, _offender(data[_EXTENDED_ERR.size:]),
                       payload)


def _offender(sockaddr: bytes) -> str | None:
    if len(sockaddr) < 2:
        return None
    (family,) = struct.unpack_from("=H", sockaddr)
    if family == socket.AF_INET and len(sockaddr) >= 8:
        return socket.inet_ntop(socket.AF_INET, sockaddr[4:8])
    if family == socket.AF_INET6 and len(sockaddr) >= 24:
        return socket.inet_ntop(socket.AF_INET6, sockaddr[8:24])
    return None

