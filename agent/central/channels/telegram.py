"""Telegram Bot API: ``POST {api_url}/bot<token>/sendMessage`` with ``chat_id`` and ``text``.

Telegram answers ``{"ok": true, "result": {...}}``; a refusal is
``{"ok": false, "error_code": N, "description": ...}`` and a 429 carries
``parameters.retry_after`` (seconds), which we honour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from agent.central.channels.base import (
    ERROR_BODY_CHARS,
    ChannelError,
    HttpChannel,
    alert_text,
    read_channel_secret,
)
from agent.central.storage import Notification
from agent.common.http_answers import send_bounded
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
        request = self.client.build_request("POST", url, json=body)
        try:
            answer = await send_bounded(self.client, request)
        except httpx.HTTPError as exc:
            # The URL holds the token: name the error type only.
            raise ChannelError(
                f"telegram {self.name}: {type(exc).__name__}", retryable=True
            ) from None
        if answer.is_success:
            return
        description, retry_after_s = _refusal(answer.text)
        status = answer.status
        raise ChannelError(
            f"telegram {self.name} answered {status}: {description}",
            retryable=status == 429 or status >= 500,
            retry_after_s=retry_after_s,
        )


def _refusal(text: str) -> tuple[str, float | None]:
    """The ``description`` and ``parameters.retry_after`` of the Bot API's error answer
    (``{"ok": false, "description": ..., "parameters": {"retry_after": 5}}``), each
    only when it has the type the API documents; a proxy's error page gives neither."""
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # 4 KiB of "[" nests deeper than Python recurses
        return "", None
    if not isinstance(answer, dict):
        return "", None
    description = answer.get("description")
    description = " ".join(description.split())[:ERROR_BODY_CHARS] if isinstance(
        description, str) else ""
    parameters = answer.get("parameters")
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    # bool is an int in Python; and a day is more than any rate limit asks for.
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or not (
            0 <= retry_after <= 86_400):
        retry_after = None
    return description, retry_after
