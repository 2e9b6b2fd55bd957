"""What every alert channel shares: the interface, its errors, the alert's words."""

from __future__ import annotations

import time
from typing import Final, Generic, Protocol, TypeVar

import httpx

from agent.central.storage import Incident, Notification
from agent.common.http_answers import BoundedAnswer, send_bounded
from agent.common.keyfiles import read_secret, single_source
from agent.common.retry_after import parse_retry_after
from agent.common.tables import Table
from agent.common.timefmt import rfc3339
from agent.errors import ConfigError, HeartwireError

TRIGGER: Final = "trigger"
RESOLVE: Final = "resolve"
# How much of a refusing answer's body goes into the error (one line).
ERROR_BODY_CHARS: Final = 200


class ChannelError(Exception):
    """A delivery that did not go through.

    Attributes:
        retryable: whether trying again later may succeed (network, 5xx, 429).
        retry_after_s: how long the service asked us to wait, when it said.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    """A place alerts go. ``send`` returns when delivered or raises ChannelError."""

    name: str

    async def send(self, notification: Notification) -> None: ...  # pragma: no cover


class ChannelSettings(Protocol):
    """A channel's parsed config table; ``open`` makes the channel."""

    @property
    def name(self) -> str: ...  # pragma: no cover

    @property
    def kind(self) -> str: ...  # pragma: no cover

    def open(self, client: httpx.AsyncClient) -> Channel: ...  # pragma: no cover


SettingsT = TypeVar("SettingsT", bound=ChannelSettings)


class HttpChannel(Generic[SettingsT]):
    """What every HTTP channel holds: its settings and the shared client."""

    def __init__(self, settings: SettingsT, client: httpx.AsyncClient) -> None:
        self.name = settings.name
        self.settings = settings
        self.client = client


def optional_channel_secret(table: Table, prefix: str) -> str | None:
    """A channel's secret (token, hook URL, password) from ``<prefix>_file``,
    ``<prefix>_env`` or ``<prefix>_credential`` (a systemd credential); None when
    none of them is given.

    Raises:
        ConfigError: naming the key, when several are given, or the secret is missing,
            empty or in a file that is not private.
    """
    return _channel_secret(table, prefix, required=False)


def read_channel_secret(table: Table, prefix: str) -> str:
    """Like :func:`optional_channel_secret`, but one of the three keys is required."""
    secret = _channel_secret(table, prefix, required=True)
    assert secret is not None  # a required source is there, or single_source raised
    return secret


def _channel_secret(table: Table, prefix: str, *, required: bool) -> str | None:
    source = single_source(table, prefix, required=required)
    if source is None:
        return None
    try:
        return read_secret(source)
    except HeartwireError as exc:
        raise ConfigError(table.file, source.key, str(exc)) from None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def alert_text(incident: Incident, event: str) -> str:
    """One human line for an incident event, the same in every channel."""
    if event == RESOLVE and incident.resolved_at is not None:
        lasted = _duration(incident.resolved_at - incident.opened_at)
        return f"RESOLVED after {lasted}: {incident.summary}"
    return f"ALERT: {incident.summary}"


# A service's incidents (down, flapping) have no agent: their subject is ("", name).
SERVICE_DOWN: Final = "service_down"


def service_of_incident(incident: Incident) -> str | None:
    """The service an incident is about (``service_down`` or its flapping), else None."""
    return incident.check if not incident.agent and incident.check else None


def dedup_key(incident: Incident) -> str:
    """A key that names one incident, stable from its trigger to its resolve."""
    subject = f"{incident.agent}/{incident.check}" if incident.check else incident.agent
    if service_of_incident(incident) is not None:
        subject = f"service/{incident.check}"
    return f"heartwire/{incident.kind}/{subject}/{incident.id}"


def incident_json(incident: Incident) -> dict[str, object]:
    """The incident as JSON (generic webhook body, API): a service's incident has
    ``service`` set and neither ``agent`` nor ``check``."""
    service = service_of_incident(incident)
    return {
        "id": incident.id,
        "kind": incident.kind,
        "agent": incident.agent or None,
        "check": None if service else incident.check or None,
        "service": service,
        "status": incident.status,
        "summary": incident.summary,
        "opened_at": rfc3339(incident.opened_at),
        "resolved_at": None if incident.resolved_at is None else rfc3339(incident.resolved_at),
    }


def check_response(answer: BoundedAnswer, service: str) -> None:
    """Turns a non-2xx answer into a ChannelError: 408, 429 and 5xx are retryable.

    Raises:
        ChannelError: the service did not accept the request.
    """
    if answer.is_success:
        return
    status = answer.status
    retryable = status in (408, 429) or status >= 500
    body = " ".join(answer.text[:ERROR_BODY_CHARS].split())
    raise ChannelError(
        f"{service} answered {status}: {body}",
        retryable=retryable,
        retry_after_s=parse_retry_after(answer.headers.get("retry-after"), now=time.time()),
    )


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: object,
    service: str,
    *,
    auth: httpx.Auth | None = None,
    headers: dict[str, str] | None = None,
) -> BoundedAnswer:
    """POSTs JSON and reads at most a few KiB of the answer (common/http_answers.py:
    a body that never ends costs the time of its status line); network failures
    become retryable ChannelErrors.

    Raises:
        ChannelError: no answer, or not a 2xx.
    """
    request = client.build_request("POST", url, json=body, headers=headers)
    try:
        answer = await send_bounded(client, request, auth=auth)
    except httpx.HTTPError as exc:
        raise ChannelError(f"{service}: {type(exc).__name__}: {exc}", retryable=True) from exc
    check_response(answer, service)
    return answer
