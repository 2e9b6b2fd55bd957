"""``heartwire send-test``: one signed heartbeat to each destination, step by step.

For each destination it reports, on one line each, name resolution, the TCP
connect, the TLS handshake (certificate verified with the destination's own CA
settings), the HTTP status and the response body: the first thing an operator
runs after install, and the place a firewall, proxy or CA problem shows itself.

The heartbeat is a real, signed one but carries ``"seq": 0``: it is not taken from
the outbox and touches no agent state (docs/protocol.md: receivers store nothing
for sequence 0).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx
import trio

from agent.common.connect_errors import describe
from agent.common.redact import redact_text, redact_url
from agent.common.signing import new_message_id
from agent.common.webhook_auth import WebhookAuth
from agent.config.destinations import DestinationConfig, load_secret, load_signing_keys, secrets_of
from agent.config.loader import Config
from agent.errors import DeliveryError, HeartwireError
from agent.outbound.delivery import (
    judge,
    open_client,
    read_answer,
    ssl_context,
    with_client_timeouts,
)
from agent.outbound.messages import HEARTBEAT, encode, envelope, heartbeat_data
from agent.outbound.sinks import make_sink
from agent.outbound.spool import OutboxDepth, OutboxMessage

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")


@dataclass
class Report:
    """The steps of one destination's test, as printable lines."""

    destination: DestinationConfig
    # 0 for a destination's (first) url, N for its Nth failover receiver.
    failover: int = 0
    lines: list[str] = field(default_factory=list)
    ok: bool = True
    # What must never be printed: the ping key, push tokens, ... (see secrets_of).
    secrets: tuple[str, ...] = ()

    def step(self, name: str, ok: bool | str | None, text: str) -> None:
        """Adds a line (secrets redacted); ``ok`` None means skipped, a string is the mark."""
        text = redact_text(text, self.secrets)
        if isinstance(ok, str):
            mark = ok
        else:
            mark = "skip" if ok is None else ("ok" if ok else "FAIL")
        self.lines.append(f"  {name:<8} {mark:<5} {text}")
        if ok is False:
            self.ok = False


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.1f} ms"


def heartbeat_for_test(
    config: Config, wall_clock: Callable[[], float] = time.time
) -> OutboxMessage:
    """The heartbeat send-test sends: sequence 0, no checks."""
    msg_id = new_message_id()
    now = wall_clock()
    data = heartbeat_data(started_at=now, interval_s=config.central.heartbeat_interval_s,
                          checks=[], runs=0, skipped=0, counts={},
                          depth=OutboxDepth(0, 0), test=True)
    body = encode(envelope(HEARTBEAT, msg_id, 0, config.agent.id, now, data))
    return OutboxMessage(0, msg_id, HEARTBEAT, body)


async def _network_steps(report: Report, url: httpx.URL) -> bool:
    destination = report.destination
    host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
    proxy = destination.proxy or next((os.environ[v] for v in _PROXY_VARIABLES
                                       if os.environ.get(v)), None)
    if proxy:
        report.step("proxy", None,
                    f"via {redact_url(proxy)}: DNS, connect and TLS are the proxy's")
        return True
    start = time.perf_counter()
    try:
        with trio.fail_after(destination.connect_timeout_s):
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except (OSError, trio.TooSlowError) as exc:
        report.step("dns", False, f"{host}: {exc or 'timed out'}")
        return False
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    report.step("dns", True, f"{host} -> {', '.join(addresses)} ({_ms(start)})")
    start = time.perf_counter()
    try:
        with trio.fail_after(destination.connect_timeout_s):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        report.step("connect", False, f"{host}:{port}: {describe(exc) or 'timed out'}")
        return False
    report.step("connect", True, f"{host}:{port} ({_ms(start)})")
    if url.scheme != "https":
        await stream.aclose()
        report.step("tls", None, "plain http: nothing is encrypted or authenticated")
        return True
    start = time.perf_counter()
    tls = trio.SSLStream(stream, ssl_context(destination), server_hostname=host)
    try:
        with trio.fail_after(destination.connect_timeout_s):
            await tls.do_handshake()
    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
        cause = exc.__cause__ or exc
        report.step("tls", False, f"{cause or 'timed out'}")
        await stream.aclose()
        return False
    report.step("tls", True, f"{tls.version()}, certificate verified for {host} ({_ms(start)})")
    await tls.aclose()
    return True


async def check_destination(config: Config, destination: DestinationConfig,
                            failover: int = 0) -> Report:
    """Runs every step for one destination; never raises for network trouble.

    Args:
        config: the agent's config (the heartbeat's agent id).
        destination: the destination, its ``url`` the receiver to test.
        failover: which of its receivers that is (0: the first), for the report.
    """
    report = Report(destination, failover)
    try:
        keys = load_signing_keys(destination)
        secret = load_secret(destination)
        report.secrets = secrets_of(destination, secret)
        sink = make_sink(destination, secret)
        client = open_client(destination, WebhookAuth(keys) if keys else None)
    except HeartwireError as exc:
        report.step("config", False, str(exc))
        return report
    async with client:
        requests = sink.requests(heartbeat_for_test(config))
        if not requests:
            report.step("http", None, "a heartbeat maps to nothing here (no agent check set)")
            return report
        if not await _network_steps(report, requests[0].url):
            return report
        for request in requests:
            start = time.perf_counter()
            try:
                with trio.fail_after(destination.connect_timeout_s + destination.timeout_s):
                    answer = await read_answer(client, with_client_timeouts(client, request))
            except (DeliveryError, trio.TooSlowError) as exc:
                report.step("http", False, f"{exc or 'timed out'}")
                continue
            try:
                judge(answer, sink, now=time.time())
                verdict = True
            except DeliveryError:
                verdict = False
            path = httpx.URL(redact_url(str(request.url), destination.kind,
                                        secrets=report.secrets)).path
            report.step("http", verdict, f"{request.method} {path} -> "
                        f"{answer.status} {answer.reason} ({_ms(start)})")
            body = answer.body.strip()
            report.step("body", "" if verdict else False,
                        repr(body[:300]) if body else "(empty)")
    return report


async def send_test(config: Config) -> list[Report]:
    """Tests every destination, one after the other (their output stays readable),
    and each receiver of a failover list: a standby is found broken now, not at the
    outage it stands by for."""
    reports = []
    for destination in config.destinations:
        reports.append(await check_destination(config, destination))
        for index, url in enumerate(destination.failover_urls, start=1):
            standby = replace(destination, url=url, failover_urls=())
            reports.append(await check_destination(config, standby, index))
    return reports


def render(reports: list[Report]) -> str:
    """The reports as the command prints them."""
    lines = []
    for report in reports:
        d = report.destination
        url = redact_url(d.url, d.kind, secrets=report.secrets)
        kind = f"{d.kind}, failover {report.failover}" if report.failover else d.kind
        lines.append(f"{d.name} ({kind}) {url}: {'OK' if report.ok else 'FAILED'}")
        lines += report.lines
    return "\n".join(lines)
