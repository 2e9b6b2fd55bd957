"""The conversation every protocol probe has with a service, bounded in time and bytes.

:func:`run_exchange` connects exactly as the TCP probe does (DNS, happy eyeballs,
``latency_ms``, ``dns_ms``, ``address``), then hands an :class:`Exchange` to the
probe's own dialogue. The check's timeout is one deadline for the whole run,
connect included; every read takes at most the number of bytes the probe allows.

Inside a dialogue, a service answering the wrong way raises :class:`ProbeFailure`,
which :func:`run_exchange` turns into the returned Observation: it is the dialogue's
early return, and never leaves this module's callers.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Awaitable, Callable, Mapping

import trio

from agent.checks.tcp import Connection, open_connection, os_message
from agent.model import FactValue, Observation, Outcome, Target

# Reasons shared by every protocol probe (each probe adds its own).
CLOSED = "closed"  # the service closed or reset the connection mid-dialogue
TIMEOUT = "timeout"  # connected, but the answer did not come before the deadline
UNEXPECTED_REPLY = "unexpected_reply"  # an answer that is not this protocol
ANSWERED = "answered"  # the service answered as a healthy one does

# What a service says is shown in ``detail``, cut to this length.
DETAIL_LIMIT = 200


class ProbeFailure(Exception):  # an outcome carried out of a dialogue, not an error
    """The service answered in a way that ends the dialogue with this outcome.

    Args:
        outcome: failed or degraded (or ok, for "alive but needs credentials").
        reason: the word in the service's own terms (``auth_required``, ...).
        detail: the server's own message, when it gave one.
        facts: what was learned before the dialogue stopped.
    """

    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        detail: str | None = None,
        facts: Mapping[str, FactValue] | None = None,
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.detail = detail
        self.facts = dict(facts or {})

    def observation(self) -> Observation:
        """This outcome as an Observation (without the connection facts)."""
        return Observation(self.outcome, self.reason, detail=self.detail, facts=self.facts)


def printable(data: bytes | bytearray) -> str:
    """Server bytes as a short one-line text for ``detail``."""
    text = data.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


class Exchange:
    """A connected stream with a read buffer and the facts learned so far.

    Attributes:
        stream: the stream in use (replaced by a TLS stream after a STARTTLS).
        target: where the probe connected.
        deadline: the end of the check's time budget, on trio's clock.
        facts: what the dialogue learned; merged into the final Observation.
        warning: a softer outcome to report if the dialogue otherwise succeeds
            (a certificate close to expiry).
        waiting_for: what is being read now, for the timeout message.
    """

    def __init__(self, stream: trio.abc.Stream, target: Target, deadline: float) -> None:
        self.stream = stream
        self.target = target
        self.deadline = deadline
        self.facts: dict[str, FactValue] = {}
        self.warning: ProbeFailure | None = None
        self.waiting_for = "an answer"
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        """Sends all of ``data``; a closed connection ends the dialogue."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._closed(exc) from None

    async def _fill(self, limit: int) -> None:
        """Reads more into the buffer, never past ``limit`` bytes in total."""
        room = limit - len(self._buffer)
        if room <= 0:
            raise ProbeFailure(
                Outcome.FAILED,
                UNEXPECTED_REPLY,
                f"{self.waiting_for} is longer than {limit} bytes: {printable(self._buffer)}",
            )
        try:
            chunk = await self.stream.receive_some(room)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._closed(exc) from None
        if not chunk:
            raise self._closed(None)
        self._buffer += chunk

    def _closed(self, exc: BaseException | None) -> ProbeFailure:
        cause = exc.__cause__ if exc is not None else None
        if isinstance(cause, ssl.SSLError):  # an OSError too, but errno means nothing here
            how = f"TLS failed ({cause.reason or cause})"
        elif isinstance(cause, OSError):
            how = f"the connection failed ({os_message(cause)})"
        else:
            how = "the service closed the connection"
        received = f" after {printable(self._buffer)!r}" if self._buffer else ""
        return ProbeFailure(Outcome.FAILED, CLOSED, f"{how} before {self.waiting_for}{received}")

    def take_all(self) -> bytes:
        """Everything received and not yet consumed."""
        return self._take(len(self._buffer))

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def receive_exactly(self, count: int, what: str) -> bytes:
        """Reads exactly ``count`` bytes (``what`` names them in messages)."""
        self.waiting_for = what
        while len(self._buffer) < count:
            await self._fill(count)
        return self._take(count)

    async def receive_line(self, limit: int, what: str) -> bytes:
        """Reads one line, its ``\\n`` included, of at most ``limit`` bytes."""
        self.waiting_for = what
        while (end := self._buffer.find(b"\n")) < 0:
            await self._fill(limit)
        return self._take(end + 1)

    async def receive_until(
        self, is_complete: Callable[[bytes], bool], limit: int, what: str
    ) -> bytes:
        """Reads until ``is_complete(received)`` holds, the limit or the end of the stream.

        Returns:
            Everything received; the caller judges a reply cut short by the limit
            or by the service closing the connection.
        """
        self.waiting_for = what
        while not is_complete(bytes(self._buffer)) and len(self._buffer) < limit:
            try:
                await self._fill(limit)
            except ProbeFailure:
                if not self._buffer:
                    raise
                break
        return self.take_all()

    def replace_stream(self, stream: trio.abc.Stream) -> None:
        """Continues on ``stream`` (a TLS layer over the old one)."""
        if self._buffer:
            # Bytes read ahead of a TLS upgrade would be plaintext injected by a
            # man in the middle (the STARTTLS command injection attacks).
            raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                               "the service sent data before the TLS handshake")
        self.stream = stream


Dialogue = Callable[[Exchange], Awaitable[Observation]]


async def run_exchange(
    target: Target,
    timeout: float,
    dialogue: Dialogue,
    *,
    before: Callable[[Exchange], Awaitable[None]] | None = None,
) -> Observation:
    """Connects, runs ``dialogue`` within the check's timeout, closes.

    Args:
        target: where to connect.
        timeout: the check's total time budget, connect included.
        dialogue: the probe's conversation; returns the Observation of a service
            that answered, or raises :class:`ProbeFailure`.
        before: run first, on the same deadline (a TLS handshake for implicit TLS).

    Returns:
        The Observation, with the connection's latency, DNS time and address.
    """
    deadline = trio.current_time() + timeout
    connected = await open_connection(target, deadline, timeout=timeout)
    if isinstance(connected, Observation):
        return connected
    exchange = Exchange(connected.stream, target, deadline)
    observation: Observation | None = None
    try:
        with trio.move_on_at(deadline):
            try:
                if before is not None:
                    await before(exchange)
                observation = await dialogue(exchange)
            except ProbeFailure as failure:
                observation = failure.observation()
    finally:
        # Closing is bounded too: past the deadline, aclose closes at once.
        with trio.move_on_at(deadline):
            await exchange.stream.aclose()
        if exchange.stream is not connected.stream:
            connected.stream.socket.close()
    if observation is None:
        observation = Observation(
            Outcome.FAILED,
            TIMEOUT,
            detail=f"connected, but still waiting for {exchange.waiting_for} after {timeout:g}s",
        )
    elif observation.outcome is Outcome.OK and exchange.warning is not None:
        observation = dataclasses.replace(
            observation,
            outcome=exchange.warning.outcome,
            reason=exchange.warning.reason,
            detail=exchange.warning.detail,
        )
    return _with_connection_facts(observation, connected, exchange.facts)


def _with_connection_facts(
    observation: Observation, connected: Connection, facts: Mapping[str, FactValue]
) -> Observation:
    return dataclasses.replace(
        observation,
        latency_ms=connected.latency_ms,
        dns_ms=connected.dns_ms,
        address=connected.address,
        facts={**connected.facts, **facts, **observation.facts},
    )
