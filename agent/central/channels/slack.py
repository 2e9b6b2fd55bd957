"""Slack incoming webhooks: ``POST {"text": ...}`` to the hook URL.

Slack answers ``200 ok``, or a 4xx with a word such as ``invalid_payload`` or
``channel_not_found`` (permanent), or 429 / 5xx (retried). The hook URL is a
secret (anyone holding it can post), so it is read from a private file.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agent.central.channels.base import (
    TRIGGER,
    HttpChannel,
    alert_text,
    post_json,
    read_channel_secret,
)
from agent.central.storage import Notification
from agent.common.tables import Table

KIND = "slack"


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """``[channels.<name>] kind = "slack"``."""

    name: str
    url: str
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> SlackChannel:
        """The channel, sending through ``client``."""
        return SlackChannel(self, client)


def read_settings(table: Table, name: str) -> SlackSettings:
    """Reads the table (``url_file``: a private file holding the hook URL)."""
    url = read_channel_secret(table, "url")
    if not url.startswith(("https://", "http://")):
        raise table.error("url_file", "the file does not hold an http(s):// URL")
    return SlackSettings(name, url)


class SlackChannel(HttpChannel[SlackSettings]):
    """Posts one message per incident event."""

    async def send(self, notification: Notification) -> None:
        """Delivers one notification."""
        mark = ":red_circle:" if notification.event == TRIGGER else ":large_green_circle:"
        text = f"{mark} {alert_text(notification.incident, notification.event)}"
        await post_json(self.client, self.settings.url, {"text": text}, f"slack {self.name}")
