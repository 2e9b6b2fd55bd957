"""Prometheus Alertmanager: incidents as alerts, ``POST <url>/api/v2/alerts``.

The body is Alertmanager's ``postableAlerts`` (api/v2/openapi.yaml): a JSON array
of ``{"labels": {...}, "annotations": {...}, "startsAt", "endsAt", "generatorURL"}``.
Labels identify an alert, so every post of one incident carries the same ones:
``alertname`` (``HeartwireCheckDown``, ``HeartwireAgentSilent``,
``HeartwireCheckFlapping``, ``HeartwireServiceDown``, ``HeartwireAgentUnreachable``),
``agent`` (not on a service's alert: several agents saw it), ``check`` (checks
only), ``group`` and ``target`` (when the check has them: its ``group`` and its
``host:port``), ``service`` (a service's alert, or a check that belongs to a
service: services.py), ``severity``, and ``incident`` (the number, so two outages
of one check are two alerts), plus any fixed ``labels`` of the config. Annotations carry the
summary and the alert text. Alertmanager answers 200 with an empty body, 400 with
a string for a body it refuses (permanent) and 5xx (retried).

Alertmanager expects a client to re-send firing alerts: an alert not heard of
for ``resolve_timeout`` counts as resolved. So each firing post sets ``endsAt`` to
4 x ``resend_every`` ahead (as Prometheus does), and :meth:`refresh`, run by the
receiver every ``resend_every`` (default 1 minute), posts every open incident
again. A resolve sets ``endsAt`` to the time the incident resolved. A lock keeps
a refresh from crossing a resolve: the open incidents are read inside it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio

from agent.central.channels.base import (
    TRIGGER,
    ChannelError,
    HttpChannel,
    alert_text,
    optional_channel_secret,
    post_json,
    service_of_incident,
)
from agent.central.storage import CheckRow, Incident, Notification
from agent.common.logs import get_logger
from agent.common.tables import Table
from agent.common.timefmt import rfc3339

log = get_logger("central.alertmanager")

KIND = "alertmanager"
ALERTS_PATH: Final = "/api/v2/alerts"
DEFAULT_RESEND_S: Final = 60.0
# The ends of a firing alert are this many resend periods ahead (Prometheus: 4).
ENDS_AFTER_RESENDS: Final = 4
MAX_ALERTS_PER_POST: Final = 500
ALERT_NAMES: Final = {"agent_silent": "HeartwireAgentSilent", "check_down": "HeartwireCheckDown",
                      "check_flapping": "HeartwireCheckFlapping",
                      "service_down": "HeartwireServiceDown",
                      "agent_unreachable": "HeartwireAgentUnreachable"}
LABEL_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_LABELS: Final = ("alertname", "agent", "check", "group", "service", "target",
                          "severity", "incident")


@dataclass(frozen=True, slots=True)
class AlertmanagerSettings:
    """``[channels.<name>] kind = "alertmanager"``."""

    name: str
    url: str
    severity: str = "critical"
    resend_every_s: float = DEFAULT_RESEND_S
    labels: tuple[tuple[str, str], ...] = ()
    token: str | None = field(default=None, repr=False)
    external_url: str | None = None
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> AlertmanagerChannel:
        """The channel, sending through ``client``."""
        return AlertmanagerChannel(self, client)


def read_settings(table: Table, name: str) -> AlertmanagerSettings:
    """Reads the table: ``url`` (Alertmanager's base URL), optional ``severity``,
    ``resend_every``, ``labels``, ``token_file`` (a bearer token) and
    ``external_url`` (this receiver's address, for the alerts' links)."""
    url = table.nonempty_string("url").rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise table.error("url", f"expected an http(s):// URL, got {url!r}")
    resend = table.duration("resend_every", DEFAULT_RESEND_S)
    if resend < 5:
        raise table.error("resend_every", "must be at least 5s")
    labels_table = table.table("labels")
    labels = []
    for label in labels_table:
        if label in RESERVED_LABELS or not LABEL_NAME.match(label) or label.startswith("__"):
            raise labels_table.error(label, "must be a Prometheus label name not set by "
                                     f"heartwire ({', '.join(RESERVED_LABELS)})")
        labels.append((label, labels_table.nonempty_string(label)))
    labels_table.finish()
    external = table.optional_string("external_url")
    return AlertmanagerSettings(
        name, url, severity=table.nonempty_string("severity", "critical"),
        resend_every_s=resend, labels=tuple(labels),
        token=optional_channel_secret(table, "token"),
        external_url=external.rstrip("/") if external else None,
    )


class AlertmanagerChannel(HttpChannel[AlertmanagerSettings]):
    """Fires and resolves one Alertmanager alert per incident.

    ``check_of`` (set by the receiver) finds a check's stored row, for the
    ``group`` and ``target`` labels; ``service_of`` the service a check belongs to.
    """

    def __init__(self, settings: AlertmanagerSettings, client: httpx.AsyncClient) -> None:
        super().__init__(settings, client)
        self.check_of: Callable[[str, str], CheckRow | None] = lambda agent, check: None
        self.service_of: Callable[[str, str], str | None] = lambda agent, check: None
        self.wall_clock: Callable[[], float] = trio.current_time  # replaced by the receiver
        # Runs a batch of store reads: the receiver's reader thread, so that a refresh
        # of thousands of firing alerts (a read and a row per alert) does not hold
        # the event loop; in place by default.
        self.run_read: Callable[..., Awaitable[Any]] = _in_place
        self._lock = trio.Lock()

    def alert(self, incident: Incident, event: str, now: float) -> dict[str, object]:
        """One incident as a ``postableAlert``."""
        service = service_of_incident(incident)
        labels = {"alertname": ALERT_NAMES.get(incident.kind, "Heartwire"),
                  **({"service": service} if service else {"agent": incident.agent}),
                  "severity": self.settings.severity,
                  "incident": str(incident.id), **dict(self.settings.labels)}
        if incident.check and service is None:
            labels["check"] = incident.check
            row = self.check_of(incident.agent, incident.check)
            if row is not None and row.group:
                labels["group"] = row.group
            if row is not None and row.host:
                labels["target"] = f"{row.host}:{row.port}" if row.port else row.host
            member_of = self.service_of(incident.agent, incident.check)
            if member_of is not None:
                labels["service"] = member_of
        if event == TRIGGER or incident.resolved_at is None:
            ends = now + ENDS_AFTER_RESENDS * self.settings.resend_every_s
        else:
            ends = incident.resolved_at
        alert: dict[str, object] = {
            "labels": labels,
            "annotations": {"summary": incident.summary,
                            "description": alert_text(incident, event)},
            "startsAt": rfc3339(incident.opened_at),
            "endsAt": rfc3339(ends),
        }
        if self.settings.external_url:
            path = f"/checks/{incident.agent}/{incident.check}" if incident.check else "/"
            if service is not None:
                path = "/#services"
            alert["generatorURL"] = self.settings.external_url + path
        return alert

    async def _post(self, alerts: Sequence[dict[str, object]]) -> None:
        headers = ({"authorization": f"Bearer {self.settings.token}"}
                   if self.settings.token else None)
        await post_json(self.client, self.settings.url + ALERTS_PATH, list(alerts),
                        f"alertmanager {self.name}", headers=headers)

    async def send(self, notification: Notification) -> None:
        """Fires (trigger) or resolves (resolve) the incident's alert."""
        async with self._lock:
            await self._post([self.alert(notification.incident, notification.event,
                                         self.wall_clock())])

    async def refresh(self, open_incidents: Callable[[], list[Incident]]) -> int:
        """Posts every open, notified incident again as firing; returns how many.

        Raises:
            ChannelError: Alertmanager did not take them (the next refresh tries again).
        """
        async with self._lock:
            now = self.wall_clock()
            batches = await self.run_read(self._firing_batches, open_incidents, now)
            for batch in batches:
                await self._post(batch)
            return sum(len(batch) for batch in batches)

    def _firing_batches(self, open_incidents: Callable[[], list[Incident]],
                        now: float) -> list[list[dict[str, object]]]:
        """The open, notified incidents as firing alerts, in posts of at most
        MAX_ALERTS_PER_POST (store reads: run by ``run_read``)."""
        firing = [incident for incident in open_incidents() if incident.notified]
        return [[self.alert(incident, TRIGGER, now)
                 for incident in firing[start:start + MAX_ALERTS_PER_POST]]
                for start in range(0, len(firing), MAX_ALERTS_PER_POST)]


async def refresh_forever(
    channels: Sequence[AlertmanagerChannel],
    open_incidents: Callable[[], list[Incident]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Re-posts the firing alerts to each channel every ``resend_every``, until cancelled.

    A failed refresh is logged and tried again at the next period; the
    deliveries of triggers and resolves (the dispatcher's) are not affected.
    """
    async def one(channel: AlertmanagerChannel) -> None:
        failing = False
        while True:
            await trio.sleep(channel.settings.resend_every_s)
            try:
                with trio.fail_after(channel.settings.resend_every_s):
                    await channel.refresh(open_incidents)
            except (ChannelError, trio.TooSlowError) as exc:
                if not failing:  # once per outage, not once a minute
                    log.warning("alertmanager %s: refreshing the firing alerts failed: %s",
                                channel.name, exc or "timed out")
                failing = True
            else:
                if failing:
                    log.info("alertmanager %s: firing alerts refreshed again", channel.name)
                failing = False

    task_status.started()
    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(one, channel)


async def _in_place(function: Callable[..., Any], *args: Any) -> Any:
    """Runs ``function(*args)`` on the event loop (a channel outside a receiver)."""
    return function(*args)
