"""Real handshake answers of services Debian does not package, for loopback fakes.

MongoDB and Kafka are not in Debian, so their probes are tested against answers
real servers gave, replayed by a loopback server:

* ``KAFKA_API_VERSIONS_V0``: the body of an ApiVersions v0 response that the kayrock
  project (Elixir Kafka client) records in its ApiVersions test as captured from a
  Confluent Platform 7.4.0 broker (Kafka 3.4), first ten API entries. Only the
  correlation id is ours, since a broker echoes the request's.
* ``MONGODB_HELLO_PRIMARY``: the ``hello`` answer of a MongoDB 6.0 replica set
  primary (maxWireVersion 17), as mongosh printed it in a published walkthrough of
  the command (blog.csdn.net/wilsonzane/article/details/135388006). Printed JSON,
  not bytes: :func:`bson_document` encodes it with the BSON types mongosh shows
  (ObjectId, Timestamp, ISODate, Long, BinData), so the probe parses the same
  element types a server sends.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Mapping, Sequence

KAFKA_API_VERSIONS_V0 = bytes.fromhex(
    "0000"  # error_code
    "0000000a"  # ten entries of api_key, min_version, max_version
    "000000000009"  # Produce 0-9
    "00010000000d"  # Fetch 0-13
    "000200000007"  # ListOffsets 0-7
    "00030000000c"  # Metadata 0-12
    "000400000007"  # LeaderAndIsr 0-7
    "000500000004"  # StopReplica 0-4
    "000600000008"  # UpdateMetadata 0-8
    "000700000003"  # ControlledShutdown 0-3
    "000800000008"  # OffsetCommit 0-8
    "000900000008"  # OffsetFetch 0-8
)


class ObjectId(bytes):
    """BSON type 0x07 (12 bytes)."""


class Timestamp(tuple[int, int]):
    """BSON type 0x11: (seconds, increment)."""


class Long(int):
    """BSON type 0x12."""


class Binary(bytes):
    """BSON type 0x05, subtype 0."""


BsonInput = (
    str | bool | int | float | None | ObjectId | Timestamp | Long | Binary
    | datetime.datetime | Mapping[str, "BsonInput"] | Sequence["BsonInput"]
)


def _element(name: str, value: BsonInput) -> bytes:
    key = name.encode() + b"\0"
    if isinstance(value, bool):
        return b"\x08" + key + (b"\x01" if value else b"\x00")
    if isinstance(value, ObjectId):
        return b"\x07" + key + bytes(value)
    if isinstance(value, Binary):
        return b"\x05" + key + struct.pack("<i", len(value)) + b"\x00" + bytes(value)
    if isinstance(value, Timestamp):
        seconds, increment = value
        return b"\x11" + key + struct.pack("<II", increment, seconds)
    if isinstance(value, Long):
        return b"\x12" + key + struct.pack("<q", value)
    if isinstance(value, int):
        return b"\x10" + key + struct.pack("<i", value)
    if isinstance(value, float):
        return b"\x01" + key + struct.pack("<d", value)
    if isinstance(value, str):
        data = value.encode() + b"\0"
        return b"\x02" + key + struct.pack("<i", len(data)) + data
    if isinstance(value, datetime.datetime):
        return b"\x09" + key + struct.pack("<q", int(value.timestamp() * 1000))
    if value is None:
        return b"\x0a" + key
    if isinstance(value, Mapping):
        return b"\x03" + key + bson_document(value)
    return b"\x04" + key + bson_document({str(i): item for i, item in enumerate(value)})


def bson_document(fields: Mapping[str, BsonInput]) -> bytes:
    """A BSON document (bsonspec.org) of ``fields`` in order."""
    elements = b"".join(_element(name, value) for name, value in fields.items())
    return struct.pack("<i", 4 + len(elements) + 1) + elements + b"\0"


_CST = datetime.timezone(datetime.timedelta(hours=8))

MONGODB_HELLO_PRIMARY: dict[str, BsonInput] = {
    "topologyVersion": {"processId": ObjectId(bytes.fromhex("642b972dd6128edf1d22c73b")),
                        "counter": Long(7)},
    "hosts": ["HOST1:27017", "HOST2:27017"],
    "passives": ["HOST3:27017"],
    "setName": "replicasetname",
    "setVersion": 3,
    "isWritablePrimary": True,
    "secondary": False,
    "primary": "HOST1:27017",
    "me": "HOST1:27017",
    "electionId": ObjectId(bytes.fromhex("7fffffff0000000000000013")),
    "lastWrite": {
        "opTime": {"ts": Timestamp((1704349636, 1)), "t": Long(19)},
        "lastWriteDate": datetime.datetime(2024, 1, 4, 14, 27, 16, tzinfo=_CST),
        "majorityOpTime": {"ts": Timestamp((1704349636, 1)), "t": Long(19)},
        "majorityWriteDate": datetime.datetime(2024, 1, 4, 14, 27, 16, tzinfo=_CST),
    },
    "maxBsonObjectSize": 16777216,
    "maxMessageSizeBytes": 48000000,
    "maxWriteBatchSize": 100000,
    "localTime": datetime.datetime(2024, 1, 4, 14, 27, 18, 873000, tzinfo=_CST),
    "logicalSessionTimeoutMinutes": 30,
    "connectionId": 258342,
    "minWireVersion": 0,
    "maxWireVersion": 17,
    "readOnly": False,
    "ok": 1.0,
    "$clusterTime": {
        "clusterTime": Timestamp((1704349636, 1)),
        "signature": {"hash": Binary(bytes.fromhex("ce90a61438df40d419e7c9b5f7ea1554b34f528b")),
                      "keyId": Long(7285155258693582849)},
    },
    "operationTime": Timestamp((1704349636, 1)),
}
