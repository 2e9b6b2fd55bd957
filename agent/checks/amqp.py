"""The AMQP 0-9-1 probe: send the protocol header, expect Connection.Start.

A broker answers the header ``AMQP\\x00\\x00\\x09\\x01`` with a Connection.Start
method frame on channel 0 (AMQP 0-9-1 specification, section 4.2.2) before any
login. A broker that does not speak 0-9-1 answers with the header it prefers and
closes. Facts: ``amqp_version``, ``amqp_product``, ``amqp_server_version``,
``amqp_mechanisms``. Reasons: ``answered``, ``protocol_mismatch``,
``unexpected_reply``. ``tls = true`` speaks TLS first (AMQPS, port 5671).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import (
    ANSWERED,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
    run_exchange,
)
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_END = 0xCE
CONNECTION_START = (10, 10)  # class connection, method start
# RabbitMQ's Connection.Start is about 500 bytes; frame_max starts at 4096.
FRAME_LIMIT = 4096

# Field-table value sizes by type letter (RabbitMQ's reading of 0-9-1, the one brokers use).
_FIXED_SIZES = {b"t": 1, b"b": 1, b"B": 1, b"s": 2, b"u": 2, b"I": 4, b"i": 4, b"l": 8,
                b"L": 8, b"f": 4, b"d": 8, b"D": 5, b"T": 8, b"V": 0}
_SIZED = {b"S", b"A", b"F", b"x"}  # a 32-bit length, then that many bytes


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "amqp"``: ``tls`` and the TLS keys."""
    return {"tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False))}


def table_strings(data: bytes) -> dict[str, str]:
    """The long-string entries of an AMQP field table (other entries are skipped).

    Reading stops, keeping what it has, at a type it does not know.
    """
    strings: dict[str, str] = {}
    position = 0
    while position < len(data):
        name_length = data[position]
        name = data[position + 1 : position + 1 + name_length].decode("utf-8", "replace")
        position += 1 + name_length
        kind = data[position : position + 1]
        position += 1
        if kind in _SIZED:
            (length,) = struct.unpack("!I", data[position : position + 4])
            if kind == b"S":
                value = data[position + 4 : position + 4 + length]
                strings[name] = value.decode("utf-8", "replace")
            position += 4 + length
        elif kind in _FIXED_SIZES:
            position += _FIXED_SIZES[kind]
        else:
            break
    return strings


def connection_start_facts(payload: bytes) -> dict[str, str]:
    """Facts from a Connection.Start method payload (after class and method ids)."""
    major, minor = payload[0], payload[1]
    (table_length,) = struct.unpack("!I", payload[2:6])
    properties = table_strings(payload[6 : 6 + table_length])
    position = 6 + table_length
    (mechanisms_length,) = struct.unpack("!I", payload[position : position + 4])
    mechanisms = payload[position + 4 : position + 4 + mechanisms_length]
    facts = {"amqp_version": f"{major}-{minor}",
             "amqp_mechanisms": printable(mechanisms)}
    for key, fact in (("product", "amqp_product"), ("version", "amqp_server_version")):
        if key in properties:
            facts[fact] = printable(properties[key].encode())
    return facts


async def _dialogue(exchange: Exchange) -> Observation:
    what = "Connection.Start"
    await exchange.send(PROTOCOL_HEADER)
    header = await exchange.receive_exactly(7, what)
    if header.startswith(b"AMQP"):
        offered = header + await exchange.receive_exactly(1, what)
        raise ProbeFailure(Outcome.FAILED, "protocol_mismatch",
                           f"the broker wants protocol {'.'.join(str(b) for b in offered[4:])}")
    frame_type, channel, size = struct.unpack("!BHI", header)
    if frame_type != FRAME_METHOD or channel != 0 or not 4 <= size <= FRAME_LIMIT:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"not an AMQP method frame: {printable(header)!r}")
    body = await exchange.receive_exactly(size + 1, what)
    if body[-1] != FRAME_END or struct.unpack("!HH", body[:4]) != CONNECTION_START:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           "the first frame is not Connection.Start")
    try:
        exchange.facts.update(connection_start_facts(body[4:-1]))
    except (IndexError, struct.error):
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           "Connection.Start is cut short") from None
    return Observation(Outcome.OK, ANSWERED)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and reads the broker's Connection.Start within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
