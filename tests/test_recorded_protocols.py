"""MongoDB and Kafka probes against loopback servers replaying real answers.

Neither server is in Debian; see tests/recorded.py for where each answer comes
from. The fakes check the request the probe sent before answering, so a probe
that speaks the protocol wrongly fails here too.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping

import pytest
import trio

from agent.checks import kafka, mongodb
from agent.model import Outcome, Reason
from tests.netutil import refused_port
from tests.recorded import KAFKA_API_VERSIONS_V0, MONGODB_HELLO_PRIMARY, BsonInput, bson_document
from tests.servers import serve_loopback, target


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


Handler = Callable[[trio.SocketStream], Awaitable[None]]


def mongodb_server(answers: Mapping[str, Mapping[str, BsonInput]]) -> tuple[Handler, list[str]]:
    """A handler answering each OP_MSG command by name; records what it was asked."""
    asked: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        try:
            while True:
                header = await _receive_exactly(stream, 16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                assert opcode == mongodb.OP_MSG
                body = await _receive_exactly(stream, length - 16)
                document = body[5:]
                name_end = document.index(b"\0", 5)
                name = document[5:name_end].decode()
                asked.append(name)
                reply = struct.pack("<I", 0) + b"\0" + bson_document(answers[name])
                await stream.send_all(
                    struct.pack("<iiii", 16 + len(reply), 99, request_id, mongodb.OP_MSG) + reply
                )
        except (EOFError, trio.BrokenResourceError):
            pass

    return handler, asked


async def test_mongodb_primary(nursery: trio.Nursery) -> None:
    handler, asked = mongodb_server({"hello": MONGODB_HELLO_PRIMARY})
    port = await serve_loopback(nursery, handler)
    observation = await mongodb.probe(target(port, {}, mongodb.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["mongo_role"] == "primary"
    assert observation.facts["mongo_set_name"] == "replicasetname"
    assert observation.facts["mongo_max_wire_version"] == 17
    assert asked == ["hello"]


async def test_mongodb_secondary_and_recovering_member(nursery: trio.Nursery) -> None:
    secondary = {**MONGODB_HELLO_PRIMARY, "isWritablePrimary": False, "secondary": True}
    handler, _ = mongodb_server({"hello": secondary})
    port = await serve_loopback(nursery, handler)
    observation = await mongodb.probe(target(port, {}, mongodb.read_options), timeout=5)
    assert (observation.outcome, observation.facts["mongo_role"]) == (Outcome.OK, "secondary")

    recovering = {**MONGODB_HELLO_PRIMARY, "isWritablePrimary": False}
    handler, _ = mongodb_server({"hello": recovering})
    port = await serve_loopback(nursery, handler)
    observation = await mongodb.probe(target(port, {}, mongodb.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "not_ready")


async def test_mongodb_before_hello_falls_back_to_ismaster(nursery: trio.Nursery) -> None:
    # What a server older than 4.4.2 says to hello (error 59, CommandNotFound).
    unknown = {"ok": 0.0, "errmsg": "no such command: 'hello'", "code": 59,
               "codeName": "CommandNotFound"}
    legacy = {k: v for k, v in MONGODB_HELLO_PRIMARY.items() if k != "isWritablePrimary"}
    handler, asked = mongodb_server({"hello": unknown, "isMaster": {**legacy, "ismaster": True}})
    port = await serve_loopback(nursery, handler)
    observation = await mongodb.probe(target(port, {}, mongodb.read_options), timeout=5)
    assert (observation.outcome, observation.facts["mongo_role"]) == (Outcome.OK, "primary")
    assert asked == ["hello", "isMaster"]


async def test_mongodb_down_is_refused() -> None:
    with refused_port() as port:
        observation = await mongodb.probe(target(port, {}, mongodb.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


def kafka_broker(body: bytes) -> Handler:
    """A handler answering one ApiVersions v0 request with ``body`` (after its id)."""

    async def handler(stream: trio.SocketStream) -> None:
        (size,) = struct.unpack("!i", await _receive_exactly(stream, 4))
        request = await _receive_exactly(stream, size)
        api_key, version, correlation_id = struct.unpack("!hhi", request[:8])
        assert (api_key, version) == (18, 0)
        answer = struct.pack("!i", correlation_id) + body
        await stream.send_all(struct.pack("!i", len(answer)) + answer)

    return handler


async def test_kafka_api_versions(nursery: trio.Nursery) -> None:
    port = await serve_loopback(nursery, kafka_broker(KAFKA_API_VERSIONS_V0))
    observation = await kafka.probe(target(port, {}, kafka.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["kafka_api_count"] == 10


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (KAFKA_API_VERSIONS_V0[:-3], "unexpected_reply"),  # an entry cut short
        (bytes.fromhex("ffff00000000"), "kafka_error"),  # UNKNOWN_SERVER_ERROR (-1)
    ],
)
async def test_kafka_malformed_or_error_answer(
    nursery: trio.Nursery, body: bytes, reason: str
) -> None:
    port = await serve_loopback(nursery, kafka_broker(body))
    observation = await kafka.probe(target(port, {}, kafka.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, reason)


async def test_kafka_down_is_refused() -> None:
    with refused_port() as port:
        observation = await kafka.probe(target(port, {}, kafka.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)
