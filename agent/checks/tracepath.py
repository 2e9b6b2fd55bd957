"""A short path trace to a target, unprivileged, as tracepath(8) does it.

When a check turns down the agent asks "how far do packets get?": UDP datagrams to
an unused port with TTL 1, 2, ... :data:`MAX_HOPS`, all sent at once on one
connected socket with ``IP_RECVERR``. Each router whose TTL runs out answers
"time exceeded" (that is the hop); the target itself answers "port unreachable"
(reached); a router without a route answers "network / host unreachable" (the
path ends there). Nothing needs a privilege, and the trace ends after
:data:`TRACE_BUDGET_S` whatever answers, so a path where packets vanish costs that
long at most.

:class:`PathTracer` runs it at most once per :data:`MIN_INTERVAL_S` per target, so
a flapping check does not trace on every flip.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

import trio

from agent.checks import recverr
from agent.checks.datagram import ms
from agent.checks.tcp import os_message, resolve_target
from agent.model import Hop, NetworkPath, Observation, Target

MAX_HOPS = 30
TRACE_BUDGET_S = 2.0
MIN_INTERVAL_S = 300.0
# The traceroute port range: normally nothing listens there.
TRACE_PORT = 33434
# Errors read per probe sent at most (a router may answer more than once).
MAX_ERRORS_PER_PROBE = 4
# Targets remembered for the rate limit; beyond, the oldest are forgotten.
MAX_REMEMBERED = 10_000
_MAGIC = b"hwtrace"


@dataclass
class _Trace:
    target: str
    token: bytes
    sent_at: dict[int, float] = field(default_factory=dict)
    answers: dict[int, tuple[str | None, float, recverr.QueuedError]] = field(
        default_factory=dict)

    def payload(self, ttl: int) -> bytes:
        return _MAGIC + self.token + bytes([ttl])

    def take(self, queued: recverr.QueuedError, now: float) -> None:
        prefix = _MAGIC + self.token
        data = queued.payload
        if len(data) != len(prefix) + 1 or not data.startswith(prefix):
            return
        ttl = data[-1]
        if ttl in self.sent_at and ttl not in self.answers:
            self.answers[ttl] = (queued.offender, now - self.sent_at[ttl], queued)

    def terminal_hop(self) -> int | None:
        """The lowest TTL whose answer ends the path (reached or unreachable)."""
        ends = [ttl for ttl, (_, _, queued) in self.answers.items() if not queued.time_exceeded]
        return min(ends) if ends else None

    def complete(self) -> bool:
        end = self.terminal_hop()
        return end is not None and all(ttl in self.answers for ttl in range(1, end))

    def path(self) -> NetworkPath:
        end_hop = self.terminal_hop()
        last = end_hop if end_hop is not None else max(self.answers, default=0)
        hops = []
        for ttl in range(1, last + 1):
            answer = self.answers.get(ttl)
            if answer is None:
                hops.append(Hop(ttl, None, None))
            else:
                hops.append(Hop(ttl, answer[0], ms(answer[1])))
        if end_hop is None:
            return NetworkPath(self.target, tuple(hops), "no_answer")
        offender, _, queued = self.answers[end_hop]
        if queued.port_unreachable and offender == self.target:
            return NetworkPath(self.target, tuple(hops), "reached")
        words = "TTL exceeded" if queued.time_exceeded else recverr.os_words(queued.errno)
        return NetworkPath(self.target, tuple(hops), "unreachable", words.lower())


def _set_ttl(sock: socket.socket, ttl: int) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


async def trace(address: str, *, budget_s: float = TRACE_BUDGET_S,
                max_hops: int = MAX_HOPS) -> NetworkPath:
    """Traces the path to IP ``address`` within ``budget_s`` seconds.

    Returns:
        The hops up to where the path ended or the last one that answered.
    """
    deadline = trio.current_time() + budget_s
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    run = _Trace(address, secrets.token_bytes(8))
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    except OSError as exc:
        return NetworkPath(address, (), "error", os_message(exc))
    with sock:
        try:
            recverr.enable(sock)
            sock.connect((address, TRACE_PORT))
        except OSError as exc:
            return NetworkPath(address, (), "error", os_message(exc))
        with trio.move_on_at(deadline):
            for ttl in range(1, max_hops + 1):
                failure = _send(sock, run, ttl)
                if failure is not None:
                    return NetworkPath(address, (), "error", failure)
                await trio.lowlevel.checkpoint()
            await _collect(sock, run, max_hops)
    return run.path()


def _send(sock: socket.socket, run: _Trace, ttl: int) -> str | None:
    """Sends the probe with ``ttl``; the OS message of a local error, else None.

    An ICMP error about an earlier probe also fails the next send on a connected
    socket: it is taken from the queue and the send tried again.
    """
    _set_ttl(sock, ttl)
    for _ in range(MAX_ERRORS_PER_PROBE):
        try:
            run.sent_at[ttl] = trio.current_time()
            sock.send(run.payload(ttl))
            return None
        except BlockingIOError:
            del run.sent_at[ttl]
            return None
        except OSError as exc:
            queued = recverr.read_queued(sock)
            if queued is None:
                del run.sent_at[ttl]
                # A local error (no route at all) is the whole answer.
                return os_message(exc)
            run.take(queued, trio.current_time())
    del run.sent_at[ttl]
    return None


async def _collect(sock: socket.socket, run: _Trace, max_hops: int) -> None:
    for _ in range(MAX_ERRORS_PER_PROBE * max_hops):
        if run.complete():
            return
        await trio.lowlevel.wait_readable(sock)
        queued = recverr.read_queued(sock)
        if queued is not None:
            run.take(queued, trio.current_time())
            continue
        try:
            sock.recv(1)  # something listens on the trace port: its reply means nothing
        except OSError:
            pass


@dataclass
class _InFlight:
    """A trace in progress that other checks of the same address wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    path: NetworkPath | None = None


@dataclass
class PathTracer:
    """Traces the path to a check's target when it goes down, at most so often.

    Checks that go down together (every service of a host that died) share one
    trace of their common address: those that ask while it runs get its path.

    Args:
        min_interval_s: the least time between two traces to one target.
        budget_s: how long one trace may take.
    """

    min_interval_s: float = MIN_INTERVAL_S
    budget_s: float = TRACE_BUDGET_S
    _last: dict[str, float] = field(default_factory=dict)
    _in_flight: dict[str, _InFlight] = field(default_factory=dict)

    async def trace_for(self, target: Target, observation: Observation) -> NetworkPath | None:
        """The path to where the check's probe went, or None (rate limit, no address).

        The address is the one the probe used (the proxy's, through a proxy); without
        one the target is resolved. Resolution and trace together take at most
        ``budget_s``.
        """
        deadline = trio.current_time() + self.budget_s
        address = observation.address
        if address is None:
            resolved = await resolve_target(target, deadline)
            if isinstance(resolved, Observation) or not resolved[0]:
                return None
            address = resolved[0][0][1][0]
        running = self._in_flight.get(address)
        if running is not None:
            with trio.move_on_at(deadline):
                await running.done.wait()
            return running.path
        now = trio.current_time()
        last = self._last.get(address)
        if last is not None and now - last < self.min_interval_s:
            return None
        self._last.pop(address, None)
        self._last[address] = now
        while len(self._last) > MAX_REMEMBERED:
            del self._last[next(iter(self._last))]
        in_flight = self._in_flight[address] = _InFlight()
        try:
            in_flight.path = await trace(address,
                                         budget_s=max(deadline - trio.current_time(), 0.0))
        finally:
            del self._in_flight[address]
            in_flight.done.set()
        return in_flight.path
