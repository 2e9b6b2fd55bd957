"""The NTP probe against a private chronyd, and a tiny server for what chrony cannot fake."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from agent.checks import ntp
from agent.config import loader as config
from agent.model import Observation, Outcome
from tests.servers import Server, free_port, require, start, target
from tests.support.ntp_server import NtpBehaviour, serve_ntp

StartChrony = Callable[..., Server]


def ntp_answers(port: int) -> bool:
    """Whether an NTP server answers a client request on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(b"\x23" + b"\0" * 47, ("127.0.0.1", port))
        try:
            return len(sock.recv(1024)) >= 48
        except OSError:
            return False


@pytest.fixture
def start_chrony(tmp_path: Path, stop_after: list[Server]) -> StartChrony:
    """chronyd serving time on a loopback port; it never touches this host's clock (-x)."""
    require("chronyd")

    def start_chrony(*lines: str) -> Server:
        port = free_port()
        conf = tmp_path / f"chrony-{port}.conf"
        conf.write_text("\n".join([
            f"port {port}", "bindaddress 127.0.0.1", "allow 127.0.0.1", "cmdport 0",
            f"pidfile {tmp_path / f'chronyd-{port}.pid'}", *lines, "",
        ]))
        server = start(["chronyd", "-d", "-x", "-f", str(conf), "-u", "root"], port,
                       tmp_path / f"chrony-{port}.log", ready=lambda: ntp_answers(port))
        stop_after.append(server)
        return server

    return start_chrony


async def probe(port: int, **settings: object) -> Observation:
    return await ntp.probe(target(port, settings, ntp.read_options), timeout=2)


async def test_chrony_answers_with_its_stratum_and_offset(start_chrony: StartChrony) -> None:
    server = start_chrony("local stratum 8")
    observation = await probe(server.port)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["ntp_stratum"] == 8
    assert observation.facts["ntp_version"] == 4
    offset = observation.facts["ntp_offset_ms"]
    assert isinstance(offset, float) and abs(offset) < 50  # the same clock, on loopback
    assert observation.latency_ms is not None and observation.latency_ms < 1000


async def test_chrony_without_a_source_is_unsynchronized(start_chrony: StartChrony) -> None:
    server = start_chrony()
    observation = await probe(server.port)
    assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "unsynchronized")


async def test_the_offset_is_the_servers_clock_minus_ours(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_ntp, NtpBehaviour(offset_s=2.5))
    observation = await probe(port)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered")
    offset = observation.facts["ntp_offset_ms"]
    assert isinstance(offset, float) and abs(offset - 2500) < 50
    assert observation.facts["ntp_reference"] == "10.0.0.1"
    assert observation.facts["ntp_root_delay_ms"] == 250.0


async def test_an_offset_past_max_offset_is_degraded(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_ntp, NtpBehaviour(offset_s=-2.5))
    observation = await probe(port, max_offset="1s")
    assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "clock_offset")
    assert (observation.detail or "").startswith("the server's clock is -25")


async def test_kiss_of_death(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_ntp, NtpBehaviour(stratum=0, leap=3, refid=b"RATE"))
    observation = await probe(port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "kiss_of_death")
    assert observation.facts["ntp_kiss_code"] == "RATE"


async def test_a_reply_that_does_not_echo_our_request_is_not_taken(
    nursery: trio.Nursery,
) -> None:
    """Replies to someone else's request (another origin timestamp) are skipped."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))

        async def answer_wrongly() -> None:
            request, peer = await sock.recvfrom(1024)
            forged = bytearray(NtpBehaviour().answer(request))
            struct.pack_into("!Q", forged, 24, 12345)
            await sock.sendto(bytes(forged), peer)

        nursery.start_soon(answer_wrongly)
        wrong = target(sock.getsockname()[1], {}, ntp.read_options)
        observation = await ntp.probe(wrong, timeout=0.3)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")


def test_the_port_defaults_to_123() -> None:
    table = {"host": "127.0.0.1", "kind": "ntp", "max_offset": "100ms"}
    check = config.parse([("agent.toml", {"checks": {"c": table}})]).checks[0]
    assert check.port == 123
    assert check.options["max_offset_s"] == 0.1
