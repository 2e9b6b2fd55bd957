"""The ICMP probe: echo requests ("ping") through an unprivileged ICMP datagram socket.

Linux lets any process open ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` whose
group is inside the sysctl ``net.ipv4.ping_group_range`` (it covers ICMPv6 as
well); systemd opens it to every group at boot, so the agent needs no capability
and its unit's sandbox stays as it is. Where the socket is not allowed, loading a
config with an ``icmp`` check fails with an error naming the sysctl.

An ``icmp`` check has a host and no port. It sends ``count`` echo requests
(default 3) a short interval apart, each carrying a random token, and waits for
the replies until the check's timeout. The kernel delivers only replies to this
socket's own identifier; a reply whose token or sequence is not ours is skipped
(a bounded number of times).

Reasons: ``answered`` (every request answered), ``packet_loss`` (degraded: some
were lost), ``timeout`` (none answered), ``unreachable`` (a router says the host
cannot be reached, and nothing answered). ``latency_ms`` is the average round
trip, so ``degraded_after`` applies to the average. Facts: ``icmp_sent``,
``icmp_received``, ``icmp_loss_percent``, ``icmp_rtt_min_ms``, ``icmp_rtt_avg_ms``,
``icmp_rtt_max_ms``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import socket
import struct
from collections.abc import Mapping

import trio

from agent.checks import datagram
from agent.checks.exchange import ANSWERED, TIMEOUT, ProbeFailure
from agent.common.tables import Table
from agent.model import FactValue, Observation, Outcome, Reason, Target

PACKET_LOSS = "packet_loss"
DEFAULT_COUNT = 3
MAX_COUNT = 20
# Requests go out this far apart (less when the timeout is short), so that a
# moment's congestion does not lose them all at once.
REQUEST_SPACING_S = 0.1
SYSCTL = "net.ipv4.ping_group_range"
SYSCTL_PATH = "/proc/sys/net/ipv4/ping_group_range"
_HEADER = struct.Struct("!BBHHH")
ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
TOKEN_BYTES = 16
READ_LIMIT = 512
# Replies that are not to one of this run's requests, skipped at most this many
# times per request sent.
MAX_STRAY_PER_REQUEST = 8


def not_allowed_message() -> str:
    """Why this process may not open an ICMP datagram socket, naming the sysctl."""
    try:
        with open(SYSCTL_PATH, encoding="ascii") as sysctl:
            current = " ".join(sysctl.read().split())
    except OSError:
        current = "unknown"
    return (f"icmp checks need unprivileged ICMP sockets, and {SYSCTL} ({current}) does not "
            f"include this process's group {os.getgid()}: set it to \"0 2147483647\" "
            "(systemd's default) or a range with the agent's group")


def sockets_allowed() -> bool:
    """Whether this process may open an unprivileged ICMP datagram socket."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    except OSError as exc:  # no IPv4 at all, say: the probe will tell
        return exc.errno != errno.EACCES
    return True


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "icmp"``: ``count``; fails where ICMP sockets are not allowed."""
    count = table.integer("count", DEFAULT_COUNT, minimum=1, maximum=MAX_COUNT)
    if not sockets_allowed():
        raise table.error("kind", not_allowed_message())
    return {"count": count}


@dataclasses.dataclass(slots=True)
class _Run:
    """The requests of one check run and the round trips of their replies."""

    family: int
    token: bytes
    count: int
    sent_at: dict[int, float] = dataclasses.field(default_factory=dict)
    round_trips: dict[int, float] = dataclasses.field(default_factory=dict)
    error: ProbeFailure | None = None
    strays: int = 0

    def request(self, sequence: int) -> bytes:
        # The kernel fills in the identifier and the checksum of a ping socket.
        return _HEADER.pack(ECHO_REQUEST[self.family], 0, 0, 0, sequence) + self.token

    def take(self, reply: bytes, now: float) -> None:
        if len(reply) >= _HEADER.size + TOKEN_BYTES:
            kind, code, _, _, sequence = _HEADER.unpack_from(reply)
            token = reply[_HEADER.size:_HEADER.size + TOKEN_BYTES]
            if (kind, code, token) == (ECHO_REPLY[self.family], 0, self.token) and (
                sequence in self.sent_at and sequence not in self.round_trips
            ):
                self.round_trips[sequence] = now - self.sent_at[sequence]
                return
        self.strays += 1

    def observation(self, timeout: float) -> Observation:
        sent, received = len(self.sent_at), len(self.round_trips)
        loss = round(100.0 * (sent - received) / sent, 1) if sent else 100.0
        facts: dict[str, FactValue] = {
            "icmp_sent": sent, "icmp_received": received, "icmp_loss_percent": loss,
        }
        if not received:
            if self.error is not None:
                return dataclasses.replace(self.error.observation(), facts=facts)
            ignored = f" ({self.strays} replies not to these requests ignored)" \
                if self.strays else ""
            return Observation(Outcome.FAILED, TIMEOUT, facts=facts,
                               detail=f"no echo reply to {sent} requests within "
                               f"{timeout:g}s{ignored}")
        trips = [datagram.ms(seconds) for seconds in self.round_trips.values()]
        average = round(sum(trips) / len(trips), 3)
        facts.update(icmp_rtt_min_ms=min(trips), icmp_rtt_avg_ms=average,
                     icmp_rtt_max_ms=max(trips))
        if received < sent:
            return Observation(Outcome.DEGRADED, PACKET_LOSS, latency_ms=average, facts=facts,
                               detail=f"{sent - received} of {sent} echo requests lost")
        return Observation(Outcome.OK, ANSWERED, latency_ms=average, facts=facts)


async def _exchange(datagrams: datagram.Datagrams, run: _Run, spacing_s: float) -> None:
    """Sends the requests ``spacing_s`` apart and takes replies until all are answered."""
    next_send = trio.current_time()
    sequence = 0
    while len(run.round_trips) < run.count:
        if sequence < run.count and trio.current_time() >= next_send:
            run.sent_at[sequence] = trio.current_time()
            await datagrams.send(run.request(sequence))
            sequence += 1
            next_send += spacing_s
        if run.strays > MAX_STRAY_PER_REQUEST * run.count:
            return
        with trio.move_on_at(next_send if sequence < run.count else datagrams.deadline):
            try:
                reply = await datagrams.receive(READ_LIMIT)
            except ProbeFailure as failure:  # an ICMP error about one request
                run.error = failure
                continue
            run.take(reply, trio.current_time())


async def probe(target: Target, *, timeout: float) -> Observation:
    """Sends ``count`` echo requests to ``target`` and waits for replies within ``timeout``."""
    count = target.options["count"]
    assert isinstance(count, int)
    spacing_s = min(REQUEST_SPACING_S, timeout / (2 * count))
    run = _Run(socket.AF_INET, secrets.token_bytes(TOKEN_BYTES), count)

    async def dialogue(datagrams: datagram.Datagrams) -> Observation:
        run.family = datagrams.sock.family
        await _exchange(datagrams, run, spacing_s)
        return run.observation(timeout)

    # The deadline ends the waiting, not the run: what arrived by then counts.
    observation = await datagram.run_datagrams(
        target, timeout, dialogue, proto=socket.IPPROTO_ICMP, on_silence=run.observation
    )
    if observation.reason == Reason.ERROR and os.strerror(errno.EACCES) in (
        observation.detail or ""
    ):
        return dataclasses.replace(observation, detail=not_allowed_message())
    return observation
