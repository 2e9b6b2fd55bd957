"""The TCP connect probe: resolve, race the addresses (happy eyeballs), close at once.

Timing is split in two so that a slow DNS server is not blamed on the database:
``dns_ms`` is the name resolution alone and ``latency_ms`` the TCP handshake of the
connection that won, both on trio's monotonic clock (which tests can replace).

Outcomes map onto a small vocabulary (see :class:`agent.model.Reason`): ``open``,
``refused``, ``timeout``, ``dns``, ``unreachable`` and ``error`` (with the OS
message in ``detail``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
from dataclasses import dataclass, field

import trio

from agent.checks import resolver as dns
from agent.checks.proxy import (
    PROXY_ERROR,
    PROXY_REFUSED,
    ProxyFailure,
    ProxySettings,
    Tunnel,
    parse_proxy_url,
    proxy_target,
)
from agent.model import FactValue, Observation, Outcome, Reason, Target

# RFC 8305 section 5 recommends 250 ms between connection attempts.
HAPPY_EYEBALLS_DELAY_S = 0.25

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
    if len(addrinfos) < 2:
        return addrinfos
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
        address: the IP address connected to (the proxy's, through a proxy).
        deadline: the end of the check's total time budget, on trio's clock.
        facts: what the connection itself tells (``proxy``: the proxy's URL).
    """

    stream: trio.SocketStream
    latency_ms: float
    dns_ms: float | None
    address: str
    deadline: float
    facts: dict[str, FactValue] = field(default_factory=dict)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects to ``target`` within ``timeout`` seconds (DNS included) and closes.

    Returns:
        An Observation; failure is a value here, never an exception.
    """
    deadline = trio.current_time() + timeout
    if "proxy" in target.options:
        connected = await open_connection(target, deadline, timeout=timeout)
        if isinstance(connected, Observation):
            return connected
        connected.stream.socket.close()
        return Observation(Outcome.OK, Reason.OPEN, latency_ms=connected.latency_ms,
                           dns_ms=connected.dns_ms, address=connected.address,
                           facts=connected.facts)
    raced = await _race(target, deadline)
    if isinstance(raced, Observation):
        return raced
    race, dns_ms = raced
    if race.winner_socket is not None:
        race.winner_socket.close()
    return race.observation(dns_ms, timeout)


async def open_connection(
    target: Target, deadline: float, *, timeout: float
) -> Connection | Observation:
    """Resolves and connects to ``target`` before ``deadline`` (happy eyeballs).

    Protocol probes start here so that every kind reports DNS, latency and address
    the same way as the plain TCP check. With a ``proxy`` option the connection
    goes to the proxy and through its tunnel (:mod:`agent.checks.proxy`).

    Args:
        target: where to connect.
        deadline: when the whole check must be over, on trio's clock.
        timeout: the check's timeout, for the messages only.

    Returns:
        The open connection (the caller closes it), or the failed Observation.
    """
    proxy_url = target.options.get("proxy")
    if isinstance(proxy_url, str):
        settings = parse_proxy_url(proxy_url)
        return await _open_through_proxy(target, settings, deadline, timeout)
    raced = await _race(target, deadline)
    if isinstance(raced, Observation):
        return raced
    race, dns_ms = raced
    if race.winner is None or race.winner_socket is None:
        return race.observation(dns_ms, timeout)
    return Connection(
        trio.SocketStream(trio.socket.from_stdlib_socket(race.winner_socket)),
        latency_ms=_ms(race.latency_s),
        dns_ms=dns_ms,
        address=race.winner[0],
        deadline=deadline,
    )


async def _open_through_proxy(
    target: Target, settings: ProxySettings, deadline: float, timeout: float
) -> Connection | Observation:
    """Connects to the proxy, then asks it for a tunnel to ``target``, by ``deadline``.

    ``latency_ms`` is the whole proxied connect: the handshake with the proxy plus
    the tunnel's set-up (the proxy's name resolution is ``dns_ms``, as for any target).
    """
    facts: dict[str, FactValue] = {"proxy": settings.url()}
    reached = await open_connection(proxy_target(settings, target), deadline, timeout=timeout)
    if isinstance(reached, Observation):
        reason = PROXY_REFUSED if reached.reason == Reason.REFUSED else PROXY_ERROR
        return dataclasses.replace(reached, reason=reason, detail=f"proxy {reached.detail}",
                                   facts=facts)
    tunnel = Tunnel(reached.stream, settings, target)
    tunnel_started = trio.current_time()
    failure: ProxyFailure | None = None
    try:
        with trio.move_on_at(deadline):
            try:
                await tunnel.open()
            except ProxyFailure as exc:
                failure = exc
            else:
                tunnel_ms = _ms(trio.current_time() - tunnel_started)
                return Connection(
                    reached.stream,
                    latency_ms=round(reached.latency_ms + tunnel_ms, 3),
                    dns_ms=reached.dns_ms, address=reached.address, deadline=deadline,
                    facts=facts,
                )
    except BaseException:
        reached.stream.socket.close()
        raise
    reached.stream.socket.close()
    if failure is not None:
        reason, detail = failure.reason, failure.detail
    elif tunnel.asked_target:
        reason, detail = Reason.TIMEOUT, (f"{tunnel.authority} via the proxy: no answer "
                                          f"within {timeout:g}s")
    else:
        reason, detail = PROXY_ERROR, f"the proxy did not answer within {timeout:g}s"
    return Observation(Outcome.FAILED, reason, dns_ms=reached.dns_ms, address=reached.address,
                       detail=detail, facts=facts)


async def _race(target: Target, deadline: float) -> tuple[_Race, float | None] | Observation:
    """Resolves ``target`` and races its addresses; the winner's socket stays open."""
    resolved = await resolve_target(target, deadline)
    if isinstance(resolved, Observation):
        return resolved
    addresses, dns_ms = resolved
    if not addresses:
        return Observation(Outcome.FAILED, Reason.DNS, dns_ms=dns_ms,
                           detail=f"{target.host}: the name has no usable address")
    race = _Race(addresses, deadline)
    try:
        await race.run()
    except BaseException:
        # Cancelled from outside after a handshake won: nobody will take its socket.
        if race.winner_socket is not None:
            race.winner_socket.close()
        raise
    return race, dns_ms


async def resolve_target(
    target: Target, deadline: float
) -> tuple[list[tuple[int, SockAddr]], float | None] | Observation:
    """The addresses to try and the resolution time (None for an IP literal).

    Every kind resolves its target here, datagram kinds included.

    Names go through the shared caching resolver (:mod:`agent.checks.resolver`), so ``dns_ms``
    is what this check spent resolving: close to zero when the answer was cached.
    """
    literal = dns.literal_address(target.host)
    if literal is not None:
        return [dns.sockaddr_for(literal, target.port)], None

    started = trio.current_time()
    resolver = dns.default_resolver()
    cached = resolver.resolve_known(target.host, target.port, target.family)
    if cached is not None:
        return interleave_families(cached), _ms(trio.current_time() - started)
    with trio.move_on_at(deadline):
        try:
            addresses = await resolver.resolve(
                target.host, target.port, target.family
            )
        except dns.ResolutionFailed as exc:
            return Observation(
                Outcome.FAILED,
                Reason.DNS,
                dns_ms=_ms(trio.current_time() - started),
                detail=str(exc),
            )
        return interleave_families(addresses), _ms(trio.current_time() - started)
    return Observation(
        Outcome.FAILED,
        Reason.DNS,
        dns_ms=_ms(trio.current_time() - started),
        detail=f"{target.host}: name resolution did not finish before the timeout",
    )


async def _connect_socket(sock: socket.socket, sockaddr: SockAddr, deadline: float) -> bool:
    """Connects a non-blocking socket, waiting for it with trio until ``deadline``.

    The same steps as ``trio.socket``'s ``connect`` without its wrapper object and
    address re-resolution, which cost a quarter of a check at high rates (the
    sockaddr here is always numeric). The deadline's cancel scope is entered only
    when there is something to wait for.

    Returns:
        True once connected; False when the deadline passed first.

    Raises:
        OSError: the connection failed (errno says why).
    """
    code = sock.connect_ex(sockaddr)
    if code == errno.EINPROGRESS:
        # On loopback and other local paths the handshake has usually completed by
        # the time connect() returns; asking again costs one system call, waiting
        # in epoll costs three and a trip through the event loop.
        code = sock.connect_ex(sockaddr)
    if code == errno.EALREADY:
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == errno.EALREADY:
            return False
    else:
        # Completed (or failed) at once. Only a cancellation point, not a full
        # yield: the caller's next wait yields anyway, and a yield per check costs.
        await trio.lowlevel.checkpoint_if_cancelled()
    if code == errno.EISCONN:
        code = 0
    if code != 0:
        raise OSError(code, os.strerror(code))
    return True


# struct tcp_info (linux/tcp.h): tcpi_rtt (µs) at byte 68, tcpi_total_retrans at 100.
_TCP_INFO_SIZE = 104
_U32 = struct.Struct("=I")
_TCPI_RTT_OFFSET = 68
_TCPI_TOTAL_RETRANS_OFFSET = 100


def kernel_handshake_s(sock: socket.socket, measured_s: float) -> float:
    """The handshake time the kernel measured, else ``measured_s``.

    Right after connect, Linux's smoothed RTT holds exactly one sample: SYN sent to
    SYN-ACK received, timestamped by the kernel. Unlike the event loop's clock it
    does not grow while the loop is busy with a thousand other checks. When a SYN
    was retransmitted the kernel's sample covers only the last SYN, so the loop's
    own measurement (which includes the wait) is kept.
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return measured_s
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SIZE)
    except OSError:
        return measured_s
    if len(info) < _TCP_INFO_SIZE:
        return measured_s
    (retransmits,) = _U32.unpack_from(info, _TCPI_TOTAL_RETRANS_OFFSET)
    (rtt_us,) = _U32.unpack_from(info, _TCPI_RTT_OFFSET)
    if retransmits or rtt_us == 0:
        return measured_s
    return min(measured_s, float(rtt_us) / 1_000_000)


@dataclass
class _Race:
    """Connection attempts started one after another, the first handshake wins."""

    addresses: list[tuple[int, SockAddr]]
    deadline: float
    winner: SockAddr | None = None
    winner_socket: socket.socket | None = None
    latency_s: float = 0.0
    failures: list[tuple[SockAddr, Reason, str]] = field(default_factory=list)
    unanswered: list[SockAddr] = field(default_factory=list)

    async def run(self) -> None:
        if len(self.addresses) == 1:
            # Nothing to race: skip the nursery, a task and the timers per check.
            await self._connect(*self.addresses[0])
            return
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
        if await self._connect(family, sockaddr):
            nursery.cancel_scope.cancel()
        else:
            attempt_failed.set()

    async def _connect(self, family: int, sockaddr: SockAddr) -> bool:
        """One connection attempt: True once its handshake completed.

        The first completed handshake wins and keeps its socket open
        (``winner_socket``); every other socket is closed on every path out,
        cancellation included: a check must never leak a file descriptor.
        """
        self.unanswered.append(sockaddr)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self.unanswered.remove(sockaddr)
            self.failures.append((sockaddr, classify_os_error(exc), os_message(exc)))
            return False
        won = False
        try:
            started = trio.current_time()
            try:
                connected = await _connect_socket(sock, sockaddr, self.deadline)
            except OSError as exc:
                self.unanswered.remove(sockaddr)
                self.failures.append((sockaddr, classify_os_error(exc), os_message(exc)))
                return False
            if not connected:
                return False  # left in `unanswered`: reported as a timeout
            self.unanswered.remove(sockaddr)
            # Two handshakes can complete in the same tick: the first one wins.
            if self.winner_socket is None:
                self.latency_s = kernel_handshake_s(sock, trio.current_time() - started)
                self.winner = sockaddr
                self.winner_socket = sock
                won = True
            return True
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
