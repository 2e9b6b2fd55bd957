"""PagerDuty Events API v2: ``POST /v2/enqueue`` with trigger and resolve events.

A trigger carries ``routing_key``, ``event_action = "trigger"``, a ``dedup_key``
and ``payload`` (``summary``, ``source``, ``severity``, ``timestamp``,
``component``, ``group``, ``class``, ``custom_details``); the resolve carries the
same ``dedup_key`` so PagerDuty closes the alert it opened. PagerDuty answers
``202`` with ``{"status": "success", "dedup_key": ...}``; 400 is permanent, 429 and
5xx are retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agent.central.channels.base import (
    TRIGGER,
    HttpChannel,
    alert_text,
    dedup_key,
    incident_json,
    post_json,
    read_channel_secret,
)
from agent.central.storage import Notification
from agent.common.tables import Table
from agent.common.timefmt import rfc3339

KIND = "pagerduty"
DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(frozen=True, slots=True)
class PagerDutySettings:
    """``[channels.<name>] kind = "pagerduty"``."""

    name: str
    routing_key: str
    url: str = DEFAULT_URL
    severity: str = "critical"
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> PagerDutyChannel:
        """The channel, sending through ``client``."""
        return PagerDutyChannel(self, client)


def read_settings(table: Table, name: str) -> PagerDutySettings:
    """Reads the table (``routing_key_file``, optional ``url`` and ``severity``)."""
    return PagerDutySettings(
        name,
        read_channel_secret(table, "routing_key"),
        url=table.string("url", DEFAULT_URL),
        severity=table.choice("severity", SEVERITIES, "critical"),
    )


class PagerDutyChannel(HttpChannel[PagerDutySettings]):
    """Triggers and resolves one PagerDuty alert per incident."""

    async def send(self, notification: Notification) -> None:
        """Delivers one notification."""
        incident = notification.incident
        body: dict[str, object] = {
            "routing_key": self.settings.routing_key,
            "event_action": notification.event,
            "dedup_key": dedup_key(incident),
        }
        if notification.event == TRIGGER:
            body["payload"] = {
                "summary": alert_text(incident, TRIGGER)[:1024],
                "source": incident.agent,
                "severity": self.settings.severity,
                "timestamp": rfc3339(incident.opened_at),
                "component": incident.check or incident.agent,
                "group": incident.agent,
                "class": incident.kind,
                "custom_details": incident_json(incident),
            }
        await post_json(self.client, self.settings.url, body, f"pagerduty {self.name}")
