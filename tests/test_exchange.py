"""The dialogue machinery every protocol probe shares: deadline, limits, closing."""

from __future__ import annotations

import socket
import struct

import trio

from agent.checks import redis, smtp
from agent.model import Outcome
from tests.servers import serve_loopback, target


async def test_service_that_hangs_up_is_closed(nursery: trio.Nursery) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        # Read the PING first: closing with unread data would send a reset instead.
        await stream.receive_some(64)
        await stream.aclose()

    port = await serve_loopback(nursery, hang_up)
    observation = await redis.probe(target(port, {}, redis.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "closed")
    assert observation.detail == "the service closed the connection before the reply to PING"
    assert observation.latency_ms is not None and observation.address == "127.0.0.1"


async def test_reset_connection_names_the_os_error(nursery: trio.Nursery) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(64)
        # Linger 0: close sends a reset instead of a FIN.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()

    port = await serve_loopback(nursery, reset)
    observation = await redis.probe(target(port, {}, redis.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "closed")
    assert observation.detail == (
        "the connection failed (Connection reset by peer) before the reply to PING"
    )


async def test_one_deadline_for_the_whole_dialogue(nursery: trio.Nursery) -> None:
    # Each byte comes before any per-read timeout would fire; only a total deadline stops it.
    async def trickle(stream: trio.SocketStream) -> None:
        try:
            for byte in b"220-" + b"x" * 200:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.05)
        except trio.BrokenResourceError:
            pass

    port = await serve_loopback(nursery, trickle)
    started = trio.current_time()
    observation = await smtp.probe(target(port, {}, smtp.read_options), timeout=0.5)
    elapsed = trio.current_time() - started
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")
    assert observation.detail == "connected, but still waiting for the SMTP greeting after 0.5s"
    assert elapsed < 1.0


async def test_plaintext_sent_ahead_of_starttls_is_refused(nursery: trio.Nursery) -> None:
    # The STARTTLS command injection pattern: bytes the server (or a man in the middle)
    # sends after "220 ready" would otherwise be read as if they came over TLS.
    async def injecting(stream: trio.SocketStream) -> None:
        await stream.send_all(b"220 mx ESMTP\r\n")
        await stream.receive_some(256)  # EHLO
        await stream.send_all(b"250-mx\r\n250 STARTTLS\r\n")
        await stream.receive_some(256)  # STARTTLS
        await stream.send_all(b"220 ready\r\n250 injected\r\n")
        await stream.receive_some(256)

    port = await serve_loopback(nursery, injecting)
    options = {"starttls": True, "insecure": True}
    observation = await smtp.probe(target(port, options, smtp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "unexpected_reply")
    assert observation.detail == "the service sent data before the TLS handshake"


async def test_multiline_reply_is_read_to_its_last_line(nursery: trio.Nursery) -> None:
    async def chatty(stream: trio.SocketStream) -> None:
        await stream.send_all(b"220-mx.example.com ESMTP\r\n220-no UCE\r\n220 welcome\r\n")
        for reply in (b"250-mx\r\n250-SIZE 1000\r\n250 8BITMIME\r\n", b"221 bye\r\n"):
            await stream.receive_some(256)
            await stream.send_all(reply)

    port = await serve_loopback(nursery, chatty)
    observation = await smtp.probe(target(port, {}, smtp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["smtp_banner"] == "mx.example.com ESMTP"
