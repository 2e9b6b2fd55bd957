"""A hostile ICMP echo responder: ``python -m tests.support.icmp_responder MODE SECONDS``.

Run as root inside a network namespace whose kernel ignores echo requests itself
(``net.ipv4.icmp_echo_ignore_all = 1``), it answers each echo request through a
raw socket the way ``MODE`` says, for ``SECONDS``:

* ``garbage``: a reply with the request's identifier and sequence, random payload;
* ``flood``: 500 replies of 1400 random bytes per request, identifier kept;
* ``wrong-sequence``: the request's payload under another sequence number;
* ``echo``: a correct reply (the control: the responder's replies do arrive).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time

_HEADER = struct.Struct("!BBHHH")
FLOOD_REPLIES = 500


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply(ident: int, sequence: int, payload: bytes) -> bytes:
    """An ICMP echo reply with a correct checksum."""
    header = _HEADER.pack(0, 0, 0, ident, sequence)
    return _HEADER.pack(0, 0, checksum(header + payload), ident, sequence) + payload


def replies(mode: str, ident: int, sequence: int, payload: bytes) -> list[bytes]:
    """What ``mode`` answers to one echo request."""
    if mode == "garbage":
        return [echo_reply(ident, sequence, os.urandom(len(payload)))]
    if mode == "flood":
        return [echo_reply(ident, sequence, os.urandom(1400)) for _ in range(FLOOD_REPLIES)]
    if mode == "echo":
        return [echo_reply(ident, sequence, payload)]
    if mode == "wrong-sequence":
        return [echo_reply(ident, (sequence + 1000) & 0xFFFF, payload)]
    raise SystemExit(f"unknown mode {mode!r}")


def main(mode: str, seconds: float) -> None:
    """Answers echo requests as ``mode`` says until ``seconds`` have passed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    end = time.monotonic() + seconds
    print("ready", flush=True)
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        packet, (peer, _) = sock.recvfrom(65535)
        header_length = (packet[0] & 0x0F) * 4
        icmp = packet[header_length:]
        if len(icmp) < _HEADER.size:
            continue
        kind, _, _, ident, sequence = _HEADER.unpack_from(icmp)
        if kind != 8:  # only echo requests
            continue
        for reply in replies(mode, ident, sequence, icmp[_HEADER.size:]):
            try:
                sock.sendto(reply, (peer, 0))
            except OSError:
                break


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
