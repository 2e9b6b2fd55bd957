"""tcp.open_connection: the connector every protocol probe starts with."""

from __future__ import annotations

import trio

from agent.checks import tcp
from agent.model import Observation, Outcome, Reason, Target
from tests.netutil import refused_port
from tests.servers import serve_loopback


async def test_open_connection_hands_over_a_connected_stream(nursery: trio.Nursery) -> None:
    received: list[bytes] = []

    async def echo_once(stream: trio.SocketStream) -> None:
        received.append(await stream.receive_some(16))

    port = await serve_loopback(nursery, echo_once)
    deadline = trio.current_time() + 5
    connected = await tcp.open_connection(Target("127.0.0.1", port), deadline, timeout=5)
    assert isinstance(connected, tcp.Connection)
    assert (connected.address, connected.dns_ms, connected.deadline) == ("127.0.0.1", None,
                                                                         deadline)
    assert connected.latency_ms >= 0
    await connected.stream.send_all(b"hello")
    await connected.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert received == [b"hello"]


async def test_open_connection_failure_is_the_tcp_observation() -> None:
    with refused_port() as port:
        failed = await tcp.open_connection(Target("127.0.0.1", port), trio.current_time() + 5,
                                           timeout=5)
        probed = await tcp.probe(Target("127.0.0.1", port), timeout=5)
    assert isinstance(failed, Observation)
    assert (failed.outcome, failed.reason) == (Outcome.FAILED, Reason.REFUSED)
    assert failed == probed


async def test_tcp_probe_still_reports_open_and_closes(nursery: trio.Nursery) -> None:
    closed = trio.Event()

    async def wait_close(stream: trio.SocketStream) -> None:
        assert await stream.receive_some(16) == b""
        closed.set()

    port = await serve_loopback(nursery, wait_close)
    observation = await tcp.probe(Target("localhost", port, family="ipv4"), timeout=5)
    assert (observation.outcome, observation.reason, observation.address) == (
        Outcome.OK, Reason.OPEN, "127.0.0.1")
    assert observation.dns_ms is not None and observation.latency_ms is not None
    assert observation.facts == {}
    with trio.fail_after(5):
        await closed.wait()
