"""A one-way delay line between two network namespaces, through TUN devices.

The kernel this runs on may lack ``sch_netem``, so the delay is made in user space:
every packet from the client's TUN device is written to the server's TUN device
``--delay-ms`` later; packets back pass at once. The last two milliseconds before
a release are spun rather than slept, because epoll sleeps in whole milliseconds.
Serves until stdin closes.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import heapq
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
    selector.register(sys.stdin, selectors.EVENT_READ)
    held: list[tuple[float, int, bytes]] = []
    sequence = 0
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            os.write(server, heapq.heappop(held)[2])
        timeout = None if not held else max(0.0, held[0][0] - now - _SPIN_S)
        for key, _ in selector.select(timeout):
            if key.fileobj is sys.stdin:
                return
            source = key.fd
            for _ in range(512):
                try:
                    packet = os.read(source, 65535)
                except BlockingIOError:
                    break
                if source == client:
                    sequence += 1
                    heapq.heappush(held, (time.monotonic() + delay_s, sequence, packet))
                else:
                    os.write(client, packet)


if __name__ == "__main__":
    main()
