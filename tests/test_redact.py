"""Destination URLs made safe to print: each kind's secrets, hostile input."""

from __future__ import annotations

import pytest

from agent.common.redact import redact_text, redact_url, secrets_in_url


@pytest.mark.parametrize(("kind", "url", "printed"), [
    ("healthchecks", "https://hc-ping.com/fqOOd6-F4MMNuCEnzTU01w/db-backup/fail?create=1",
     "https://hc-ping.com/<redacted>/db-backup/fail?create=1"),
    ("healthchecks", "https://hc.example/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278",
     "https://hc.example/ping/<redacted>"),
    ("uptime-kuma", "https://kuma.example/api/push/N3pT0ken?status=up&msg=ok&ping=",
     "https://kuma.example/api/push/<redacted>?status=up&msg=ok&ping="),
    ("gatus", "https://gatus.example/api/v1/endpoints/core_db/external?success=true",
     "https://gatus.example/api/v1/endpoints/<redacted>/external?success=true"),
    ("betterstack", "https://uptime.betterstack.com/api/v1/heartbeat/Xyz123/fail",
     "https://uptime.betterstack.com/api/v1/heartbeat/<redacted>/fail"),
    ("betterstack", "https://beats.example/opaque/Xyz123", "https://beats.example/<redacted>/<redacted>"),
    ("native", "https://ops:pa55@central.example/v1/ingest?token=abc&apiKey=k3y5&page=2",
     "https://ops:<redacted>@central.example/v1/ingest?token=<redacted>&apiKey=<redacted>&page=2"),
    ("native", "https://user@central.example/v1/ingest", "https://user@central.example/v1/ingest"),
    (None, "http://proxyuser:proxypw@proxy.example:3128", "http://proxyuser:<redacted>@proxy.example:3128"),
])
def test_each_kind_hides_its_secret_and_keeps_the_rest(
    kind: str | None, url: str, printed: str
) -> None:
    assert redact_url(url, kind) == printed
    for secret in secrets_in_url(url, kind):
        assert secret not in printed


@pytest.mark.parametrize("url", ["http://[::1/x", "http://h:99999/", "", "not a url",
                                 "http://%zz@/", "\x00\n\x1b[31m"])
def test_malformed_input_never_raises(url: str) -> None:
    assert isinstance(redact_url(url, "native"), str)
    assert isinstance(secrets_in_url(url, "uptime-kuma"), list)


def test_known_secrets_are_replaced_in_any_text_but_not_tiny_ones() -> None:
    text = "Cannot GET /api/push/N3pT0ken (db ok)"
    assert redact_text(text, ["N3pT0ken", "db"]) == "Cannot GET /api/push/<redacted> (db ok)"
