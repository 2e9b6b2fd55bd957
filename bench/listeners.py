"""Loopback listeners that accept and close as fast as Python can, plus a DNS server.

Run as its own process (``python -m bench.listeners``) so its CPU is not counted
against the client being measured. Prints one JSON line with the bound ports,
then serves until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys

from tests.support.dns_server import Zone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", action="append", required=True)
    parser.add_argument("--dns", help="serve A records for bench names on ADDRESS:53")
    parser.add_argument("--dns-ttl", type=int, default=30)
    args = parser.parse_args()

    selector = selectors.DefaultSelector()
    bound = []
    for address in args.address:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, 0))
        listener.listen(4096)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "tcp")
        bound.append([address, listener.getsockname()[1]])
    zone = Zone(ttl_s=args.dns_ttl)
    for index, (address, _) in enumerate(bound):
        zone.records[f"t{index}.bench.test"] = {"A": [address]}
    if args.dns:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((args.dns, 53))
        udp.setblocking(False)
        selector.register(udp, selectors.EVENT_READ, "dns")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(json.dumps(bound), flush=True)

    while True:
        for key, _ in selector.select():
            if key.data == "stdin":
                return
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "dns":
                wire, peer = sock.recvfrom(65535)
                sock.sendto(zone.answer(wire), peer)
                continue
            # Drain the accept queue: a full queue drops SYNs and stalls clients.
            for _ in range(1000):
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()


if __name__ == "__main__":
    main()
