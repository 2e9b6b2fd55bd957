"""Reading an HTTP answer without trusting it: the status, the headers, a few KiB.

Whoever answers a heartwire request (a destination for the agent, an alert
channel for the receiver) may send a body of any size, one that never ends, a gzip
bomb or a charset that does not exist. Only the first :data:`MAX_ANSWER_BYTES` of
the body are read; then the connection is closed, so the rest is never downloaded
and the request takes the time of its status line, not of its body. A body cut
off or corrupt is judged on what arrived: the status has been said.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import httpx

# How much of any answer's body is read; the rest is never downloaded.
MAX_ANSWER_BYTES = 4096


@dataclass(frozen=True, slots=True)
class BoundedAnswer:
    """An answer as far as it was read.

    Attributes:
        status: the HTTP status code.
        reason: the reason phrase (as sent: may be empty or hostile).
        headers: the response headers.
        text: at most the first :data:`MAX_ANSWER_BYTES` of the body, decoded
            leniently; empty when there was none or it could not be read.
    """

    status: int
    reason: str
    headers: httpx.Headers
    text: str

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


def _decompressed(raw: bytes, encoding: str) -> bytes | None:
    """The body under its ``content-encoding``, at most ``MAX_ANSWER_BYTES`` of it;
    None when it cannot be read (we ask for identity: anything else is a stranger)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    # Bounded output whatever the input (a gzip bomb stops at the limit).
    wbits = (16 + zlib.MAX_WBITS) if "gzip" in encoding else zlib.MAX_WBITS
    try:
        return zlib.decompressobj(wbits).decompress(raw, MAX_ANSWER_BYTES)
    except zlib.error:
        return None


def _text(raw: bytes, response: httpx.Response) -> str:
    body = _decompressed(raw, response.headers.get("content-encoding", ""))
    if body is None:
        return ""
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset that does not exist
        return body.decode("utf-8", errors="replace")


async def send_bounded(client: httpx.AsyncClient, request: httpx.Request, *,
                       auth: httpx.Auth | None = None) -> BoundedAnswer:
    """Sends ``request``; reads the status, headers and at most a few KiB of the body.

    The connection is closed after that (a body left unread is never downloaded).

    Raises:
        httpx.HTTPError: no status line came back (connect, write or protocol failure).
    """
    request.headers["accept-encoding"] = "identity"
    if auth is None:
        response = await client.send(request, stream=True)
    else:
        response = await client.send(request, stream=True, auth=auth)
    raw = b""
    try:
        if response.is_stream_consumed:
            # An in-process transport (httpx.MockTransport) hands over a body that is
            # already in memory, and already decoded.
            raw = response.content[:MAX_ANSWER_BYTES]
        else:
            async for chunk in response.aiter_raw():
                if len(raw) < MAX_ANSWER_BYTES:
                    raw += chunk
                else:
                    # Enough: closing the connection ends the iteration (with a read
                    # error, or at once), so httpx's own stream generators are
                    # finished in place rather than left to the garbage collector.
                    await response.aclose()
    except (httpx.HTTPError, httpx.StreamError):
        pass  # cut off, corrupt chunking, closed by us: judged on what arrived
    finally:
        await response.aclose()
    return BoundedAnswer(response.status_code, response.reason_phrase, response.headers,
                         _text(raw[:MAX_ANSWER_BYTES], response))
