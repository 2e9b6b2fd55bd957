"""The receiver's HTTP surface, as a small ASGI application (no framework: five routes).

====  ==================  =====================================================
POST  ``/v1/ingest``      a signed message (docs/protocol.md), see ingest.py
GET   ``/``               the status page (HTML)
GET   ``/api/v1/agents``  agents as JSON
GET   ``/api/v1/checks``  checks as JSON, silent agents' checks as ``unknown``
GET   ``/api/v1/incidents``  open incidents as JSON
GET   ``/healthz``        ``ok`` while the receiver runs
====  ==================  =====================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from agent.central.ingest import Answer, Ingest
from agent.central.routes import Routes
from agent.central.views import Views

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INGEST_PATH = "/v1/ingest"


class App:
    """The ASGI application.

    Args:
        ingest: handles ``POST /v1/ingest``.
        views: renders the read-only pages.
        max_body_bytes: bigger bodies are refused with 413 before they are read whole.
    """

    def __init__(self, ingest: Ingest, views: Views, max_body_bytes: int) -> None:
        self.ingest = ingest
        self.views = views
        self.max_body_bytes = max_body_bytes
        self.routes: Routes | None = None  # history, check pages, metrics
        # Told each ingest answer and how long handling it took (the /metrics counters).
        self.on_answer: Callable[[Answer, float], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == INGEST_PATH:
            if method != "POST":
                await _json(send, 405, {"error": "method_not_allowed", "message": "use POST"},
                            [(b"allow", b"POST")])
                return
            await self._ingest(scope, receive, send)
            return
        pages: dict[str, Callable[[], object]] = {
            "/api/v1/agents": lambda: {"agents": self.views.agents()},
            "/api/v1/checks": lambda: {"checks": self.views.checks()},
            "/api/v1/incidents": lambda: {"incidents": self.views.open_incidents()},
        }
        if method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": "method_not_allowed", "message": "use GET"},
                        [(b"allow", b"GET, HEAD")])
        elif path == "/":
            await _respond(send, 200, self.views.status_page().encode(),
                           b"text/html; charset=utf-8")
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain; charset=utf-8")
        elif path in pages:
            await _json(send, 200, pages[path]())
        elif self.routes is not None and (
            page := self.routes.get(path, scope.get("query_string", b""))
        ) is not None:
            await _respond(send, page.status, page.body, page.content_type)
        else:
            await _json(send, 404, {"error": "not_found", "message": f"no route {path}"})

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        # Read at most the limit plus one chunk: memory stays bounded whatever the
        # client declares, and the prefix still names the agent for the log line.
        answer: Answer | None = None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body_bytes:
                answer = self.ingest.too_large(b"".join(chunks)[:4096])
                break
            more = message.get("more_body", False)
        body = b"".join(chunks)
        started = time.perf_counter()
        if answer is None:
            answer = self.ingest.handle(headers, body)
        if self.on_answer is not None:
            self.on_answer(answer, time.perf_counter() - started)
        await _json(send, answer.status, answer.body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, value: object,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(value, indent=1).encode() + b"\n"
    await _respond(send, status, body, b"application/json", extra)
