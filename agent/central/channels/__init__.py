"""Alert channels, one file each, registered by their ``kind``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from agent.central.channels import alertmanager, email, pagerduty, slack, telegram, webhook
from agent.central.channels.base import Channel, ChannelError, ChannelSettings
from agent.common.tables import Table

# kind → reader of a [channels.<name>] table
CHANNEL_KINDS: Final[dict[str, Callable[[Table, str], ChannelSettings]]] = {
    webhook.KIND: webhook.read_settings,
    slack.KIND: slack.read_settings,
    email.KIND: email.read_settings,
    telegram.KIND: telegram.read_settings,
    pagerduty.KIND: pagerduty.read_settings,
    alertmanager.KIND: alertmanager.read_settings,
}

__all__ = ["CHANNEL_KINDS", "Channel", "ChannelError", "ChannelSettings"]
