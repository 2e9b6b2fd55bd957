"""A loopback HTTP destination that answers each request with a broken response.

Each request takes the next entry of a plan (names from :data:`CATALOGUE`, or
``status:N`` for a bare status ``N``); once the plan is used up the server is honest
(``200 OK``). A request whose body arrived whole is recorded *before* the answer,
as a real receiver that stored the message and then failed to say so: the agent
retries, and the test checks that deduplication by message id leaves each message
exactly once.

The server speaks raw bytes over trio sockets, so it can send what no HTTP library
would: corrupt gzip, bad chunking, non-ASCII and huge headers, bodies that never
end, resets in the middle of a body. It runs in the test's event loop.
"""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from tests.receiver import Recorded

MAX_REQUEST_HEAD = 64 * 1024
_GARBAGE = bytes(range(256)) * 4
# How much a never-ending body sends before the server gives up on the client.
ENDLESS_LIMIT = 256 * 1024 * 1024


Respond = Callable[[trio.SocketStream], Awaitable[None]]


def _head(status: int, headers: list[tuple[bytes, bytes]], reason: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, reason or b"X")]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _plain(status: int, body: bytes, *extra: tuple[bytes, bytes]) -> Respond:
    async def respond(stream: trio.SocketStream) -> None:
        headers = [(b"content-length", b"%d" % len(body)), (b"connection", b"close"), *extra]
        await stream.send_all(_head(status, headers) + body)

    return respond


async def _reset(stream: trio.SocketStream) -> None:
    # SO_LINGER 0: close() sends RST instead of FIN.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def _reset_mid_body(stream: trio.SocketStream) -> None:
    await stream.send_all(_head(200, [(b"content-length", b"1000")]) + b"OK" + b"." * 8)
    await trio.sleep(0.01)
    await _reset(stream)


async def _bad_chunking(stream: trio.SocketStream) -> None:
    await stream.send_all(_head(200, [(b"transfer-encoding", b"chunked")])
                          + b"zz\r\nnot a chunk size\r\n0\r\n\r\n")


async def _endless_chunks(stream: trio.SocketStream) -> None:
    await stream.send_all(_head(200, [(b"transfer-encoding", b"chunked")]))
    chunk = b"%x\r\n%s\r\n" % (len(_GARBAGE), _GARBAGE)
    for _ in range(ENDLESS_LIMIT // len(chunk)):
        await stream.send_all(chunk)


async def _endless_until_close(stream: trio.SocketStream) -> None:
    # No length, no chunking: the body ends when the connection does (never).
    await stream.send_all(_head(200, [(b"connection", b"close")]))
    for _ in range(ENDLESS_LIMIT // len(_GARBAGE)):
        await stream.send_all(_GARBAGE)


async def _huge_declared_body(stream: trio.SocketStream) -> None:
    await stream.send_all(_head(200, [(b"content-length", b"%d" % ENDLESS_LIMIT)]))
    for _ in range(ENDLESS_LIMIT // len(_GARBAGE)):
        await stream.send_all(_GARBAGE)


async def _short_body(stream: trio.SocketStream) -> None:
    await stream.send_all(_head(200, [(b"content-length", b"100")]) + b"OK")


async def _trickled_head(stream: trio.SocketStream) -> None:
    for byte in _head(200, [(b"content-length", b"2")]) + b"OK":
        await stream.send_all(bytes([byte]))
        await trio.sleep(0.05)


async def _garbage_status_line(stream: trio.SocketStream) -> None:
    await stream.send_all(b"SPAM AND EGGS\r\n\r\n" + _GARBAGE)


async def _http09(stream: trio.SocketStream) -> None:
    await stream.send_all(b"OK")


async def _nothing(stream: trio.SocketStream) -> None:
    pass  # accept, read the request, close without a byte


# A valid gzip header, then a deflate block of a type that does not exist.
_CORRUPT_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20
_BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

CATALOGUE: dict[str, Respond] = {
    "corrupt-gzip": _plain(200, _CORRUPT_GZIP, (b"content-encoding", b"gzip")),
    "corrupt-gzip-5xx": _plain(503, _CORRUPT_GZIP, (b"content-encoding", b"gzip")),
    "gzip-bomb": _plain(200, _BOMB, (b"content-encoding", b"gzip")),
    "unknown-encoding": _plain(200, b"OK", (b"content-encoding", b"x-nonsense, br")),
    "bad-chunking": _bad_chunking,
    "retry-after-superscript": _plain(503, b"busy", (b"retry-after", b"\xb2")),
    "retry-after-utf8": _plain(429, b"busy", (b"retry-after", "²".encode())),
    "retry-after-huge": _plain(503, b"busy", (b"retry-after", b"9" * 5000)),
    "non-ascii-headers": _plain(503, b"busy", (b"x-note", b"caf\xe9 \xff\xfe \x1b[31m"),
                                (b"content-type", b"text/plain; charset=\xff")),
    "bad-charset": _plain(200, b"\xff\xfeOK", (b"content-type", b"text/plain; charset=nope")),
    "huge-header": _plain(200, b"OK", (b"x-huge", b"a" * (1024 * 1024))),
    "many-headers": _plain(200, b"OK", *[(b"x-h%d" % n, b"v") for n in range(20_000)]),
    "redirect-loop": _plain(302, b"", (b"location", b"/same/place/again")),
    "redirect-elsewhere": _plain(308, b"", (b"location", b"http://127.0.0.2:9/")),
    "endless-chunks": _endless_chunks,
    "endless-until-close": _endless_until_close,
    "huge-declared-body": _huge_declared_body,
    "short-body": _short_body,
    "reset-before-status": _reset,
    "reset-mid-body": _reset_mid_body,
    "garbage-2xx": _plain(200, _GARBAGE),
    "garbage-json-2xx": _plain(202, b'{"ok": tru', (b"content-type", b"application/json")),
    "garbage-status-line": _garbage_status_line,
    "http09": _http09,
    "close-without-answer": _nothing,
    "trickled-head": _trickled_head,
}


def respond_for(step: str) -> Respond:
    """The responder of a plan step: a catalogue name or ``status:N``."""
    if step.startswith("status:"):
        status = int(step.split(":", 1)[1])
        return _plain(status, b"status %d" % status)
    return CATALOGUE[step]


def every_status() -> list[str]:
    """``status:100`` ... ``status:599``."""
    return [f"status:{status}" for status in range(100, 600)]


@dataclass
class BrokenDestination:
    """The server's state: its plan, what it recorded, how each step went.

    Attributes:
        plan: steps still to serve, in order.
        requests: every request received whole, in order.
        served: the steps served so far.
        honest: set once the plan is used up.
    """

    plan: list[str]
    requests: list[Recorded] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    honest: trio.Event = field(default_factory=trio.Event)
    url: str = ""

    async def _read_request(self, stream: trio.SocketStream) -> Recorded | None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_REQUEST_HEAD:
                return None
            data = await stream.receive_some(65536)
            if not data:
                return None
            buffer += data
        head, _, body = buffer.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            data = await stream.receive_some(65536)
            if not data:
                return None
            body += data
        return Recorded(method, path, headers, body[:length])

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serves one connection: one request, one (broken) answer, then close."""
        try:
            request = await self._read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            if self.plan:
                step = self.plan.pop(0)
                self.served.append(step)
                if not self.plan:
                    self.honest.set()
                await respond_for(step)(stream)
            else:
                await _plain(200, b"OK")(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client hung up: the usual end of a never-ending body
        finally:
            if stream.socket.fileno() != -1:
                await stream.aclose()


async def start_broken_destination(nursery: trio.Nursery, plan: list[str]) -> BrokenDestination:
    """Starts a :class:`BrokenDestination` on 127.0.0.1 (stopped with the nursery)."""
    destination = BrokenDestination(list(plan))
    if not plan:
        destination.honest.set()
    listeners = await nursery.start(partial(trio.serve_tcp, destination.handle, 0,
                                            host="127.0.0.1"))
    destination.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return destination
