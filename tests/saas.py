"""Healthchecks and Uptime Kuma as loopback HTTP servers, answering as their docs say.

Neither service can run here, so each is mocked at the HTTP layer with its
documented wire format:

* Healthchecks ping API (healthchecks.io/docs/http_api/): ``<uuid>[/fail]`` and
  ``<ping-key>/<slug>[/fail][?create=1]``; ``200`` ``OK``, ``201`` ``Created`` when
  ``create=1`` made the check, ``404`` ``not found``, ``409`` ``ambiguous slug``;
  ``text/plain; charset=utf-8``.
  Hosted hc-ping.com answers UUID pings ``200`` whatever happened, with the body
  ``OK (not found)`` for an unknown UUID (``legacy_uuid_answers``).
* Uptime Kuma push monitors (server/routers/api-router.js): ``/api/push/<token>``,
  ``200`` ``{"ok":true}`` or, for an unknown or paused monitor,
  ``{"ok":false,"msg":"Monitor not found or not active."}`` with ``404`` (1.x) or
  ``500`` (2.x: ``error_status``).

``faults`` injects a status for the next requests to one path (``{"/x": [503]}``),
answered before the ping is recorded as accepted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Ping:
    """One request as received, and how it was answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    status: int


@dataclass
class Service:
    """What the mocked service knows: its monitors, faults to inject, what it saw."""

    uuids: set[str] = field(default_factory=set)
    ping_key: str = ""
    slugs: set[str] = field(default_factory=set)
    ambiguous_slugs: set[str] = field(default_factory=set)
    push_tokens: set[str] = field(default_factory=set)
    legacy_uuid_answers: bool = False
    error_status: int = 404
    faults: dict[str, list[int]] = field(default_factory=dict)
    pings: list[Ping] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def accepted(self) -> list[str]:
        """The paths of the pings the service recorded (2xx), in order."""
        with self.lock:
            return [p.path for p in self.pings if 200 <= p.status < 300]

    def answered(self) -> list[tuple[str, int]]:
        """Every request's path and status, in order."""
        with self.lock:
            return [(p.path, p.status) for p in self.pings]


def _healthchecks(service: Service, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
    parts = [part for part in path.split("/") if part]
    if parts and parts[-1] == "fail":
        parts = parts[:-1]
    if len(parts) == 1:
        if parts[0] in service.uuids:
            return 200, "OK"
        return (200, "OK (not found)") if service.legacy_uuid_answers else (404, "not found")
    if len(parts) == 2 and parts[0] == service.ping_key:
        slug = parts[1]
        if slug in service.ambiguous_slugs:
            return 409, "ambiguous slug"
        if slug in service.slugs:
            return 200, "OK"
        if query.get("create") == ["1"]:
            service.slugs.add(slug)
            return 201, "Created"
    return 404, "not found"


def _kuma(service: Service, path: str) -> tuple[int, str]:
    prefix = "/api/push/"
    if path.startswith(prefix) and path[len(prefix):] in service.push_tokens:
        return 200, json.dumps({"ok": True})
    return service.error_status, json.dumps({"ok": False,
                                             "msg": "Monitor not found or not active."})


@contextmanager
def running_service(kind: str, service: Service) -> Iterator[Service]:
    """Serves ``service`` as ``kind`` ("healthchecks" or "uptime-kuma") on loopback."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            query = parse_qs(split.query, keep_blank_values=True)
            with service.lock:
                planned = service.faults.get(split.path)
                if planned:
                    status, text = planned.pop(0), "injected fault"
                elif kind == "healthchecks":
                    status, text = _healthchecks(service, split.path, query)
                else:
                    status, text = _kuma(service, split.path)
                service.pings.append(Ping(self.command, split.path, query, body, status))
            payload = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain; charset=utf-8"
                             if kind == "healthchecks" else "application/json; charset=utf-8")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
