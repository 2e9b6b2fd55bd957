"""The SMTP probe: greeting, EHLO, optionally STARTTLS, QUIT (RFC 5321).

No mail is ever sent. A ``220`` greeting and a ``250`` reply to EHLO mean the
server answers. ``starttls = true`` also upgrades the session (the TLS facts and
reasons of the ``tls`` kind apply, ``cert_expiry_warning`` included), and
``tls = true`` speaks TLS from the first byte (SMTPS, port 465). Facts:
``smtp_banner`` (the greeting's text).

Reasons: ``answered``, ``service_unavailable`` (a 4xx reply such as ``421``),
``service_refused`` (a 5xx reply such as ``554``), ``bad_banner`` (not SMTP),
``starttls_unavailable`` (EHLO does not offer STARTTLS).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import Exchange, run_exchange
from agent.checks.steps import Expect, Send, StartTls, Step, Verdict, run_steps
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

# The last line of a reply has a space (or nothing) after its code (RFC 5321 4.2.1).
_LAST_LINE = re.compile(rb"^\d{3}(?: |$)")
_REFUSALS = (
    Verdict(re.compile(rb"\A4\d\d"), Outcome.FAILED, "service_unavailable"),
    Verdict(re.compile(rb"\A5\d\d"), Outcome.FAILED, "service_refused"),
)
# RFC 5321 4.5.3.1.5: a reply line is at most 512 bytes; a few lines per reply.
_REPLY_LIMIT = 4096


def _reply(what: str, code: bytes, mismatch: str = "unexpected_reply") -> Expect:
    return Expect(
        what=what,
        pattern=re.compile(rb"\A" + code + rb"[ -]?"),
        verdicts=_REFUSALS,
        mismatch=mismatch,
        end=_LAST_LINE,
        limit=_REPLY_LIMIT,
    )


GREETING = Expect(
    what="the SMTP greeting",
    pattern=re.compile(rb"\A220(?:[ -](?P<banner>[^\r\n]*))?"),
    verdicts=_REFUSALS,
    mismatch="bad_banner",
    end=_LAST_LINE,
    limit=_REPLY_LIMIT,
    facts=(("smtp_banner", "banner"),),
)


def dialogue_steps(ehlo_name: str, starttls: bool) -> tuple[Step, ...]:
    """The SMTP session as steps."""
    ehlo = Send(b"EHLO " + ehlo_name.encode("ascii") + b"\r\n")
    steps: list[Step] = [GREETING, ehlo]
    if starttls:
        steps += [
            Expect(
                what="the reply to EHLO",
                pattern=re.compile(rb"^250[ -]STARTTLS\s*$", re.M | re.I),
                verdicts=_REFUSALS,
                mismatch="starttls_unavailable",
                end=_LAST_LINE,
                limit=_REPLY_LIMIT,
            ),
            Send(b"STARTTLS\r\n"),
            _reply("the reply to STARTTLS", b"220"),
            StartTls(),
            ehlo,
        ]
    steps += [
        _reply("the reply to EHLO", b"250"),
        Send(b"QUIT\r\n"),
        _reply("the reply to QUIT", b"221"),
    ]
    return tuple(steps)


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "smtp"``: ``starttls``, ``tls``, ``ehlo_name``, TLS keys."""
    ehlo_name = table.nonempty_string("ehlo_name", "localhost")
    if not ehlo_name.isascii() or any(char.isspace() for char in ehlo_name):
        raise table.error("ehlo_name", f"must be a host name or address literal, got {ehlo_name!r}")
    starttls = table.boolean("starttls", False)
    implicit = table.boolean("tls", False)
    if starttls and implicit:
        raise table.error("starttls", "tls = true already speaks TLS from the first byte")
    settings = tls.read_tls_settings(table, enabled=starttls or implicit)
    return {
        "steps": dialogue_steps(ehlo_name, starttls),
        "tls": settings if implicit else None,
        "starttls": settings if starttls else None,
    }


async def _dialogue(exchange: Exchange) -> Observation:
    steps = exchange.target.options["steps"]
    starttls = exchange.target.options.get("starttls")
    assert isinstance(steps, tuple)
    assert starttls is None or isinstance(starttls, tls.TlsSettings)
    return await run_steps(exchange, steps, starttls)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and runs the SMTP session within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
