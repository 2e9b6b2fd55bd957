"""The DNS probe: ask the check's server one question and judge the answer.

The check's ``host`` and ``port`` (default 53) are the DNS server asked, as every
kind's target is. ``name`` and ``type`` (A, AAAA, CNAME, MX, TXT, SRV, NS, SOA,
PTR; default A) say what to ask; a PTR question may name an IP address, which is
turned into its ``in-addr.arpa`` / ``ip6.arpa`` name. The question goes over UDP
and again over TCP when the answer comes back truncated, or over TCP only with
``transport = "tcp"``. ``expect`` lists values the answer must contain (all of
them; names compare without case and final dot, TXT as its joined text).

Reasons: ``answered``; ``nxdomain``, ``servfail``, ``refused`` (the server's
rcode, or its port unreachable), another rcode in lower case (``formerr``,
``notimp``), ``no_answer`` (NOERROR without records of that type),
``answer_mismatch`` (an ``expect`` value missing), ``unexpected_reply`` (not a
DNS response), ``timeout``. ``latency_ms`` is the server's response time (query
sent to answer read, a TCP connect excluded); facts: ``rcode``, ``answers``,
``ttl`` (the smallest of the answer), ``response_ms``, ``transport``.

dnspython is imported when a DNS check is configured, not with this module: an
agent without DNS checks never loads it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from agent.checks import datagram
from agent.checks.exchange import (
    ANSWERED,
    TIMEOUT,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
)
from agent.checks.tcp import open_connection
from agent.common.tables import Table
from agent.model import FactValue, Observation, Outcome, Target

if TYPE_CHECKING:
    import dns.message

DEFAULT_PORT = 53
RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "SOA", "PTR")
NO_ANSWER = "no_answer"
ANSWER_MISMATCH = "answer_mismatch"
# Plain DNS over UDP without EDNS is at most 512 bytes; a server that sends more
# (or EDNS-sized answers anyway) is read up to this.
UDP_READ_LIMIT = 4096
# Replies whose ID is not ours (a late answer to an earlier check) are skipped, up
# to this many: a server flooding them cannot keep the probe reading.
MAX_STRAY_REPLIES = 16
MAX_EXPECT = 32
# The ``answers`` fact lists at most this many records.
MAX_LISTED_ANSWERS = 8


@dataclass(frozen=True, slots=True)
class Question:
    """What a DNS check asks, validated at config time.

    Attributes:
        name: the name asked, absolute ("www.example.com.").
        rdtype: the record type ("A", ...).
        transport: "udp" (TCP when truncated) or "tcp".
        expect: normalised values the answer must all contain.
    """

    name: str
    rdtype: str
    transport: str
    expect: tuple[str, ...]


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "dns"``: ``name``, ``type``, ``transport``, ``expect``.

    Imports what the probe uses of dnspython, so that its first run does not.
    """
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdatatype
    import dns.reversename

    rdtype = table.choice("type", RECORD_TYPES, "A")
    written = table.nonempty_string("name")
    try:
        if rdtype == "PTR" and _is_address(written):
            name = dns.reversename.from_address(written)
        else:
            name = dns.name.from_text(written)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise table.error("name", f"not a DNS name: {exc}") from None
    transport = table.choice("transport", ("udp", "tcp"), "udp")
    expected = table.string_list("expect")
    if len(expected) > MAX_EXPECT:
        raise table.error("expect", f"at most {MAX_EXPECT} values, got {len(expected)}")
    normalised = []
    for index, value in enumerate(expected):
        if rdtype in ("A", "AAAA"):
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise table.error(f"expect[{index}]",
                                  f"an {rdtype} answer is an IP address, got {value!r}") from None
            if (address.version == 4) != (rdtype == "A"):
                raise table.error(f"expect[{index}]",
                                  f"an {rdtype} answer is an IPv{6 if rdtype == 'AAAA' else 4} "
                                  f"address, got {value!r}")
        normalised.append(normalise(value, rdtype))
    # Kept under the file's own keys, so that ``config show`` writes them back as such.
    return {"name": name.to_text(), "type": rdtype, "transport": transport,
            "expect": tuple(normalised)}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalise(text: str, rdtype: str) -> str:
    """A record's text in the form answers and ``expect`` values compare in."""
    if rdtype == "TXT":
        return text
    if rdtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text
    return " ".join(word.rstrip(".") for word in text.split()).lower()


def _question(target: Target) -> Question:
    options = target.options
    name, rdtype, transport, expect = (options["name"], options["type"], options["transport"],
                                       options["expect"])
    assert isinstance(name, str) and isinstance(rdtype, str) and isinstance(transport, str)
    assert isinstance(expect, tuple)
    return Question(name, rdtype, transport, expect)


def _make_query(question: Question) -> dns.message.Message:
    import dns.message

    query = dns.message.make_query(question.name, question.rdtype)
    # dnspython picks a random ID too; secrets says so for whoever reads this.
    query.id = secrets.randbelow(1 << 16)
    return query


def _parse(wire: bytes, query: dns.message.Message) -> dns.message.Message | None:
    """The response in ``wire``, or None when it answers another query (another ID).

    Raises:
        ProbeFailure: the bytes are not a DNS response.
    """
    import dns.exception
    import dns.message

    if len(wire) >= 2 and struct.unpack_from("!H", wire)[0] != query.id:
        return None
    try:
        response = dns.message.from_wire(wire, ignore_trailing=True, one_rr_per_rrset=False)
    except (dns.exception.DNSException, ValueError, UnicodeError, struct.error) as exc:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"not a DNS response ({exc}): {printable(wire)!r}") from None
    if not query.is_response(response):
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           "the response does not answer the question asked")
    return response


async def _ask_udp(datagrams: datagram.Datagrams, query: dns.message.Message) -> bytes:
    await datagrams.send(query.to_wire())
    for _ in range(MAX_STRAY_REPLIES):
        wire = await datagrams.receive(UDP_READ_LIMIT)
        if len(wire) < 2 or struct.unpack_from("!H", wire)[0] == query.id:
            return wire
    raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                       f"{MAX_STRAY_REPLIES} replies in a row answered another query")


async def _ask_tcp(exchange: Exchange, query: dns.message.Message) -> bytes:
    wire = query.to_wire()
    await exchange.send(struct.pack("!H", len(wire)) + wire)
    (length,) = struct.unpack("!H", await exchange.receive_exactly(2, "the response length"))
    return await exchange.receive_exactly(length, "the DNS response")


async def _over_tcp(target: Target, deadline: float, timeout: float,
                    query: dns.message.Message) -> tuple[bytes, float] | Observation:
    """Asks over TCP; the response and its time, or the failed Observation."""
    connected = await open_connection(target, deadline, timeout=timeout)
    if isinstance(connected, Observation):
        return connected
    exchange = Exchange(connected.stream, target, deadline)
    try:
        with trio.move_on_at(deadline):
            started = trio.current_time()
            try:
                wire = await _ask_tcp(exchange, query)
            except ProbeFailure as failure:
                return dataclasses.replace(failure.observation(), address=connected.address)
            return wire, trio.current_time() - started
    finally:
        with trio.move_on_at(deadline):
            await exchange.stream.aclose()
        connected.stream.socket.close()
    return Observation(Outcome.FAILED, TIMEOUT, address=connected.address,
                       detail=f"connected over TCP, but no response within {timeout:g}s")


async def probe(target: Target, *, timeout: float) -> Observation:
    """Asks the check's question of the DNS server at ``target`` within ``timeout``."""
    import dns.flags

    question = _question(target)
    query = _make_query(question)
    deadline = trio.current_time() + timeout
    transport = question.transport
    truncated: Observation | None = None
    if transport == "udp":
        sent_at: list[float] = []

        async def dialogue(datagrams: datagram.Datagrams) -> Observation:
            sent_at.append(trio.current_time())
            wire = await _ask_udp(datagrams, query)
            response_s = trio.current_time() - sent_at[0]
            response = _parse(wire, query)
            assert response is not None  # _ask_udp returned only our ID
            if response.flags & dns.flags.TC:
                return Observation(Outcome.FAILED, "truncated")
            return _judge(response, question, response_s, "udp")

        observation = await datagram.run_datagrams(target, timeout, dialogue)
        if observation.reason != "truncated":
            return observation
        truncated = observation
        transport = "tcp"
    remaining = deadline - trio.current_time()
    answered = await _over_tcp(target, deadline, max(remaining, 0.0), query)
    if isinstance(answered, Observation):
        observation = answered
    else:
        wire, response_s = answered
        try:
            response = _parse(wire, query)
            if response is None:
                raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                                   "the response over TCP answers another query")
            observation = _judge(response, question, response_s, transport)
        except ProbeFailure as failure:
            observation = failure.observation()
    if truncated is not None:
        observation = dataclasses.replace(
            observation, dns_ms=truncated.dns_ms,
            facts={**observation.facts, "truncated_over_udp": True},
        )
    return observation


def _rdata_text(rdata: object, rdtype: str) -> str:
    if rdtype == "TXT":
        strings = getattr(rdata, "strings", ())
        return b"".join(strings).decode("utf-8", "replace")
    return str(rdata)


def _judge(response: dns.message.Message, question: Question, response_s: float,
           transport: str) -> Observation:
    import dns.rcode
    import dns.rdatatype

    rcode = dns.rcode.to_text(response.rcode())
    facts: dict[str, FactValue] = {
        "rcode": rcode,
        "response_ms": datagram.ms(response_s),
        "transport": transport,
    }
    latency_ms = datagram.ms(response_s)
    if rcode != "NOERROR":
        return Observation(Outcome.FAILED, rcode.lower(), latency_ms=latency_ms,
                           detail=f"{question.name} {question.rdtype}: the server answered "
                           f"{rcode}", facts=facts)
    wanted = dns.rdatatype.from_text(question.rdtype)
    records = [rrset for rrset in response.answer if rrset.rdtype == wanted]
    answers = [_rdata_text(rdata, question.rdtype) for rrset in records for rdata in rrset]
    if not answers:
        return Observation(Outcome.FAILED, NO_ANSWER, latency_ms=latency_ms,
                           detail=f"{question.name} exists but has no {question.rdtype} "
                           "records", facts=facts)
    facts["ttl"] = min(rrset.ttl for rrset in records)
    listed = answers[:MAX_LISTED_ANSWERS]
    more = f" (+{len(answers) - len(listed)} more)" if len(answers) > len(listed) else ""
    facts["answers"] = printable(", ".join(listed).encode()) + more
    facts["answer_count"] = len(answers)
    present = {normalise(answer, question.rdtype) for answer in answers}
    missing = [value for value in question.expect if value not in present]
    if missing:
        return Observation(Outcome.FAILED, ANSWER_MISMATCH, latency_ms=latency_ms,
                           detail=f"{question.name} {question.rdtype}: expected "
                           f"{', '.join(missing)}, got {facts['answers']}", facts=facts)
    return Observation(Outcome.OK, ANSWERED, latency_ms=latency_ms, facts=facts)
