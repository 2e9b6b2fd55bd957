"""The HTTP probe: one request, the status it expects and optionally a body substring.

For the services that do speak HTTP (Elasticsearch, OpenSearch, CouchDB, admin
endpoints): ``method`` (GET or HEAD), ``path``, ``expect_status`` (default: any
2xx or 3xx), ``expect_body`` (a substring the first ``read_limit`` bytes of the
response must contain). It speaks HTTP/1.1 over the probe's own connection, so DNS,
latency and address are measured as for every kind. ``tls = true`` for HTTPS.
Facts: ``http_status``, ``http_server``. Reasons: ``answered``, ``http_status``
(another status), ``body_mismatch``, ``unexpected_reply`` (not HTTP).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.checks import tls
from agent.checks.exchange import (
    ANSWERED,
    UNEXPECTED_REPLY,
    Exchange,
    ProbeFailure,
    printable,
    run_exchange,
)
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

DEFAULT_READ_LIMIT = 16384
MAX_READ_LIMIT = 1 << 20
_STATUS_LINE = re.compile(rb"\AHTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r?\n")
_SERVER = re.compile(rb"^server:[ \t]*([^\r\n]*)", re.I | re.M)


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "http"``."""
    method = table.choice("method", ("GET", "HEAD"), "GET")
    path = table.nonempty_string("path", "/")
    if not path.startswith("/") or any(char.isspace() for char in path) or not path.isascii():
        raise table.error("path", f"must be an ASCII path starting with '/', got {path!r}")
    expect_status = table.integer("expect_status", 0, minimum=100, maximum=599) or None
    expect_body = table.optional_string("expect_body")
    if expect_body is not None and method == "HEAD":
        raise table.error("expect_body", "a HEAD response has no body")
    return {
        "method": method,
        "path": path,
        "expect_status": expect_status,
        "expect_body": expect_body.encode("utf-8") if expect_body else None,
        "read_limit": table.integer("read_limit", DEFAULT_READ_LIMIT, minimum=256,
                                    maximum=MAX_READ_LIMIT),
        "tls": tls.read_tls_settings(table, enabled=table.boolean("tls", False)),
    }


def request_bytes(method: str, path: str, host: str, port: int) -> bytes:
    """The request, with ``Connection: close`` so the response ends the stream."""
    authority = f"[{host}]" if ":" in host else host
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {authority}:{port}\r\n"
        "User-Agent: heartwire\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


async def _dialogue(exchange: Exchange) -> Observation:
    options = exchange.target.options
    method, path = str(options["method"]), str(options["path"])
    expect_body = options.get("expect_body")
    limit = int(str(options["read_limit"]))
    await exchange.send(request_bytes(method, path, exchange.target.host, exchange.target.port))

    def is_complete(received: bytes) -> bool:
        if b"\r\n\r\n" not in received:
            return False
        return not isinstance(expect_body, bytes) or expect_body in received

    response = await exchange.receive_until(is_complete, limit, "the HTTP response")
    status_line = _STATUS_LINE.match(response)
    if status_line is None:
        raise ProbeFailure(Outcome.FAILED, UNEXPECTED_REPLY,
                           f"not an HTTP response: {printable(response[:80])!r}")
    status = int(status_line.group(1))
    exchange.facts["http_status"] = status
    headers_end = response.find(b"\r\n\r\n")
    server = _SERVER.search(response, 0, headers_end if headers_end >= 0 else len(response))
    if server:
        exchange.facts["http_server"] = printable(server.group(1))
    expected = options.get("expect_status")
    if (status != expected) if expected else not 200 <= status < 400:
        wanted = str(expected) if expected else "2xx or 3xx"
        raise ProbeFailure(Outcome.FAILED, "http_status",
                           f"{printable(status_line.group(0))}, expected {wanted}")
    if isinstance(expect_body, bytes) and expect_body not in response[headers_end:]:
        raise ProbeFailure(Outcome.FAILED, "body_mismatch",
                           f"the first {limit} bytes do not contain {printable(expect_body)!r}")
    return Observation(Outcome.OK, ANSWERED)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and makes one HTTP request within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue, before=tls.tls_layer)
