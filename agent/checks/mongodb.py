"""The MongoDB probe: ``hello`` in an OP_MSG, read the server's role.

``hello`` needs no authentication (it is what drivers send first). The answer says
whether the server takes writes (``isWritablePrimary``), is a ``secondary``, or
neither (a replica set member that is starting, recovering or an arbiter).
A server older than 4.4.2 does not know ``hello``; the probe then asks the legacy
``isMaster`` on the same connection.

Facts: ``mongo_role`` (primary, secondary, arbiter or other), ``mongo_set_name``,
``mongo_max_wire_version``. Reasons: ``answered``, ``not_ready`` (degraded: a
member that is neither primary nor secondary), ``server_error``, ``unexpected_reply``.
``tls = true`` speaks TLS first.
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
    run_exchange,
)
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

OP_MSG = 2013
# hello answers are a few hundred bytes; large replica sets list many hosts.
MESSAGE_LIMIT = 65536
COMMAND_NOT_FOUND = 59

BsonValue = str | int | float | bool | None

# BSON element sizes by type (bsonspec.org), for values the probe skips.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x09: 8, 0x0A: 0, 0x11: 8, 0x12: 8, 0x13: 16,
          0x7F: 0, 0xFF: 0}


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "mongodb"``: ``tls`` and the TLS keys."""
    return {"tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False))}


def command(name: str, request_id: int) -> bytes:
    """An OP_MSG carrying ``{<name>: 1, $db: "admin"}``."""
    elements = (
        b"\x10" + name.encode() + b"\0" + struct.pack("<i", 1)
        + b"\x02$db\0" + struct.pack("<i", 6) + b"admin\0"
    )
    document = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\0"
    body = struct.pack("<I", 0) + b"\0" + document  # flagBits, section kind 0
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body


def top_level(document: bytes) -> dict[str, BsonValue]:
    """The scalar top-level fields of a BSON document (nested ones are skipped)."""
    values: dict[str, BsonValue] = {}
    position = 4
    end = struct.unpack("<i", document[:4])[0] - 1
    while position < end:
        kind = document[position]
        name_end = document.index(b"\0", position + 1)
        name = document[position + 1 : name_end].decode("utf-8", "replace")
        position = name_end + 1
        if kind == 0x01:
            values[name] = struct.unpack("<d", document[position : position + 8])[0]
        elif kind == 0x08:
            values[name] = document[position] == 1
        elif kind == 0x10:
            values[name] = struct.unpack("<i", document[position : position + 4])[0]
        elif kind == 0x12:
            values[name] = struct.unpack("<q", document[position : position + 8])[0]
        elif kind == 0x02:
            length = struct.unpack("<i", document[position : position + 4])[0]
            values[name] = document[position + 4 : position + 3 + length].decode(
                "utf-8", "replace"
            )
        if kind in _FIXED:
            position += _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):  # string, code, symbol: length + bytes
            position += 4 + struct.unpack("<i", document[position : position + 4])[0]
        elif kind in (0x03, 0x04):  # document, array: their length includes itself
            position += struct.unpack("<i", document[position : position + 4])[0]
        elif kind == 0x05:  # binary: length, subtype, bytes
            position += 5 + struct.unpack("<i", document[position : position + 4])[0]
        elif kind == 0x08:
            position += 1
        elif kind == 0x10:
            position += 4
        elif kind == 0x0B:  # regex: two C strings
            position = document.index(b"\0", document.index(b"\0", position) + 1) + 1
        else:
            raise ValueError(f"BSON type {kind:#x} is not handled")
    return values


async def _ask(exchange: Exchange, name: str, request_id: int) -> dict[str, BsonValue]:
    await exchange.send(command(name, request_id))
    what = f"the answer to {name}"
    header = await exchange.receive_exactly(16, what)
    length, _, response_to, opcode = struct.unpack("<iiii", header)
    if opcode != OP_MSG or response_to != request_id or not 21 <= length <= MESSAGE_LIMIT:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"not an OP_MSG answer to {name} (opcode {opcode}, {length} bytes)")
    body = await exchange.receive_exactly(length - 16, what)
    if body[4] != 0:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY, "the answer has no body section")
    try:
        return top_level(body[5:])
    except (ValueError, IndexError, struct.error) as exc:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY, f"bad BSON: {exc}") from None


def _role(answer: Mapping[str, BsonValue]) -> str:
    if answer.get("isWritablePrimary") or answer.get("ismaster"):
        return "primary"
    if answer.get("secondary"):
        return "secondary"
    if answer.get("arbiterOnly"):
        return "arbiter"
    return "other"


async def _dialogue(exchange: Exchange) -> Observation:
    answer = await _ask(exchange, "hello", 1)
    if answer.get("ok") != 1 and answer.get("code") == COMMAND_NOT_FOUND:
        answer = await _ask(exchange, "isMaster", 2)
    if answer.get("ok") != 1:
        message = answer.get("errmsg") or "ok is not 1"
        raise ProbeFailure(Outcome.FAILED, "server_error", f"{message} (code {answer.get('code')})")
    role = _role(answer)
    exchange.facts["mongo_role"] = role
    for field, fact in (("setName", "mongo_set_name"),
                        ("maxWireVersion", "mongo_max_wire_version")):
        value = answer.get(field)
        if value is not None:
            exchange.facts[fact] = value
    if role in ("primary", "secondary", "arbiter"):
        return Observation(Outcome.OK, ANSWERED)
    return Observation(Outcome.DEGRADED, "not_ready",
                       detail="the server is neither primary nor secondary")


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and asks ``hello`` within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
