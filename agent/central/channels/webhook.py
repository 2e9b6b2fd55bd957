"""Generic webhook: the incident as JSON, signed the Standard Webhooks way.

Body: ``{"type": "incident.trigger" | "incident.resolve", "text": ..., "incident": {...}}``.
With ``signing_key_file`` (a ``whsk_`` or ``whsec_`` key) the request carries
``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature`` exactly like the
agent's own messages (agent/common/signing.py), so the receiving end verifies it with the
same code. The ``webhook-id`` is the same on every retry of one delivery.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import httpx

from agent.central.channels.base import (
    HttpChannel,
    alert_text,
    incident_json,
    optional_channel_secret,
    post_json,
)
from agent.central.storage import Notification
from agent.common.signing import ID_HEADER, SigningKey, WebhookAuth, read_signing_key
from agent.common.tables import Table
from agent.errors import HeartwireError

KIND = "webhook"


def delivery_id(notification: Notification) -> str:
    """A ``msg_`` id that stays the same across retries of one delivery."""
    seed = f"{notification.incident.id}:{notification.event}:{notification.channel}"
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``[channels.<name>] kind = "webhook"``."""

    name: str
    url: str
    signing_keys: tuple[SigningKey, ...] = ()
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> WebhookChannel:
        """The channel, sending through ``client``."""
        return WebhookChannel(self, client)


def read_settings(table: Table, name: str) -> WebhookSettings:
    """Reads the table (``url``, optional ``signing_key_file``)."""
    url = table.nonempty_string("url")
    if not url.startswith(("https://", "http://")):
        raise table.error("url", f"expected an http(s):// URL, got {url!r}")
    keys: tuple[SigningKey, ...] = ()
    text = optional_channel_secret(table, "signing_key")
    if text is not None:
        try:
            keys = (read_signing_key(text),)
        except HeartwireError as exc:
            raise table.error("signing_key_file", str(exc)) from None
    return WebhookSettings(name, url, keys)


class WebhookChannel(HttpChannel[WebhookSettings]):
    """POSTs each incident event to one URL."""

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient) -> None:
        super().__init__(settings, client)
        self.auth = WebhookAuth(settings.signing_keys) if settings.signing_keys else None

    async def send(self, notification: Notification) -> None:
        """Delivers one notification."""
        body: dict[str, object] = {
            "type": f"incident.{notification.event}",
            "text": alert_text(notification.incident, notification.event),
            "incident": incident_json(notification.incident),
        }
        await post_json(
            self.client, self.settings.url, body, f"webhook {self.name}",
            auth=self.auth, headers={ID_HEADER: delivery_id(notification)},
        )
