"""The TCP connect probe: resolve, race the addresses (happy eyeballs), close at once.

Timing is split in two so that a slow DNS server is not blamed on the database:
``dns_ms`` is the name resolution alone and ``latency_ms`` the TCP handshake of the
connection that won, both on trio's monotonic clock (which tests can replace).

Outcomes map onto a small vocabulary (see :class:`agent.model.Reason`): ``open``,
``refused``, ``timeout``, ``dns``, ``unreachable`` and ``error`` (with the OS
message in ``detail``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass, field

import trio

from agent.model import Observation, Outcome, Reason, Target

# RFC 8305 section 5 recommends 250 ms between connection attempts.
HAPPY_EYEBALLS_DELAY_S = 0.25

_FAMILY = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}

_UNREACHABLE_ERRNOS = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ENONET,
    # No local address of that family (IPv6 disabled, say): the network is not there.
    errno.EADDRNOTAVAIL,
    errno.EAFNOSUPPORT,
}

# When every address failed, the most telling reason wins: a refusal proves a host
# answered, a timeout that something swallowed the packets, "unreachable" only that
# one route was missing (typically IPv6 on an IPv4-only network).
_REASON_RANK = [Reason.REFUSED, Reason.TIMEOUT, Reason.UNREACHABLE, Reason.ERROR]

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def format_address(sockaddr: SockAddr) -> str:
    """``host:port`` with IPv6 addresses in brackets."""
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def os_message(exc: OSError) -> str:
    """The OS's own words for an error ("Connection refused"), without trio's prefix."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def classify_os_error(exc: OSError) -> Reason:
    """The reason word for an error a connect attempt raised."""
    if exc.errno == errno.ECONNREFUSED:
        return Reason.REFUSED
    if exc.errno == errno.ETIMEDOUT:
        return Reason.TIMEOUT
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Reason.UNREACHABLE
    return Reason.ERROR


def interleave_families(
    addrinfos: list[tuple[int, SockAddr]],
) -> list[tuple[int, SockAddr]]:
    """Orders addresses as RFC 8305 section 4 asks: alternate families, first one first.

    Duplicates (getaddrinfo repeats an address per socket type on some systems) go.
    """
    unique: list[tuple[int, SockAddr]] = []
    for item in addrinfos:
        if item not in unique:
            unique.append(item)
    if not unique:
        return []
    first_family = unique[0][0]
    preferred = [item for item in unique if item[0] == first_family]
    others = [item for item in unique if item[0] != first_family]
    ordered: list[tuple[int, SockAddr]] = []
    for index in range(max(len(preferred), len(others))):
        ordered.extend(group[index] for group in (preferred, others) if index < len(group))
    return ordered


@dataclass
class Connection:
    """A connected stream and the timing facts of how it was made.

    Attributes:
        stream: the connected stream; the caller closes it.
        latency_ms: the TCP handshake time of the connection that won.
        dns_ms: the name resolution time, or None for an IP literal.
        address: the IP address connected to.
        deadline: the end of the check's total time budget, on trio's clock.
    """

    stream: trio.SocketStream
    latency_ms: float
    dns_ms: float | None
    address: str
    deadline: float


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects to ``target`` within ``timeout`` seconds (DNS included) and closes.

    Returns:
        An Observation; failure is a value here, never an exception.
    """
    deadline = trio.current_time() + timeout
    connected = await open_connection(target, deadline, timeout=timeout)
    if isinstance(connected, Observation):
        return connected
    connected.stream.socket.close()
    return Observation(
        Outcome.OK,
        Reason.OPEN,
        latency_ms=connected.latency_ms,
        dns_ms=connected.dns_ms,
        address=connected.address,
    )


async def open_connection(
    target: Target, deadline: float, *, timeout: float
) -> Connection | Observation:
    """Resolves and connects to ``target`` before ``deadline`` (happy eyeballs).

    Protocol probes start here so that every kind reports DNS, latency and address
    the same way as the plain TCP check.

    Args:
        target: where to connect.
        deadline: when the whole check must be over, on trio's clock.
        timeout: the check's timeout, for the messages only.

    Returns:
        The open connection (the caller closes it), or the failed Observation.
    """
    resolved = await _resolve(target, deadline)
    if isinstance(resolved, Observation):
        return resolved
    addresses, dns_ms = resolved
    if not addresses:
        return Observation(Outcome.FAILED, Reason.DNS, dns_ms=dns_ms,
                           detail=f"{target.host}: the name has no usable address")
    race = _Race(addresses, deadline)
    await race.run()
    if race.winner is None or race.winner_socket is None:
        return race.observation(dns_ms, timeout)
    return Connection(
        trio.SocketStream(race.winner_socket),
        latency_ms=_ms(race.latency_s),
        dns_ms=dns_ms,
        address=race.winner[0],
        deadline=deadline,
    )


async def _resolve(
    target: Target, deadline: float
) -> tuple[list[tuple[int, SockAddr]], float | None] | Observation:
    """The addresses to try and the resolution time (None for an IP literal)."""
    try:
        ipaddress.ip_address(target.host)
        is_literal = True
    except ValueError:
        is_literal = False

    started = trio.current_time()
    with trio.move_on_at(deadline):
        try:
            infos = await trio.socket.getaddrinfo(
                target.host, target.port, _FAMILY[target.family], socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            return Observation(
                Outcome.FAILED,
                Reason.DNS,
                dns_ms=_ms(trio.current_time() - started),
                detail=f"{target.host}: {exc.strerror or exc}",
            )
        except UnicodeError as exc:  # a name IDNA cannot encode
            return Observation(Outcome.FAILED, Reason.DNS, detail=f"{target.host}: {exc}")
        dns_ms = None if is_literal else _ms(trio.current_time() - started)
        addresses = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
        return interleave_families(addresses), dns_ms  # type: ignore[arg-type]
    return Observation(
        Outcome.FAILED,
        Reason.DNS,
        dns_ms=_ms(trio.current_time() - started),
        detail=f"{target.host}: name resolution did not finish before the timeout",
    )


@dataclass
class _Race:
    """Connection attempts started one after another, the first handshake wins."""

    addresses: list[tuple[int, SockAddr]]
    deadline: float
    winner: SockAddr | None = None
    winner_socket: trio.socket.SocketType | None = None
    latency_s: float = 0.0
    failures: list[tuple[SockAddr, Reason, str]] = field(default_factory=list)
    unanswered: list[SockAddr] = field(default_factory=list)

    async def run(self) -> None:
        with trio.move_on_at(self.deadline):
            async with trio.open_nursery() as nursery:
                for family, sockaddr in self.addresses:
                    attempt_failed = trio.Event()
                    nursery.start_soon(self._attempt, nursery, family, sockaddr, attempt_failed)
                    # The next address starts when this one fails or after the delay,
                    # whichever comes first (RFC 8305 section 5).
                    with trio.move_on_after(HAPPY_EYEBALLS_DELAY_S):
                        await attempt_failed.wait()

    async def _attempt(
        self,
        nursery: trio.Nursery,
        family: int,
        sockaddr: SockAddr,
        attempt_failed: trio.Event,
    ) -> None:
        self.unanswered.append(sockaddr)
        try:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self.unanswered.remove(sockaddr)
            self.failures.append((sockaddr, classify_os_error(exc), os_message(exc)))
            attempt_failed.set()
            return
        # The socket is closed on every path out but a win, cancellation included:
        # a check must never leak a file descriptor.
        won = False
        try:
            started = trio.current_time()
            try:
                await sock.connect(sockaddr)
            except OSError as exc:
                self.unanswered.remove(sockaddr)
                self.failures.append((sockaddr, classify_os_error(exc), os_message(exc)))
                attempt_failed.set()
                return
            self.unanswered.remove(sockaddr)
            # Two handshakes can complete in the same tick: the first one wins.
            if self.winner_socket is None:
                self.latency_s = trio.current_time() - started
                self.winner = sockaddr
                self.winner_socket = sock
                won = True
            nursery.cancel_scope.cancel()
        finally:
            if not won:
                sock.close()

    def observation(self, dns_ms: float | None, timeout: float) -> Observation:
        if self.winner is not None:
            return Observation(
                Outcome.OK,
                Reason.OPEN,
                latency_ms=_ms(self.latency_s),
                dns_ms=dns_ms,
                address=self.winner[0],
            )
        failures = list(self.failures)
        failures += [(addr, Reason.TIMEOUT, f"no answer within {timeout:g}s")
                     for addr in self.unanswered]
        if not failures:
            # Only when the deadline passed before even the first attempt could start.
            return Observation(Outcome.FAILED, Reason.TIMEOUT, dns_ms=dns_ms,
                               detail=f"no attempt could start within {timeout:g}s")
        reason = min((reason for _, reason, _ in failures), key=_REASON_RANK.index)
        detail = "; ".join(f"{format_address(addr)}: {message}" for addr, _, message in failures)
        return Observation(Outcome.FAILED, reason, dns_ms=dns_ms, detail=detail)
