"""A one-way delay line between two network namespaces, through TUN devices.

The kernel this runs on may lack ``sch_netem``, so the delay is made in user space:
every SYN from the client's TUN device is written to the server's TUN device
``--delay-ms`` later; everything else passes at once. The SYN is the handshake's
only client-to-server leg, so the handshake time is what a netem delay on the
client's link would make it, while the delay line has less work per connection
(its own queueing would otherwise show in the result). The last two milliseconds before
a release are spun rather than slept, because epoll sleeps in whole milliseconds.
Each line read from stdin asks how late the SYNs released since the last such line
were (the delay line's own error, printed as one JSON line); it serves until stdin
closes.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import heapq
import json
import os
import selectors
import struct
import sys
import time

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
_SPIN_S = 0.002


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def _open_tun(netns: str, device: str) -> int:
    _enter_netns(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", device.encode(), _IFF_TUN | _IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def _is_syn(packet: bytes) -> bool:
    """An IPv4 TCP segment with SYN set (the handshake's only client-to-server leg)."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return False
    flags_at = (packet[0] & 0x0F) * 4 + 13
    return len(packet) > flags_at and bool(packet[flags_at] & 0x02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", nargs=2, metavar=("NETNS", "DEVICE"), required=True)
    parser.add_argument("--server", nargs=2, metavar=("NETNS", "DEVICE"), required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    client = _open_tun(*args.client)
    server = _open_tun(*args.server)
    delay_s = args.delay_ms / 1000
    selector = selectors.DefaultSelector()
    selector.register(client, selectors.EVENT_READ)
    selector.register(server, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    held: list[tuple[float, int, bytes]] = []
    sequence = 0
    print("ready", flush=True)
    lateness: list[float] = []

    def release_due() -> None:
        now = time.monotonic()
        while held and held[0][0] <= now:
            due, _, packet = heapq.heappop(held)
            os.write(server, packet)
            lateness.append(time.monotonic() - due)

    while True:
        release_due()
        timeout = None if not held else max(0.0, held[0][0] - time.monotonic() - _SPIN_S)
        for key, _ in selector.select(timeout):
            if key.data == "stdin":
                if not sys.stdin.readline():
                    return
                lateness.sort()
                print(json.dumps({
                    "syns": len(lateness),
                    "late_p50_ms": lateness[len(lateness) // 2] * 1000 if lateness else 0.0,
                    "late_p99_ms": lateness[int(len(lateness) * 0.99)] * 1000 if lateness else 0.0,
                }), flush=True)
                lateness.clear()
                continue
            source = key.fd
            for _ in range(64):
                try:
                    packet = os.read(source, 65535)
                except BlockingIOError:
                    break
                if source == client and _is_syn(packet):
                    sequence += 1
                    heapq.heappush(held, (time.monotonic() + delay_s, sequence, packet))
                else:
                    os.write(server if source == client else client, packet)
            release_due()  # what fell due while reading, before reading on


if __name__ == "__main__":
    main()
