"""Text protocols as data: a dialogue is a tuple of send / expect / STARTTLS steps.

A new banner protocol is a table of steps, not a new state machine: the SSH,
SMTP, Redis and generic ``expect`` probes are all lists of :class:`Send`,
:class:`Expect` and :class:`StartTls` run by :func:`run_steps`.

An :class:`Expect` reads one reply (framed as lines up to an ``end`` line, or as a
byte stream until its pattern matches), checks the ``verdicts`` first (replies that
mean "alive but ..." or "refusing"), then the pattern a healthy reply matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.checks.exchange import (
    ANSWERED,
    CLOSED,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
)
from agent.checks.tls import TlsSettings, start_tls
from agent.model import Observation, Outcome

# Any single line is a whole reply.
ANY_LINE = re.compile(rb"")


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to send as they are."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reply that decides the outcome by itself (``-NOAUTH`` → ok, auth_required)."""

    pattern: re.Pattern[bytes]
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class Expect:
    """Read a reply and judge it.

    Attributes:
        what: the reply's name in messages ("the SSH identification string").
        pattern: what a healthy reply matches (searched, so anchor it).
        verdicts: replies with an outcome of their own, tried first, in order.
        mismatch: the reason when neither matches.
        end: frame the reply as lines, the last one matching this; None: read
            bytes until ``pattern`` or a verdict matches.
        limit: the most bytes this reply may take.
        facts: fact name → named group of ``pattern`` to record.
    """

    what: str
    pattern: re.Pattern[bytes]
    verdicts: tuple[Verdict, ...] = ()
    mismatch: str = UNEXPECTED_REPLY
    end: re.Pattern[bytes] | None = ANY_LINE
    limit: int = 1024
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StartTls:
    """Continue over TLS, with the check's TLS settings (after a STARTTLS reply)."""


Step = Send | Expect | StartTls


async def run_steps(
    exchange: Exchange, steps: Sequence[Step], tls: TlsSettings | None = None
) -> Observation:
    """Runs ``steps`` in order on ``exchange``.

    Returns:
        ok / answered when every step passed.

    Raises:
        ProbeFailure: a step's reply decided otherwise.
    """
    for step in steps:
        if isinstance(step, Send):
            await exchange.send(step.data)
        elif isinstance(step, StartTls):
            await start_tls(exchange, tls or TlsSettings())
        else:
            await _expect(exchange, step)
    return Observation(Outcome.OK, ANSWERED)


async def _receive_reply(exchange: Exchange, step: Expect) -> bytes:
    if step.end is None:
        patterns = [step.pattern, *(verdict.pattern for verdict in step.verdicts)]
        return await exchange.receive_until(
            lambda received: any(p.search(received) for p in patterns), step.limit, step.what
        )
    reply = b""
    while True:
        if len(reply) >= step.limit:
            raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                               f"{step.what} is longer than {step.limit} bytes")
        try:
            line = await exchange.receive_line(step.limit - len(reply), step.what)
        except ProbeFailure as failure:
            # A service that says something and hangs up is judged by what it said.
            reply += exchange.take_all()
            if failure.reason != CLOSED or not reply:
                raise
            return reply
        reply += line
        if step.end.search(line.rstrip(b"\r\n")):
            return reply


async def _expect(exchange: Exchange, step: Expect) -> None:
    reply = await _receive_reply(exchange, step)
    for verdict in step.verdicts:
        if verdict.pattern.search(reply):
            raise ProbeFailure(verdict.outcome, verdict.reason, printable(reply))
    match = step.pattern.search(reply)
    if match is None:
        raise ProbeFailure(
            Outcome.FAILED, step.mismatch, f"{step.what} was {printable(reply)!r}"
        )
    for fact, group in step.facts:
        value = match.group(group)
        if value is not None:
            exchange.facts[fact] = printable(value)
