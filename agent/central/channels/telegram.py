"""Telegram Bot API: ``POST {api_url}/bot<token>/sendMessage`` with ``chat_id`` and ``text``.

Telegram answers ``{"ok": true, "result": {...}}``; a refusal is
``{"ok": false, "error_code": N, "description": ...}`` and a 429 carries
``parameters.retry_after`` (seconds), which we honour.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agent.central.channels.base import ChannelError, HttpChannel, alert_text, read_channel_secret
from agent.central.storage import Notification
from agent.common.tables import Table

KIND = "telegram"
DEFAULT_API_URL = "https://api.telegram.org"


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    """``[channels.<name>] kind = "telegram"``."""

    name: str
    token: str
    chat_id: str
    api_url: str = DEFAULT_API_URL
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> TelegramChannel:
        """The channel, sending through ``client``."""
        return TelegramChannel(self, client)


def read_settings(table: Table, name: str) -> TelegramSettings:
    """Reads the table (``token_file``, ``chat_id``, optional ``api_url``)."""
    token = read_channel_secret(table, "token")
    chat_id = table.nonempty_string("chat_id")
    api_url = table.string("api_url", DEFAULT_API_URL).rstrip("/")
    return TelegramSettings(name, token, chat_id, api_url)


class TelegramChannel(HttpChannel[TelegramSettings]):
    """Sends one message per incident event to one chat."""

    async def send(self, notification: Notification) -> None:
        """Delivers one notification."""
        url = f"{self.settings.api_url}/bot{self.settings.token}/sendMessage"
        body = {
            "chat_id": self.settings.chat_id,
            "text": alert_text(notification.incident, notification.event),
        }
        try:
            response = await self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            # The URL holds the token: name the error type only.
            raise ChannelError(
                f"telegram {self.name}: {type(exc).__name__}", retryable=True
            ) from None
        if response.is_success:
            return
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        status = response.status_code
        parameters = answer.get("parameters") or {}
        raise ChannelError(
            f"telegram {self.name} answered {status}: {answer.get('description', '')}",
            retryable=status == 429 or status >= 500,
            retry_after_s=parameters.get("retry_after"),
        )
