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
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

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
    if pattern_text is not None:
        try:
            re.compile(pattern_text.encode("utf-8"), re.MULTILINE)
        except re.error as exc:
            raise table.error("expect", f"not a regular expression: {exc}") from None
    read_limit = table.integer("read_limit", DEFAULT_READ_LIMIT, minimum=1,
                               maximum=datagram.MAX_DATAGRAM)
    # Kept as written, so that ``config show`` writes them back as such; the probe
    # turns them into bytes and a pattern (re caches the compiled pattern).
    key = "send" if table.has("send") else "send_hex"
    return {key: table.raw[key], "expect": pattern_text, "read_limit": read_limit}


def _payload(options: Mapping[str, object]) -> bytes:
    send = options.get("send")
    if isinstance(send, str):
        return send.encode("utf-8")
    send_hex = options["send_hex"]
    assert isinstance(send_hex, str)
    return bytes.fromhex(send_hex)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Sends ``send`` to the target and waits for a reply within ``timeout``."""
    payload = _payload(target.options)
    expect = target.options["expect"]
    read_limit = target.options["read_limit"]
    assert isinstance(read_limit, int) and (expect is None or isinstance(expect, str))
    pattern = None if expect is None else re.compile(expect.encode("utf-8"), re.MULTILINE)

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
