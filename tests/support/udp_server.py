"""A loopback UDP server that answers each datagram through a function the test gives."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio


async def serve_udp(
    answer: Callable[[bytes], bytes | None],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sends ``answer(datagram)`` back for each datagram (nothing for None) until cancelled.

    Reports the bound (host, port).
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, port))
        task_status.started(sock.getsockname())
        while True:
            try:
                request, peer = await sock.recvfrom(65535)
            except OSError:  # an ICMP error about an earlier reply
                continue
            reply = answer(request)
            if reply is not None:
                await sock.sendto(reply, peer)
