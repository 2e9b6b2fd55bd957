"""The receiver's alert channels against services that answer wrongly.

Every HTTP channel (webhook, Slack, PagerDuty, Telegram, Alertmanager) posts one
alert to a loopback server that answers with each broken answer of the catalogue
(tests/hostile/broken_http.py): endless bodies, gzip bombs, garbage JSON, resets,
huge headers, every status. Each send either returns (delivered) or raises a
ChannelError, and within a bounded time: a channel that read a never-ending body
to its end would hold its alert until the dispatcher's timeout, then send it again
(a second page for one incident).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import httpx
import pytest
import trio

from agent.central.channels import ChannelError
from agent.central.channels.alertmanager import AlertmanagerSettings
from agent.central.channels.base import TRIGGER, ChannelSettings
from agent.central.channels.pagerduty import PagerDutySettings
from agent.central.channels.slack import SlackSettings
from agent.central.channels.telegram import TelegramSettings
from agent.central.channels.webhook import WebhookSettings
from agent.central.storage import Incident, Notification
from agent.common.http_answers import MAX_ANSWER_BYTES
from tests.central_support import BASE_TIME
from tests.hostile.broken_http import CATALOGUE, start_broken_destination

# Each broken answer is over in well under this on loopback; reading an endless body
# to its end (256 MiB) would take longer, and the test would fail on it.
SEND_LIMIT_S = 5.0

CHANNELS: dict[str, Callable[[str], ChannelSettings]] = {
    "webhook": lambda url: WebhookSettings("w", url),
    "slack": lambda url: SlackSettings("s", url),
    "pagerduty": lambda url: PagerDutySettings("p", "R" * 32, url=url),
    "telegram": lambda url: TelegramSettings("t", "123:abc", "-100", api_url=url),
    "alertmanager": lambda url: AlertmanagerSettings("a", url),
}

_INCIDENT = Incident(1, "check_down", "dc1", "db", "down", "dc1: check db is down (refused)",
                     BASE_TIME, None, True)


def _notification() -> Notification:
    return Notification(1, _INCIDENT, TRIGGER, "c", 0, BASE_TIME)


@dataclass
class Outcome:
    delivered: bool = False
    error: str = ""


async def _send(settings: ChannelSettings) -> Outcome:
    async with httpx.AsyncClient(timeout=2.0) as client:
        channel = settings.open(client)
        try:
            with trio.fail_after(SEND_LIMIT_S):
                await channel.send(_notification())
        except ChannelError as exc:
            return Outcome(error=str(exc))
    return Outcome(delivered=True)


@pytest.mark.parametrize("kind", sorted(CHANNELS))
async def test_every_channel_ends_every_broken_answer_with_a_verdict_in_bounded_time(
        kind: str) -> None:
    steps = sorted(CATALOGUE)
    async with trio.open_nursery() as nursery:
        server = await start_broken_destination(nursery, steps)
        outcomes = {step: await _send(CHANNELS[kind](server.url)) for step in steps}
        nursery.cancel_scope.cancel()
    assert server.served == steps
    # A 2xx with a body that never ends was delivered: the status says so.
    assert outcomes["endless-chunks"].delivered and outcomes["huge-declared-body"].delivered
    for step, outcome in outcomes.items():
        assert "\n" not in outcome.error, step
        assert len(outcome.error) < 1000, (step, len(outcome.error))


async def _endless_error_page(stream: trio.SocketStream, sent: list[int]) -> None:
    """A 500 whose body trickles for ever: what a broken proxy in front of a service does."""
    await stream.receive_some(65536)
    await stream.send_all(b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"400\r\n" + b"e" * 1024 + b"\r\n"
    try:
        for _ in range(100_000):
            await stream.send_all(chunk)
            sent[0] += len(chunk)
            await trio.sleep(0.001)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.mark.parametrize("kind", sorted(CHANNELS))
async def test_an_endless_error_page_is_read_no_further_than_its_first_kib(kind: str) -> None:
    sent = [0]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(
            trio.serve_tcp, partial(_endless_error_page, sent=sent), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        outcome = await _send(CHANNELS[kind](f"http://127.0.0.1:{port}"))
        nursery.cancel_scope.cancel()
    assert not outcome.delivered and "500" in outcome.error
    # What the kernel buffers on top of what was read stays far below an endless body.
    assert sent[0] < 64 * MAX_ANSWER_BYTES * 16
