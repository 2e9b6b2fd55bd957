"""The generic probe: optionally send some bytes, then expect a reply matching a regex.

For services with a text protocol of their own: ``send = "STATUS\r\n"``,
``expect = "^OK"``. The reply is read until the pattern matches, up to
``read_limit`` bytes (default 1024) or the service closing the connection.
Reasons: ``answered``, ``no_match`` (with the reply in ``detail``).
``tls = true`` speaks TLS first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import Exchange, run_exchange
from agent.checks.steps import Expect, Send, Step, run_steps
from agent.common.tables import Table
from agent.model import Observation, Target

NO_MATCH = "no_match"
DEFAULT_READ_LIMIT = 1024
MAX_READ_LIMIT = 65536


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "expect"``: ``send``, ``expect``, ``read_limit``, ``tls``."""
    send = table.string("send", "")
    pattern_text = table.nonempty_string("expect")
    try:
        pattern = re.compile(pattern_text.encode("utf-8"), re.MULTILINE)
    except re.error as exc:
        raise table.error("expect", f"not a regular expression: {exc}") from None
    read_limit = table.integer("read_limit", DEFAULT_READ_LIMIT, minimum=1, maximum=MAX_READ_LIMIT)
    steps: list[Step] = [Send(send.encode("utf-8"))] if send else []
    steps.append(
        Expect(
            what="a reply matching expect",
            pattern=pattern,
            mismatch=NO_MATCH,
            end=None,
            limit=read_limit,
        )
    )
    return {
        "steps": tuple(steps),
        "tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False)),
    }


async def _dialogue(exchange: Exchange) -> Observation:
    steps = exchange.target.options["steps"]
    assert isinstance(steps, tuple)
    return await run_steps(exchange, steps)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects, sends ``send``, and reads until ``expect`` matches, within ``timeout``."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
