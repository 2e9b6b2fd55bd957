"""Email over SMTP: plain, STARTTLS or implicit TLS, with optional AUTH.

``smtplib`` does the protocol in a worker thread (it blocks); the certificate is
verified against the system CAs or ``ca_file``. A 5xx answer (bad recipient,
refused sender, failed authentication) is permanent; a refused connection, a
timeout or a 4xx is retried.
"""

from __future__ import annotations

import functools
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import httpx

from agent.central.channels.base import ChannelError, alert_text, dedup_key, optional_channel_secret
from agent.central.storage import Notification
from agent.common.tables import Table
from agent.common.threads import run_abandoning_on_cancel

KIND = "email"
SECURITY_MODES = ("starttls", "tls", "none")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """``[channels.<name>] kind = "email"``."""

    name: str
    host: str
    port: int
    security: str
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout_s: float = 30.0
    kind: str = KIND

    def open(self, client: httpx.AsyncClient) -> EmailChannel:
        """The channel (``client`` is unused: SMTP is not HTTP)."""
        return EmailChannel(self)


def read_settings(table: Table, name: str) -> EmailSettings:
    """Reads the table (host, port, security, from, to, username, password_file, ca_file)."""
    host = table.nonempty_string("host")
    security = table.choice("security", SECURITY_MODES, "starttls")
    port = table.integer("port", _DEFAULT_PORTS[security], minimum=1, maximum=65535)
    sender = table.nonempty_string("from")
    recipients = table.string_list("to")
    if not recipients:
        raise table.error("to", "must name at least one address")
    username = table.optional_string("username")
    password = optional_channel_secret(table, "password")
    if (username is None) != (password is None):
        raise table.error("password_file" if username else "username",
                          "username and a password (password_file, _env or _credential) "
                          "go together")
    if username and security == "none":
        # AUTH over plain text would send the password in the clear.
        raise table.error("security", 'AUTH needs "starttls" or "tls"')
    ca_file = table.optional_string("ca_file")
    return EmailSettings(
        name, host, port, security, sender, recipients, username, password,
        Path(ca_file) if ca_file else None, table.duration("timeout", 30.0),
    )


def build_message(settings: EmailSettings, notification: Notification) -> EmailMessage:
    """The email for one incident event; replies thread under the incident's trigger."""
    incident = notification.incident
    text = alert_text(incident, notification.event)
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Subject"] = f"[heartwire] {text}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="heartwire.invalid")
    message["X-Heartwire-Incident"] = dedup_key(incident)
    message.set_content(f"{text}\n\nagent: {incident.agent}\ncheck: {incident.check or '-'}\n"
                        f"kind: {incident.kind}\n")
    return message


class EmailChannel:
    """Sends one email per incident event."""

    def __init__(self, settings: EmailSettings) -> None:
        self.name = settings.name
        self.settings = settings

    def _context(self) -> ssl.SSLContext:
        cafile = str(self.settings.ca_file) if self.settings.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    def _send_blocking(self, message: EmailMessage) -> None:
        settings = self.settings
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_s,
                                    context=self._context())
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=self._context())
            if settings.username and settings.password:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)

    async def send(self, notification: Notification) -> None:
        """Delivers one notification."""
        message = build_message(self.settings, notification)
        try:
            await run_abandoning_on_cancel(functools.partial(self._send_blocking, message))
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"email {self.name}: {exc.smtp_code} {exc.smtp_error!r}",
                retryable=exc.smtp_code < 500,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(f"email {self.name}: recipients refused: {exc.recipients}",
                               retryable=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"email {self.name}: {type(exc).__name__}: {exc}",
                               retryable=True) from None
