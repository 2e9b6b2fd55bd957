"""The native destination: each message is POSTed as signed JSON (docs/protocol.md)."""

from __future__ import annotations

import httpx

from agent.common.signing import ID_HEADER
from agent.config.destinations import DestinationConfig
from agent.outbound.messages import HEARTBEAT, MAINTENANCE, RESULTS, STATE_CHANGE
from agent.outbound.sinks.base import USER_AGENT, Answer
from agent.outbound.spool import OutboxMessage


class NativeSink:
    """POSTs the outbox body unchanged; signing is the client's ``WebhookAuth``.

    The ``webhook-id`` header is the message id, so a retry is recognisably the same
    message to the receiver. ``urls`` lists every receiver of the destination,
    preferred first (the delivery loop fails over among them).
    """

    def __init__(self, destination: DestinationConfig, secret: str | None = None) -> None:
        self.url = destination.url
        self.urls = (destination.url, *destination.failover_urls)
        self.types = (HEARTBEAT, STATE_CHANGE, MAINTENANCE,
                      *((RESULTS,) if destination.wants_results else ()))

    def requests(self, message: OutboxMessage) -> list[httpx.Request]:
        """One signed-to-be POST with the stored body."""
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   ID_HEADER: message.id}
        return [httpx.Request("POST", self.url, content=message.body, headers=headers)]

    def not_recorded(self, answer: Answer) -> str | None:
        """A 2xx from the native receiver always means stored."""
        return None

    def refused(self, answer: Answer) -> str | None:
        """The native receiver says it with its status (docs/protocol.md)."""
        return None
