"""The receiver's HTTP surface, as a small ASGI application (no framework).

====  =====================  =====================================================
POST  ``/v1/ingest``         a signed message (docs/protocol.md), see ingest.py
GET   ``/``                  the status page (HTML)
GET   ``/api/v1/agents``     agents as JSON
GET   ``/api/v1/checks``     checks as JSON (paged), silent agents' checks as ``unknown``
GET   ``/api/v1/incidents``  open incidents as JSON
GET   ``/api/v1/services``   services judged by a quorum of agents, with each member
GET   ``/healthz``           ``ok`` while the receiver runs (always public)
GET   ...                    check pages, history, ``/metrics``, maintenance (routes.py)
====  =====================  =====================================================

Nothing a client does can stall the others:

* the store and the page rendering run in worker threads (see :class:`Workers`),
  never on the event loop that serves every connection;
* a request body must arrive whole within ``body_timeout`` (408 otherwise), and at
  most ``max_body_bytes`` of it is read (413);
* at most ``max_concurrent_requests`` requests are handled at once; one more makes the
  request that has been reading its body longest give way (408), so clients
  trickling bytes cannot lock out an agent that sends its body at once; when none
  is reading, the newcomer is answered 503 with ``Retry-After: 1``;
* with ``read_token_*`` set, the read side answers 401 without the token (a bearer
  token, or basic auth with any user name and the token as password).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

from agent.central.ingest import Answer, Ingest
from agent.central.routes import Routes
from agent.central.storage import STORAGE_ERRORS
from agent.central.views import MAX_API_CHECKS, Views
from agent.common.logs import get_logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INGEST_PATH: Final = "/v1/ingest"
PUBLIC_PATHS: Final = frozenset({"/healthz"})
# Seconds an agent waits after the store failed (a full disk is not fixed at once).
STORAGE_RETRY_AFTER: Final = b"30"

log = get_logger("central.http")


class Workers:
    """Runs the blocking parts off the event loop: writer threads, one reader thread.

    The store's writes share one SQLite connection, so they take turns (one
    ``writer``; a PostgreSQL pool takes as many as it has connections); the read
    side has its own connection (WAL lets it read while a write goes on), so a
    hammered status page never delays an agent's message. The watcher's and the
    dispatcher's store calls go through ``writer`` too.

    Args:
        writers: store writes that may run at once.
    """

    def __init__(self, writers: int = 1) -> None:
        self.writer = trio.CapacityLimiter(writers)
        self.reader = trio.CapacityLimiter(1)

    async def write(self, function: Callable[..., Any], *args: Any) -> Any:
        """Runs ``function(*args)`` in the writer thread."""
        return await trio.to_thread.run_sync(function, *args, limiter=self.writer)

    async def write_here(self, function: Callable[..., Any], *args: Any) -> Any:
        """Runs ``function(*args)`` on the event loop, in turn with the writer thread.

        For a short call on a local file (SQLite), where a thread would cost more
        than the call.
        """
        async with self.writer:
            return function(*args)

    async def read(self, function: Callable[..., Any], *args: Any) -> Any:
        """Runs ``function(*args)`` in the reader thread."""
        return await trio.to_thread.run_sync(function, *args, limiter=self.reader)


class _Slots:
    """The requests in progress; past the limit, the slowest body reader gives way."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Insertion order is arrival order: the first entry has read longest.
        self._reading: dict[int, trio.CancelScope] = {}
        self._evicted: set[int] = set()
        self.busy = 0

    def enter(self) -> bool:
        """Counts a new request in; False when it must be turned away (all slots busy)."""
        while self.busy >= self.limit and self._reading:
            oldest, scope = next(iter(self._reading.items()))
            del self._reading[oldest]
            scope.cancel()
            self._evicted.add(oldest)
            self.busy -= 1  # the evicted request stops counting now
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def leave(self, key: int) -> bool:
        """Ends a request; returns whether it was evicted."""
        if key in self._evicted:
            self._evicted.discard(key)
            return True
        self.busy -= 1
        return False

    def reading(self, key: int, scope: trio.CancelScope) -> None:
        self._reading[key] = scope

    def done_reading(self, key: int) -> None:
        self._reading.pop(key, None)


class App:
    """The ASGI application.

    Args:
        ingest: handles ``POST /v1/ingest``.
        views: renders the read-only pages.
        max_body_bytes: bigger bodies are refused with 413 before they are read whole.
        wall_clock: seconds since the epoch, read on the event loop for each request.
        workers: the threads the store and the rendering run in.
        body_timeout_s: the time a whole request body may take to arrive.
        max_concurrent_requests: requests handled at once.
        read_tokens: tokens any of which opens the read side; empty: it is public.
    """

    def __init__(
        self, ingest: Ingest, views: Views, max_body_bytes: int, *,
        wall_clock: Callable[[], float],
        workers: Workers | None = None,
        body_timeout_s: float = 10.0,
        max_concurrent_requests: int = 256,
        read_tokens: tuple[str, ...] = (),
    ) -> None:
        self.ingest = ingest
        self.views = views
        self.max_body_bytes = max_body_bytes
        self.wall_clock = wall_clock
        self.workers = workers or Workers()
        self.body_timeout_s = body_timeout_s
        self.read_tokens = read_tokens
        self._slots = _Slots(max_concurrent_requests)
        self.routes: Routes | None = None  # history, check pages, metrics
        # Told each ingest answer and how long handling it took (the /metrics counters).
        self.on_answer: Callable[[Answer, float], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._slots.enter():
            # Every slot is working, none merely waiting for bytes: come back soon.
            await _json(send, 503, {"error": "busy", "message": "the receiver is at "
                                    "max_concurrent_requests; retry shortly"},
                        [(b"retry-after", b"1"), (b"connection", b"close")])
            return
        key = id(scope)
        with trio.CancelScope() as evictable:
            self._slots.reading(key, evictable)
            try:
                await self._route(scope, receive, send, key)
            finally:
                self._slots.done_reading(key)
        if self._slots.leave(key) and evictable.cancelled_caught:
            await _json(send, 408, {"error": "body_timeout",
                                    "message": "the receiver is busy and this body was slowest"},
                        [(b"connection", b"close")])

    async def _route(self, scope: Scope, receive: Receive, send: Send, key: int) -> None:
        path, method = scope["path"], scope["method"]
        if path == INGEST_PATH:
            if method != "POST":
                self._slots.done_reading(key)
                await _json(send, 405, {"error": "method_not_allowed", "message": "use POST"},
                            [(b"allow", b"POST")])
                return
            await self._ingest(scope, receive, send, key)
            return
        self._slots.done_reading(key)  # a read request has no body worth waiting for
        if method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": "method_not_allowed", "message": "use GET"},
                        [(b"allow", b"GET, HEAD")])
            return
        if path not in PUBLIC_PATHS and not self._authorized(scope):
            await _json(send, 401, {"error": "unauthorized",
                                    "message": "this receiver's read side needs its token"},
                        [(b"www-authenticate", b'Basic realm="heartwire", charset="UTF-8"')])
            return
        try:
            await self._read(scope, send, path)
        except STORAGE_ERRORS as exc:
            log.error("cannot read the store for %s: %s", path, exc)
            await _json(send, 503, {"error": "storage_unavailable",
                                    "message": "the receiver cannot read its store right now"},
                        [(b"retry-after", STORAGE_RETRY_AFTER)])

    async def _read(self, scope: Scope, send: Send, path: str) -> None:
        now = self.wall_clock()
        if path == "/":
            page = await self.workers.read(self.views.status_page, now)
            await _respond(send, 200, page.encode(), b"text/html; charset=utf-8")
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain; charset=utf-8")
        elif path == "/api/v1/agents":
            await _json(send, 200, {"agents": await self.workers.read(self.views.agents, now)})
        elif path == "/api/v1/checks":
            offset, limit = _paging(scope.get("query_string", b""))
            await _json(send, 200, await self.workers.read(self.views.checks_page, offset, limit,
                                                           now))
        elif path == "/api/v1/incidents":
            rows = await self.workers.read(self.views.open_incidents)
            await _json(send, 200, {"incidents": rows})
        elif path == "/api/v1/services":
            await _json(send, 200, await self.workers.read(self.views.services_list, now))
        elif self.routes is not None and (
            page := await self.workers.read(self.routes.get, path,
                                            scope.get("query_string", b""), now)
        ) is not None:
            await _respond(send, page.status, page.body, page.content_type)
        else:
            await _json(send, 404, {"error": "not_found", "message": "no such route"})

    def _authorized(self, scope: Scope) -> bool:
        if not self.read_tokens:
            return True
        given = ""
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                given = _token_of(value)
        # compare_digest on every token: the time taken says nothing about which is near.
        matches = [hmac.compare_digest(given.encode(), token.encode())
                   for token in self.read_tokens]
        return bool(given) and any(matches)

    async def _ingest(self, scope: Scope, receive: Receive, send: Send, key: int) -> None:
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
        with trio.move_on_after(self.body_timeout_s) as deadline:
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
        self._slots.done_reading(key)
        if deadline.cancelled_caught:
            answer = self.ingest.too_slow(b"".join(chunks)[:4096], self.body_timeout_s)
        started = time.perf_counter()
        if answer is None:
            answer = await self.workers.write(self.ingest.handle, headers, b"".join(chunks),
                                              self.wall_clock())
        if self.on_answer is not None:
            self.on_answer(answer, time.perf_counter() - started)
        extra = [(b"connection", b"close")] if answer.status in (408, 413) else None
        if answer.status == 503:
            extra = [(b"retry-after", STORAGE_RETRY_AFTER)]
        await _json(send, answer.status, answer.body, extra)


def _token_of(header: bytes) -> str:
    """The token of an ``Authorization`` header: bearer, or basic auth's password."""
    scheme, _, credentials = header.decode("latin-1").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _paging(query: bytes) -> tuple[int, int]:
    """``offset`` and ``limit`` of a query string, clamped; junk means the defaults."""
    fields = urllib.parse.parse_qs(query.decode("latin-1"), max_num_fields=8)

    def number(name: str, default: int, maximum: int) -> int:
        text = (fields.get(name) or [""])[0]
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            return default
        return min(int(text), maximum)

    return number("offset", 0, 10**9), number("limit", MAX_API_CHECKS, MAX_API_CHECKS)


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
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
        # The connection is gone or Hypercorn is closing it (a client still sending
        # the body we refused races our answer): nobody is left to read it.
        log.debug("answer %d not delivered: the connection is closing", status)


async def _json(send: Send, status: int, value: object,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(value, indent=1).encode() + b"\n"
    await _respond(send, status, body, b"application/json", extra)
