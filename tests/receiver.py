"""A real HTTP receiver on loopback that records every request and can misbehave.

It runs the standard library's threading HTTP server on 127.0.0.1 with an
ephemeral port. Each request takes the next step of a fault plan:

* ``"ok"`` (also when the plan is used up): record, answer 200 with ``ok_body``;
* ``"500"`` / any status number: record, answer that status;
* ``"429:2"``: record, answer 429 with ``Retry-After: 2``;
* ``"slow:0.5"``: record, wait 0.5 s, then answer 200 (the client may give up first);
* ``"reset"``: record, then reset the connection without answering;
* ``"reset-mid-body"``: read half the request body, then reset (nothing recorded);
* ``"body:OK (not found)"``: record, answer 200 with that body;
* ``"echo"``: record, answer 200 with ``OK`` and the request's path and headers;
* ``"trickle"``: record, answer 200 but send the body one byte every 0.2 s.

Recording happens before the fault, as in a real server that stored the message
and then failed to answer: the client retries, and the test checks that
deduplication by message id leaves every message exactly once.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Recorded:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # When it arrived (time.monotonic), for tests of the pace of retries.
    at: float = 0.0


class Receiver:
    """The recording server; use :func:`running_receiver`."""

    def __init__(self, plan: list[str] | None = None, *, ok_body: bytes = b"OK",
                 port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.plan = list(plan or [])
        self.ok_body = ok_body
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                with receiver.lock:
                    cut = bool(receiver.plan) and receiver.plan[0] == "reset-mid-body"
                    if cut:
                        receiver.plan.pop(0)
                if cut:
                    self.rfile.read(length // 2)
                    self._reset()
                    return
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append(Recorded(
                        self.command, self.path,
                        {k.lower(): v for k, v in self.headers.items()}, body,
                        time.monotonic()))
                    step = receiver.plan.pop(0) if receiver.plan else "ok"
                if step == "reset":
                    self._reset()
                    return
                if step == "trickle":
                    self._trickle()
                    return
                status, headers, payload = 200, {}, receiver.ok_body
                if step.startswith("slow:"):
                    time.sleep(float(step.split(":")[1]))
                elif step == "echo":
                    payload = f"OK {self.path} {dict(self.headers.items())}".encode()
                elif step.startswith("body:"):
                    payload = step.split(":", 1)[1].encode()
                elif step.startswith("429:"):
                    status, headers = 429, {"Retry-After": step.split(":")[1]}
                    payload = b"slow down"
                elif step != "ok":
                    status, payload = int(step), b"error body " + step.encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    self.close_connection = True  # the client gave up (timeout)

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _trickle(self) -> None:
                """A 200 whose body comes one byte every 0.2 s: no single read times out."""
                try:
                    self.send_response(200)
                    self.send_header("content-length", "100")
                    self.end_headers()
                    for _ in range(100):
                        self.wfile.write(b".")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the client gave up, as it should
                self.close_connection = True

            do_GET = do_POST = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # resets and client timeouts are the point of these tests

        self.server = Server(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def snapshot(self) -> list[Recorded]:
        """The requests so far."""
        with self.lock:
            return list(self.requests)


@contextmanager
def running_receiver(plan: list[str] | None = None, *, ok_body: bytes = b"OK",
                     port: int = 0, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """Starts a receiver (HTTPS with ``tls``), yields it, and stops it."""
    receiver = Receiver(plan, ok_body=ok_body, port=port, tls=tls)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver.thread.join(timeout=5)


def free_port() -> int:
    """A loopback port nothing listens on (for a destination that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
