"""A native destination that weighs what arrives: bytes of each POST, raw and gzipped.

Run as its own process (``python -m bench.receiver --address A``) so that neither
its CPU nor its memory is counted against the agent. It answers every POST with
202 (a 2xx is "stored" to the native sink) and records, per request, the message
type, when it arrived, the bytes on the wire (request line, headers, body) and the body's size
once gzip-compressed (level 6, what ``gzip`` and most HTTP stacks use). It prints
one JSON line with its URL, then answers ``stats`` on stdin with one JSON line of
what it recorded; closing stdin stops it.

This is not ``heartwire central``: the benchmark measures the agent, and a real
receiver ingesting a 10,000-check heartbeat would compete for the same cores. What
is weighed is the agent's request exactly as it leaves the agent.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A heartbeat of 10,000 checks is about 2 MB; a larger body is read and counted
# but not kept, so a runaway agent cannot exhaust this process's memory.
MAX_BODY_BYTES = 64 * 1024 * 1024


def _head_bytes(request_line: str, headers: Iterable[tuple[str, str]]) -> int:
    """Bytes of an HTTP/1.1 request head: the line, each ``name: value``, CRLFs."""
    return len(request_line) + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in headers) + 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the agent's client expects
        # The head and the body of an answer are two writes: with Nagle's algorithm
        # the body would wait for the client's delayed ACK, 40 ms per message.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = min(int(self.headers.get("content-length") or 0), MAX_BODY_BYTES)
            body = self.rfile.read(length)
            try:
                kind = str(json.loads(body).get("type"))
            except (ValueError, AttributeError):
                kind = "unreadable"
            record = {
                "type": kind,
                "at_s": time.monotonic() - started,
                "wire_bytes": _head_bytes(self.requestline, self.headers.items()) + length,
                "body_bytes": length,
                "gzip_bytes": len(gzip.compress(body, compresslevel=6)),
            }
            with lock:
                records.append(record)
            self.send_response(202)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up mid-request (the agent stopping) is no news

    server = Server((args.address, 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    print(json.dumps({"url": f"http://{args.address}:{server.server_address[1]}/v1/ingest"}),
          flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            with lock:
                print(json.dumps(records), flush=True)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
