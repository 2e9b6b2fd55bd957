"""Signing each outbound HTTP request with Standard Webhooks headers (an ``httpx.Auth``).

Apart from agent/common/signing.py so that reading keys and verifying signatures does
not import httpx.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence

import httpx

from agent.common.signing import ID_HEADER, SigningKey, new_message_id, sign_headers


class WebhookAuth(httpx.Auth):
    """Signs each request with Standard Webhooks headers; no I/O in the flow.

    The request's own ``webhook-id`` header is kept when present (the outbox sets
    it to the message id, so a retry carries the same id and the receiver can
    deduplicate); otherwise a fresh id is made. The timestamp is taken at signing
    time, so every retry is signed afresh and stays inside the receiver's window.

    Args:
        keys: the keys to sign with, all at once (several during a rotation).
        wall_clock: seconds since the epoch (tests pass a fixed clock).
    """

    requires_request_body = True

    def __init__(
        self, keys: Sequence[SigningKey], *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.keys = tuple(keys)
        self.wall_clock = wall_clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        msg_id = request.headers.get(ID_HEADER) or new_message_id()
        request.headers.update(
            sign_headers(msg_id, int(self.wall_clock()), request.content, self.keys)
        )
        yield request
