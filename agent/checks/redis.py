"""The Redis probe: PING, expecting ``+PONG`` (RESP, any Redis-compatible server).

PING needs no credentials and changes nothing. A server that wants them says so,
which proves it alive: ``-NOAUTH`` / ``-WRONGPASS`` → ok, ``auth_required``.
Reasons: ``answered``, ``auth_required``, ``loading`` (degraded: still loading its
dataset), ``busy`` (degraded: a script or function blocks it), ``master_down``
(degraded: a replica that lost its master), ``protected_mode`` (degraded: refuses
clients from other hosts), ``unexpected_reply``. ``tls = true`` speaks TLS first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import Exchange, run_exchange
from agent.checks.steps import Expect, Send, Verdict, run_steps
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

AUTH_REQUIRED = "auth_required"


def _error(prefix: bytes, outcome: Outcome, reason: str) -> Verdict:
    return Verdict(re.compile(rb"\A-" + prefix + rb"\b"), outcome, reason)


STEPS = (
    Send(b"*1\r\n$4\r\nPING\r\n"),
    Expect(
        what="the reply to PING",
        pattern=re.compile(rb"\A\+PONG\r?\n\Z"),
        verdicts=(
            _error(b"NOAUTH", Outcome.OK, AUTH_REQUIRED),
            _error(b"WRONGPASS", Outcome.OK, AUTH_REQUIRED),
            _error(b"LOADING", Outcome.DEGRADED, "loading"),
            _error(b"BUSY", Outcome.DEGRADED, "busy"),
            _error(b"MASTERDOWN", Outcome.DEGRADED, "master_down"),
            _error(b"DENIED", Outcome.DEGRADED, "protected_mode"),
        ),
        limit=512,
    ),
)


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "redis"``: ``tls`` and the TLS keys."""
    return {"tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False))}


async def _dialogue(exchange: Exchange) -> Observation:
    return await run_steps(exchange, STEPS)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and sends PING within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
