"""Real loopback endpoints for tests: an open port, a refused port, a silent port."""

from __future__ import annotations

import contextlib
import re
import select
import socket
from collections.abc import Iterator

import pytest

# A silent port needs its accept queue full; the kernel then drops further SYNs and a
# connect hangs until its timeout. A handful of fillers always suffices on Linux.
MAX_QUEUE_FILLERS = 16


@contextlib.contextmanager
def open_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A listening port (connections complete and wait in the accept queue)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(128)
        yield listener.getsockname()[1]


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port bound but not listening: the kernel answers SYN with RST. Holding the
    socket keeps anyone else from taking the port while the test runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as bound:
        bound.bind((host, 0))
        yield bound.getsockname()[1]


@contextlib.contextmanager
def silent_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A listening port whose accept queue is full, so new connects time out."""
    fillers: list[socket.socket] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        try:
            for _ in range(MAX_QUEUE_FILLERS):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex((host, port))
                _, writable, _ = select.select([], [filler], [], 0.2)
                if not writable:
                    break  # this SYN was dropped: the queue is full
            else:
                raise RuntimeError("could not fill the accept queue")
            yield port
        finally:
            for filler in fillers:
                filler.close()


def has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound on this machine."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


# Marks a test that needs ::1 (skipped where IPv6 is off).
needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    import os

    return len(os.listdir("/proc/self/fd"))


def refused_reason(port: int, before: str = "") -> str:
    """A pattern for a refused connect's reason as the agent words it.

    trio 0.23 and later name the address of each attempt; trio 0.22 (Debian 12)
    gives the reason alone.
    """
    return re.escape(before) + rf"\((127\.0\.0\.1:{port}: )?Connection refused\)"
