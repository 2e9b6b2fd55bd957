"""Hostile UDP services on loopback, and a harness that runs a datagram probe against them.

The datagram twin of :mod:`tests.faults.hostile`: a probe passes when, against
every server here, it returns an Observation within its timeout (plus the same
allowance), allocates a bounded amount of memory and closes its socket.
"""

from __future__ import annotations

import os
import socket
import tracemalloc
from collections.abc import Awaitable, Callable

import trio

from agent.checks import ProbeFn
from agent.model import Target
from tests.faults.hostile import ProbeRun, open_fd_count

# A flood answers each datagram with this many of the largest size UDP carries.
FLOOD_REPLIES = 2000
_BIG = b"\xff" * 65000

Reply = Callable[[trio.socket.SocketType, bytes, object], Awaitable[None]]


async def _garbage(sock: trio.socket.SocketType, query: bytes, peer: object) -> None:
    """Random bytes, with the query's first two bytes (a DNS ID) kept, so it looks like ours."""
    await sock.sendto(query[:2] + os.urandom(300), peer)


async def _flood(sock: trio.socket.SocketType, query: bytes, peer: object) -> None:
    """Thousands of 64 KB datagrams per question, as fast as the socket takes them."""
    for _ in range(FLOOD_REPLIES):
        try:
            await sock.sendto(query[:2] + _BIG, peer)
        except OSError:  # the probe's socket is gone: port unreachable comes back
            return


async def _echo(sock: trio.socket.SocketType, query: bytes, peer: object) -> None:
    """The question sent back as if it were the answer."""
    await sock.sendto(query, peer)


async def _silent(sock: trio.socket.SocketType, query: bytes, peer: object) -> None:
    """Reads and never answers."""


async def _stray(sock: trio.socket.SocketType, query: bytes, peer: object) -> None:
    """Endless small replies that carry another ID (late answers to someone else)."""
    other = bytes([query[0] ^ 0xFF, query[1]]) if len(query) >= 2 else b"\0\0"
    for _ in range(FLOOD_REPLIES):
        try:
            await sock.sendto(other + b"\x81\x80" + b"\0" * 40, peer)
        except OSError:
            return


HOSTILE_UDP_SERVERS: dict[str, Reply] = {
    "garbage": _garbage,
    "flood": _flood,
    "echo": _echo,
    "silent": _silent,
    "stray": _stray,
}


async def serve_hostile_udp(
    kind: str, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Runs the ``kind`` UDP server on 127.0.0.1 until cancelled; reports its port."""
    reply = HOSTILE_UDP_SERVERS[kind]
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname()[1])
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    query, peer = await sock.recvfrom(65535)
                except OSError:  # an ICMP error from an earlier reply
                    continue
                nursery.start_soon(reply, sock, query, peer)


async def run_datagram_probe_against(
    probe: ProbeFn, nursery: trio.Nursery, kind: str, *, timeout: float,
    make_target: Callable[[str, int], Target] = Target,
) -> ProbeRun:
    """Runs ``probe`` once against a fresh ``kind`` UDP server and measures it.

    ``leaked_fds`` counts descriptors the run left open (the server's socket is
    opened before the count starts).
    """
    port = await nursery.start(serve_hostile_udp, kind)
    fds_before = open_fd_count()
    tracemalloc.start()
    try:
        started = trio.current_time()
        observation = await probe(make_target("127.0.0.1", port), timeout=timeout)
        elapsed_s = trio.current_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ProbeRun(observation, elapsed_s, peak, max(0, open_fd_count() - fds_before))
