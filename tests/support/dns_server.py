"""A tiny authoritative DNS server on a loopback UDP port, for tests and benchmarks.

It answers A and AAAA questions from a dict the caller edits while it runs, so a
test can change a record, make a name vanish (NXDOMAIN) or fail (SERVFAIL), make
one record type of a name fail or go unanswered, and count the queries that
reached it.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

SERVFAIL = "servfail"
# As a record type's value: questions for it get no answer at all (a middlebox
# that drops AAAA queries, say), so the asker times out.
NO_ANSWER = "no-answer"


@dataclass
class Zone:
    """What the server answers.

    Attributes:
        records: lower-case name without the final dot → ("A" | "AAAA" → addresses,
            or :data:`SERVFAIL` / :data:`NO_ANSWER` for that type alone), or
            :data:`SERVFAIL` for the whole name; names not present get NXDOMAIN.
        ttl_s: the TTL of every answer.
        queries: (name, type) → how many questions arrived.
    """

    records: dict[str, dict[str, list[str] | str] | str] = field(default_factory=dict)
    ttl_s: int = 30
    queries: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def answer(self, wire: bytes) -> bytes:
        """The response to one query message (for a zone without :data:`NO_ANSWER`)."""
        response = self.respond(wire)
        assert response is not None, "this zone leaves some questions unanswered"
        return response

    def respond(self, wire: bytes) -> bytes | None:
        """The response to one query message, or None to leave it unanswered."""
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        entry = self.records.get(name)
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            assert isinstance(entry, dict)
            addresses = entry.get(rdtype, [])
            if addresses == NO_ANSWER:
                return None
            if addresses == SERVFAIL:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif addresses:
                assert isinstance(addresses, list)
                response.answer.append(
                    dns.rrset.from_text_list(question.name, self.ttl_s, "IN", rdtype, addresses)
                )
        return response.to_wire()


async def serve_dns(
    zone: Zone,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answers queries from ``zone`` until cancelled; reports the bound (host, port)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, port))
        task_status.started(sock.getsockname())
        while True:
            wire, peer = await sock.recvfrom(65535)
            response = zone.respond(wire)
            if response is not None:
                await sock.sendto(response, peer)
