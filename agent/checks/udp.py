"""The generic UDP probe: send one datagram, expect a reply (matching a regex) in time.

For services that answer on UDP (syslog relays with an echo, game and VPN
endpoints, a custom health port): ``send = "PING"`` (or ``send_hex`` for binary
payloads), ``expect = "^PONG"`` (a regular expression the first reply must match;
without it any reply counts). Only the target's address and port can answer the
connected socket; the first reply decides, read up to ``read_limit`` bytes.

Reasons: ``answered``, ``no_match`` (the reply is in ``detail``), ``refused``
(ICMP port unreachable: nothing listens there), ``unreachable`` (a router says so),
``timeout`` (no answer: closed and filtered look the same without one).
``latency_ms`` is the response time; facts: ``reply_bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import trio

from agent.checks import datagram
from agent.checks.exchange import ANSWERED, ProbeFailure, printable
from agent.model import Observation, Outcome, Target
from agent.tables import Table

NO_MATCH = "no_match"
DEFAULT_READ_LIMIT = 1024
MAX_SEND = 65507


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "udp"``: ``send`` or ``send_hex``, ``expect``, ``read_limit``."""
    if table.has("send") == table.has("send_hex"):
        table.mark_read("send", "send_hex")
        raise table.error(None, "set exactly one of send and send_hex")
    if table.has("send"):
        payload = table.string("send").encode("utf-8")
    else:
        written = table.nonempty_string("send_hex")
        try:
            payload = bytes.fromhex(written)
        except ValueError:
            raise table.error("send_hex", f"not hexadecimal bytes: {written!r}") from None
    if len(payload) > MAX_SEND:
        key = "send" if table.has("send") else "send_hex"
        raise table.error(key, f"at most {MAX_SEND} bytes fit a datagram, got {len(payload)}")
    pattern_text = table.optional_string("expect")
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(pattern_text.encode("utf-8"), re.MULTILINE)
        except re.error as exc:
            raise table.error("expect", f"not a regular expression: {exc}") from None
    read_limit = table.integer("read_limit", DEFAULT_READ_LIMIT, minimum=1,
                               maximum=datagram.MAX_DATAGRAM)
    return {"payload": payload, "pattern": pattern, "read_limit": read_limit}


async def probe(target: Target, *, timeout: float) -> Observation:
    """Sends ``send`` to the target and waits for a reply within ``timeout``."""
    payload = target.options["payload"]
    pattern = target.options["pattern"]
    read_limit = target.options["read_limit"]
    assert isinstance(payload, bytes) and isinstance(read_limit, int)
    assert pattern is None or isinstance(pattern, re.Pattern)

    async def dialogue(datagrams: datagram.Datagrams) -> Observation:
        started = trio.current_time()
        await datagrams.send(payload)
        reply = await datagrams.receive(read_limit)
        latency_ms = datagram.ms(trio.current_time() - started)
        facts = {"reply_bytes": len(reply)}
        if pattern is not None and pattern.search(reply) is None:
            raise ProbeFailure(Outcome.FAILED, NO_MATCH,
                               f"the reply was {printable(reply)!r}", facts)
        return Observation(Outcome.OK, ANSWERED, latency_ms=latency_ms, facts=facts)

    return await datagram.run_datagrams(target, timeout, dialogue)
