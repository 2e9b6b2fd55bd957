"""Hostile targets on loopback, and a harness that runs any probe against them.

A probe passes when, against every server here, it returns an Observation within
its timeout (plus a small allowance for scheduling), allocates a bounded amount of
memory whatever the server sends, and leaves no file descriptor open. Protocol
probes plug in by calling :func:`run_probe_against` with their own probe function.
"""

from __future__ import annotations

import os
import socket
import struct
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from agent.checks import ProbeFn
from agent.model import Observation, Target

FLOOD_BYTES = 100 * 1024 * 1024
# What a probe run may take beyond its timeout (real clock, a loaded machine) and
# allocate, whatever the server does.
ALLOWANCE_S = 0.5
MAX_PEAK_ALLOCATED = 512 * 1024
TRICKLE_BYTES = 60
_CHUNK = b"x" * (256 * 1024)


async def _flood(stream: trio.SocketStream) -> None:
    """A 100 MB banner, as fast as the peer takes it."""
    sent = 0
    while sent < FLOOD_BYTES:
        await stream.send_all(_CHUNK)
        sent += len(_CHUNK)


async def _trickle(stream: trio.SocketStream) -> None:
    """One byte a second: a banner that never ends within any sane timeout."""
    for _ in range(TRICKLE_BYTES):
        await stream.send_all(b"2")
        await trio.sleep(1)


async def _silent(stream: trio.SocketStream) -> None:
    """Accepts and never speaks."""
    await trio.sleep_forever()


async def _reset(stream: trio.SocketStream) -> None:
    """Accepts and answers with a TCP reset (SO_LINGER 0 makes close send RST)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


HOSTILE_SERVERS: dict[str, Callable[[trio.SocketStream], Awaitable[None]]] = {
    "flood": _flood,
    "trickle": _trickle,
    "silent": _silent,
    "reset": _reset,
}


async def start_hostile_server(nursery: trio.Nursery, kind: str) -> tuple[str, int]:
    """Starts the ``kind`` server on 127.0.0.1 (stopped with the nursery)."""
    handler = HOSTILE_SERVERS[kind]

    async def guarded(stream: trio.SocketStream) -> None:
        # The client hanging up mid-send is this server's normal ending.
        try:
            await handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    listeners = await nursery.start(trio.serve_tcp, guarded, 0)
    sockname = listeners[0].socket.getsockname()
    return "127.0.0.1", sockname[1]


@dataclass(frozen=True)
class ProbeRun:
    """How one probe run against a hostile server went.

    Attributes:
        observation: what the probe returned.
        elapsed_s: real time it took.
        peak_allocated: the most Python memory allocated during the run, in bytes.
        leaked_fds: client sockets to the server still open after the run.
    """

    observation: Observation
    elapsed_s: float
    peak_allocated: int
    leaked_fds: int


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def client_sockets_to(port: int) -> int:
    """How many sockets this process holds that are connected *to* ``port``.

    The servers run in this process too, so a plain descriptor count would include
    their side of each connection; /proc/net/tcp tells the two sides apart.
    """
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] != "0":
                    inodes.add(f"socket:[{fields[9]}]")
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += os.readlink(f"/proc/self/fd/{fd}") in inodes
        except OSError:  # closed while listing
            pass
    return held


async def run_probe_against(
    probe: ProbeFn, nursery: trio.Nursery, kind: str, *, timeout: float,
    make_target: Callable[[str, int], Target] = Target,
) -> ProbeRun:
    """Runs ``probe`` once against a fresh ``kind`` server and measures it."""
    host, port = await start_hostile_server(nursery, kind)
    tracemalloc.start()
    try:
        started = trio.current_time()
        observation = await probe(make_target(host, port), timeout=timeout)
        elapsed_s = trio.current_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ProbeRun(observation, elapsed_s, peak, client_sockets_to(port))
