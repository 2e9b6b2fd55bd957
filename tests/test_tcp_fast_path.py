"""The TCP probe on real loopback sockets: open, refused, and no descriptor leaks."""

from __future__ import annotations

import os
import socket

from agent.checks import tcp
from agent.model import Outcome, Reason, Target


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_open_refused_and_no_leaked_descriptors() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: refuses
    with listener, closed:
        fds_before = _open_fds()
        for _ in range(200):
            seen = await tcp.probe(Target("127.0.0.1", port), timeout=2)
            assert seen.outcome is Outcome.OK and seen.reason == Reason.OPEN
            assert seen.address == "127.0.0.1" and seen.dns_ms is None
            assert seen.latency_ms is not None and 0 <= seen.latency_ms < 2000
            refused = await tcp.probe(Target("127.0.0.1", closed_port), timeout=2)
            assert refused.reason == Reason.REFUSED
            assert refused.detail == f"127.0.0.1:{closed_port}: Connection refused"
        assert _open_fds() == fds_before


async def test_a_hosts_file_name_reports_dns_time_and_connects() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    with listener:
        seen = await tcp.probe(
            Target("localhost", listener.getsockname()[1], family="ipv4"), timeout=2
        )
    assert seen.reason == Reason.OPEN and seen.address == "127.0.0.1"
    assert seen.dns_ms is not None and seen.dns_ms >= 0


def test_handshake_time_comes_from_the_kernel_when_it_has_it() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    client = socket.create_connection(listener.getsockname())
    with listener, client:
        kernel_s = tcp.kernel_handshake_s(client, 10.0)
        assert 0 < kernel_s < 10.0  # the kernel's sample, not the fallback
        assert tcp.kernel_handshake_s(client, 1e-9) == 1e-9  # never above the loop's own
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        assert tcp.kernel_handshake_s(udp, 0.5) == 0.5  # no TCP_INFO: the fallback
