"""The UDP conversation datagram probes (``dns``, ``udp``, ``ntp``) have with a service.

:func:`run_datagrams` resolves the target as every kind does (``dns_ms``), opens a
connected UDP socket with ``IP_RECVERR`` and hands it to the probe's dialogue,
all under one deadline. A connected socket only receives datagrams from the
target's address and port; an ICMP error about it (port unreachable: ``refused``;
host or network unreachable from a router: ``unreachable``) ends the dialogue at
once. UDP has no handshake, so silence is all a closed-and-filtered port says:
it is ``timeout``, "no answer".

Every datagram is read with a size limit the probe gives, and a dialogue reads at
most a bounded number of them, so a service that floods replies costs nothing more.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from agent.checks import recverr
from agent.checks.exchange import TIMEOUT, ProbeFailure
from agent.checks.tcp import classify_os_error, format_address, os_message, resolve_target
from agent.model import Observation, Outcome, Reason, Target

# The largest UDP payload over IPv4; no read asks for more.
MAX_DATAGRAM = 65507


def ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded as every probe reports them."""
    return round(seconds * 1000.0, 3)


@dataclass
class Datagrams:
    """A connected UDP socket to the target, and when the check must end.

    Attributes:
        sock: the non-blocking socket (closed by :func:`run_datagrams`).
        address: the IP address it is connected to.
        deadline: the end of the check's time budget, on trio's clock.
    """

    sock: socket.socket
    address: str
    deadline: float

    async def send(self, data: bytes) -> None:
        """Sends one datagram; an error the kernel reports at once ends the dialogue."""
        while True:
            try:
                self.sock.send(data)
                await trio.lowlevel.checkpoint()
                return
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
            except OSError as exc:
                raise self._failure(exc) from None

    async def receive(self, limit: int) -> bytes:
        """The next datagram from the target, cut to ``limit`` bytes.

        Raises:
            ProbeFailure: an ICMP error arrived instead (``refused``, ``unreachable``).
        """
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            queued = recverr.read_queued(self.sock)
            if queued is not None:
                raise ProbeFailure(Outcome.FAILED, icmp_reason(queued), queued.describe())
            try:
                return self.sock.recv(min(limit, MAX_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise self._failure(exc) from None

    def _failure(self, exc: OSError) -> ProbeFailure:
        queued = recverr.read_queued(self.sock)
        if queued is not None:
            return ProbeFailure(Outcome.FAILED, icmp_reason(queued), queued.describe())
        return ProbeFailure(Outcome.FAILED, classify_os_error(exc), os_message(exc))


def icmp_reason(queued: recverr.QueuedError) -> str:
    """``refused`` when the target says its port is closed, else what the errno says."""
    if queued.port_unreachable:
        return Reason.REFUSED
    return classify_os_error(OSError(queued.errno, recverr.os_words(queued.errno)))


async def open_datagrams(
    target: Target, deadline: float, *, sock_type: int = socket.SOCK_DGRAM, proto: int = 0
) -> tuple[Datagrams, float | None] | Observation:
    """Resolves ``target`` and connects a datagram socket to the first usable address.

    Args:
        target: where to send.
        deadline: when the whole check must be over, on trio's clock.
        sock_type: the socket type (datagram).
        proto: the protocol (0 for UDP; ``IPPROTO_ICMP`` for echo requests).

    Returns:
        The socket and the resolution time, or the failed Observation.
    """
    resolved = await resolve_target(target, deadline)
    if isinstance(resolved, Observation):
        return resolved
    addresses, dns_ms = resolved
    failures: list[tuple[str, Reason, str]] = []
    for family, sockaddr in addresses:
        if proto and family == socket.AF_INET6:
            proto_here = socket.IPPROTO_ICMPV6
        else:
            proto_here = proto
        try:
            sock = socket.socket(family, sock_type | socket.SOCK_NONBLOCK, proto_here)
        except OSError as exc:
            failures.append((format_address(sockaddr), classify_os_error(exc), os_message(exc)))
            continue
        try:
            recverr.enable(sock)
            # connect() on a datagram socket only picks the route: a missing one
            # fails here, and the next address (another family) gets its turn.
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            failures.append((format_address(sockaddr), classify_os_error(exc), os_message(exc)))
            continue
        return Datagrams(sock, sockaddr[0], deadline), dns_ms
    if not failures:
        return Observation(Outcome.FAILED, Reason.DNS, dns_ms=dns_ms,
                           detail=f"{target.host}: the name has no usable address")
    detail = "; ".join(f"{where}: {message}" for where, _, message in failures)
    return Observation(Outcome.FAILED, failures[0][1], dns_ms=dns_ms, detail=detail)


Dialogue = Callable[[Datagrams], Awaitable[Observation]]


def no_answer(timeout: float) -> Observation:
    """The observation of a datagram service that stayed silent."""
    return Observation(
        Outcome.FAILED, TIMEOUT,
        detail=f"no answer within {timeout:g}s (UDP cannot tell a closed port from a "
        "filtered one when nothing answers)",
    )


async def run_datagrams(
    target: Target,
    timeout: float,
    dialogue: Dialogue,
    *,
    sock_type: int = socket.SOCK_DGRAM,
    proto: int = 0,
    on_silence: Callable[[float], Observation] = no_answer,
) -> Observation:
    """Opens a datagram socket to ``target`` and runs ``dialogue`` within ``timeout``.

    Args:
        target: where to send.
        timeout: the check's total time budget, name resolution included.
        dialogue: the probe's conversation; returns the Observation (its latency
            included) or raises :class:`ProbeFailure`.
        sock_type: the socket type.
        proto: the protocol number (0: UDP).
        on_silence: the Observation when the deadline passes first.

    Returns:
        The Observation, with the resolution time and the address used.
    """
    deadline = trio.current_time() + timeout
    opened = await open_datagrams(target, deadline, sock_type=sock_type, proto=proto)
    if isinstance(opened, Observation):
        return opened
    datagrams, dns_ms = opened
    observation: Observation | None = None
    try:
        with trio.move_on_at(deadline):
            try:
                observation = await dialogue(datagrams)
            except ProbeFailure as failure:
                observation = failure.observation()
    finally:
        datagrams.sock.close()
    if observation is None:
        observation = on_silence(timeout)
    return dataclasses.replace(observation, dns_ms=dns_ms, address=datagrams.address)
