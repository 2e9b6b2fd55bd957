"""Alert channels on the wire: SaaS APIs at the HTTP layer with their documented
formats, the generic webhook against a real loopback server, email through a real
SMTP server (aiosmtpd) with STARTTLS, implicit TLS and AUTH."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from agent.central.channels import ChannelError
from agent.central.channels.base import RESOLVE, TRIGGER, dedup_key
from agent.central.channels.email import EmailSettings
from agent.central.channels.pagerduty import PagerDutySettings
from agent.central.channels.slack import SlackSettings
from agent.central.channels.telegram import TelegramSettings
from agent.central.channels.webhook import WebhookSettings
from agent.central.storage import Incident, Notification
from agent.common.signing import Ed25519SigningKey, verify
from tests.central_support import BASE_TIME, self_signed_certificate
from tests.receiver import running_receiver

OPEN = Incident(7, "check_down", "dc1", "db", "down", "dc1: check db is down (refused)",
                BASE_TIME, None, True)
RESOLVED = Incident(7, "check_down", "dc1", "db", "down", "dc1: check db is down (refused)",
                    BASE_TIME, BASE_TIME + 125, True)


def _notification(event: str = TRIGGER, channel: str = "c") -> Notification:
    incident = OPEN if event == TRIGGER else RESOLVED
    return Notification(1, incident, event, channel, 0, BASE_TIME)


class Recorder:
    """A MockTransport handler answering from a plan and keeping the requests."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


# -- Slack ------------------------------------------------------------------------

SLACK_URL = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


async def test_slack_posts_text_to_the_hook() -> None:
    recorder = Recorder(httpx.Response(200, text="ok"), httpx.Response(200, text="ok"))
    async with recorder.client() as client:
        channel = SlackSettings("slack", SLACK_URL).open(client)
        await channel.send(_notification(TRIGGER))
        await channel.send(_notification(RESOLVE))
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == SLACK_URL
    assert request.headers["content-type"] == "application/json"
    assert recorder.body(0) == {"text": ":red_circle: ALERT: dc1: check db is down (refused)"}
    assert recorder.body(1) == {
        "text": ":large_green_circle: RESOLVED after 2m05s: dc1: check db is down (refused)"
    }


@pytest.mark.parametrize(("response", "retryable"), [
    (httpx.Response(400, text="invalid_payload"), False),
    (httpx.Response(404, text="channel_not_found"), False),
    (httpx.Response(429, text="rate_limited", headers={"retry-after": "30"}), True),
    (httpx.Response(500, text="rollup_error"), True),
])
async def test_slack_errors_are_permanent_or_retryable(response: httpx.Response,
                                                       retryable: bool) -> None:
    async with Recorder(response).client() as client:
        with pytest.raises(ChannelError) as caught:
            await SlackSettings("slack", SLACK_URL).open(client).send(_notification())
    assert caught.value.retryable is retryable
    assert response.text in str(caught.value)
    if response.status_code == 429:
        assert caught.value.retry_after_s == 30


# -- Telegram ---------------------------------------------------------------------

TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"


async def test_telegram_sends_a_message_to_the_chat() -> None:
    answer = {"ok": True, "result": {"message_id": 42, "chat": {"id": -100123, "type": "group"},
                                     "date": 1767225600, "text": "ALERT"}}
    recorder = Recorder(httpx.Response(200, json=answer))
    async with recorder.client() as client:
        await TelegramSettings("tg", TOKEN, "-100123").open(client).send(_notification())
    request = recorder.requests[0]
    assert str(request.url) == f"https://api.telegram.org/bot{TOKEN}/sendMessage"
    assert recorder.body() == {"chat_id": "-100123",
                               "text": "ALERT: dc1: check db is down (refused)"}


async def test_telegram_honours_retry_after_and_refusals_are_permanent() -> None:
    too_many = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 5",
                "parameters": {"retry_after": 5}}
    not_found = {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    recorder = Recorder(httpx.Response(429, json=too_many), httpx.Response(400, json=not_found))
    async with recorder.client() as client:
        channel = TelegramSettings("tg", TOKEN, "-100123").open(client)
        with pytest.raises(ChannelError) as first:
            await channel.send(_notification())
        with pytest.raises(ChannelError) as second:
            await channel.send(_notification())
    assert first.value.retryable and first.value.retry_after_s == 5
    assert not second.value.retryable and "chat not found" in str(second.value)
    assert TOKEN not in str(first.value) + str(second.value)


# -- PagerDuty --------------------------------------------------------------------

PD_URL = "https://events.pagerduty.com/v2/enqueue"


async def test_pagerduty_triggers_and_resolves_with_one_dedup_key() -> None:
    accepted = {"status": "success", "message": "Event processed",
                "dedup_key": "heartwire/check_down/dc1/db/7"}
    recorder = Recorder(httpx.Response(202, json=accepted), httpx.Response(202, json=accepted))
    async with recorder.client() as client:
        channel = PagerDutySettings("pd", "R0UTINGKEY0000000000000000000000").open(client)
        await channel.send(_notification(TRIGGER))
        await channel.send(_notification(RESOLVE))
    assert str(recorder.requests[0].url) == PD_URL
    trigger, resolve = recorder.body(0), recorder.body(1)
    assert trigger == {
        "routing_key": "R0UTINGKEY0000000000000000000000",
        "event_action": "trigger",
        "dedup_key": "heartwire/check_down/dc1/db/7",
        "payload": {
            "summary": "ALERT: dc1: check db is down (refused)",
            "source": "dc1",
            "severity": "critical",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "component": "db",
            "group": "dc1",
            "class": "check_down",
            "custom_details": trigger["payload"]["custom_details"],
        },
    }
    assert trigger["payload"]["custom_details"]["id"] == 7
    assert resolve == {"routing_key": "R0UTINGKEY0000000000000000000000",
                       "event_action": "resolve", "dedup_key": dedup_key(OPEN)}


@pytest.mark.parametrize(("response", "retryable"), [
    (httpx.Response(400, json={"status": "invalid event", "message": "Event object is invalid",
                               "errors": ["Length of 'routing_key' is incorrect"]}), False),
    (httpx.Response(429, text=""), True),
    (httpx.Response(503, text=""), True),
])
async def test_pagerduty_errors(response: httpx.Response, retryable: bool) -> None:
    async with Recorder(response).client() as client:
        with pytest.raises(ChannelError) as caught:
            await PagerDutySettings("pd", "key").open(client).send(_notification())
    assert caught.value.retryable is retryable


async def test_network_failures_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(ChannelError) as caught:
            await PagerDutySettings("pd", "key").open(client).send(_notification())
    assert caught.value.retryable


# -- generic webhook (a real loopback server) --------------------------------------

async def test_the_webhook_is_signed_like_agent_messages_and_keeps_its_id_on_retry() -> None:
    key = Ed25519SigningKey.generate()
    with running_receiver(["503", "ok"]) as server:
        async with httpx.AsyncClient() as client:
            channel = WebhookSettings("hook", server.url, (key,)).open(client)
            with pytest.raises(ChannelError) as caught:
                await channel.send(_notification())
            await channel.send(_notification())
        first, second = server.snapshot()
    assert caught.value.retryable
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verified = verify(second.headers, second.body, [key.public_key()], now=time.time())
    assert verified.msg_id.startswith("msg_")
    assert json.loads(second.body) == {
        "type": "incident.trigger",
        "text": "ALERT: dc1: check db is down (refused)",
        "incident": {"id": 7, "kind": "check_down", "agent": "dc1", "check": "db",
                     "service": None, "status": "down",
                     "summary": "dc1: check db is down (refused)",
                     "opened_at": "2026-01-01T00:00:00.000Z", "resolved_at": None},
    }


# -- email (a real SMTP server) -----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


UNUSED_CLIENT = httpx.AsyncClient()  # email does not speak HTTP; open() takes one anyway


class Mailbox:
    """An aiosmtpd handler that keeps every message and the logins it saw."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        # handled=False: aiosmtpd answers 535 itself on failure.
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest,
                tls_files: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int, str]]:
    mode = request.param
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = _free_port()
    options: dict[str, Any] = {"authenticator": mailbox.authenticate,
                               "auth_require_tls": True}
    if mode == "starttls":
        options |= {"tls_context": context, "require_starttls": True}
    else:
        # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the whole session is.
        options |= {"ssl_context": context, "auth_require_tls": False}
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield mailbox, port, mode
    finally:
        controller.stop()


@pytest.mark.parametrize("smtp_server", ["starttls", "tls"], indirect=True)
async def test_email_over_tls_with_auth(smtp_server: tuple[Mailbox, int, str],
                                        tls_files: tuple[Path, Path]) -> None:
    mailbox, port, mode = smtp_server
    settings = EmailSettings("mail", "127.0.0.1", port, mode, "heartwire@example.com",
                             ("oncall@example.com",), "heartwire", "s3cret", tls_files[0],
                             timeout_s=10)
    await settings.open(UNUSED_CLIENT).send(_notification(RESOLVE))
    assert len(mailbox.messages) == 1
    sender, recipients, raw = mailbox.messages[0]
    assert (sender, recipients) == ("heartwire@example.com", ["oncall@example.com"])
    email = message_from_bytes(raw)
    assert email["Subject"] == "[heartwire] RESOLVED after 2m05s: dc1: check db is down (refused)"
    assert email["X-Heartwire-Incident"] == "heartwire/check_down/dc1/db/7"
    assert mailbox.logins == [(b"heartwire", b"s3cret")]


@pytest.mark.parametrize("smtp_server", ["starttls"], indirect=True)
async def test_email_refuses_an_untrusted_certificate_and_a_bad_password(
    smtp_server: tuple[Mailbox, int, str], tls_files: tuple[Path, Path]
) -> None:
    mailbox, port, mode = smtp_server
    untrusted = EmailSettings("mail", "127.0.0.1", port, mode, "a@example.com",
                              ("b@example.com",), "heartwire", "s3cret", None, timeout_s=10)
    with pytest.raises(ChannelError) as caught:
        await untrusted.open(UNUSED_CLIENT).send(_notification())
    assert caught.value.retryable and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    wrong = EmailSettings("mail", "127.0.0.1", port, mode, "a@example.com",
                          ("b@example.com",), "heartwire", "wrong", tls_files[0], timeout_s=10)
    with pytest.raises(ChannelError) as caught:
        await wrong.open(UNUSED_CLIENT).send(_notification())
    assert not caught.value.retryable and "535" in str(caught.value)
    assert mailbox.messages == []


@pytest.mark.parametrize("answer", [
    b"[" * 4096,
    b'["not", "an", "object"]',
    b'{"description": ["x"], "parameters": {"retry_after": "soon"}}',
    b'{"description": "Too Many Requests", "parameters": {"retry_after": true}}',
    b'{"parameters": {"retry_after": 99999999999999999999}}',
    b'{"parameters": [5]}',
])
async def test_telegram_reads_only_what_the_bot_api_documents_from_an_error(answer: bytes) -> None:
    """A proxy in front of the Bot API answers what it likes: the error stays a
    ChannelError, and a retry_after not of the documented type is not honoured."""
    async with Recorder(httpx.Response(429, content=answer)).client() as client:
        with pytest.raises(ChannelError) as caught:
            await TelegramSettings("tg", TOKEN, "-100123").open(client).send(_notification())
    assert caught.value.retryable and caught.value.retry_after_s is None
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)
