"""The delivery loop: one task per destination, reading its own outbox cursor.

For each destination, in sequence order: take the next messages it wants, turn
each into requests (its sink), send them, and move the cursor only when the
destination accepted all of them. So a dead destination holds back only itself,
and a crash before the cursor moved means the message is sent again (at least
once; receivers deduplicate on the message id).

* Network errors, timeouts, 5xx, 3xx, 408, 429 and a 2xx that did not record the
  message are retried with exponential backoff and full jitter (a random delay
  between 0 and ``min(cap, base * 2**attempt)``), honouring ``Retry-After``.
* 401 and 403 are retried too: they refuse *who sent* the message (a key the
  destination does not know yet, an agent not registered yet, a clock outside its
  tolerance window), not the message itself, so every message would be refused
  alike and dropping them would empty the outbox until the operator fixes it.
* Any other 4xx is permanent for that message: logged with the response body,
  counted (reported in the next heartbeat as ``rejected``), and skipped.
* A full disk that refuses to move the cursor is a failure like the others (backed
  off, logged first and every tenth time); only the cursor move is retried, the
  message is not sent again (after a crash meanwhile it is, and is deduplicated).
* After a failure the loop re-reads the outbox, so a heartbeat superseded while
  its destination was down is never sent: the newest one goes instead.
* A destination with several URLs (a native one with several receivers) sends
  each request to the first URL that answers (agent/common/failover.py); only
  when none takes it is the attempt a failure. The cursor stays the destination's.

Delivery runs in its own tasks and talks to SQLite through worker threads: a slow
or dead destination changes nothing in the schedule of the checks.

Each loop ticks :class:`DeliveryStats` at least every ``PROGRESS_TICK_S`` seconds
even while idle or backing off; a watchdog can read :meth:`Delivery.last_progress`.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import trio

from agent.common.backoff import backoff_delay
from agent.common.failover import DEFAULT_REST_S, Failover
from agent.common.retry_after import parse_retry_after
from agent.destinations import DestinationConfig
from agent.errors import (
    ConfigError,
    OutboxFullError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SecretFileError,
)
from agent.keyfiles import check_private
from agent.logs import get_logger
from agent.sinks import Sink
from agent.spool import AsyncOutbox, OutboxMessage

log = get_logger("delivery")

BASE_BACKOFF_S = 1.0
# Never wait longer than this, whatever Retry-After says (a typo of a header must
# not silence an agent for a day).
MAX_RETRY_AFTER_S = 3600.0
PROGRESS_TICK_S = 5.0
DEFAULT_REQUEST_DEADLINE_S = 60.0
BATCH = 50
RETRYABLE_4XX = frozenset({408, 429})
# The destination refuses the sender's credentials, not the message (see above).
CREDENTIAL_4XX = frozenset({401, 403})
# How much of a refusing response body goes into the log.
LOGGED_BODY_CHARS = 500


def judge(response: httpx.Response, sink: Sink, *, now: float) -> None:
    """Raises unless ``response`` means the destination recorded the request.

    Raises:
        RetryableDeliveryError: 3xx, 5xx, 401, 403, 408, 429, or a 2xx that did not
            record it.
        PermanentDeliveryError: any other 4xx.
    """
    status = response.status_code
    if 200 <= status < 300:
        reason = sink.not_recorded(response)
        if reason is not None:
            raise RetryableDeliveryError(reason)
        return
    body = response.text[:LOGGED_BODY_CHARS]
    message = f"HTTP {status} from {response.request.url.host}: {body!r}"
    if status in CREDENTIAL_4XX:
        message += " (the destination refuses this agent: check its key, its registration"
        message += " and this machine's clock)"
    elif 400 <= status < 500 and status not in RETRYABLE_4XX:
        raise PermanentDeliveryError(message)
    retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
    raise RetryableDeliveryError(message, retry_after_s=retry_after)


def ssl_context(destination: DestinationConfig) -> ssl.SSLContext:
    """Verification always on: the destination's CA file or the system's CAs; mTLS.

    Raises:
        ConfigError: the CA file or client certificate cannot be used, or the client
            key file is open to group or others.
    """
    key = f"destinations.{destination.name}.ca_file"
    try:
        if destination.ca_file is not None:
            context = ssl.create_default_context(cafile=str(destination.ca_file))
        else:
            # The system's trust store, where operators add their internal CAs; the
            # certifi bundle only on a system that has none.
            context = ssl.create_default_context()
            if not context.cert_store_stats()["x509_ca"]:
                context.load_verify_locations(cafile=certifi.where())
        if destination.client_cert is not None:
            key = f"destinations.{destination.name}.client_cert"
            check_private(destination.client_key or destination.client_cert)
            context.load_cert_chain(destination.client_cert, destination.client_key)
    except SecretFileError as exc:
        raise ConfigError(destination.config_file, key, str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(destination.config_file, key, f"cannot load: {exc}") from None
    return context


def _proxy_argument(proxy: str | None) -> dict[str, Any]:
    """``proxy=`` for httpx 0.26 and later, ``proxies=`` before (Debian 12 has 0.23)."""
    if proxy is None:
        return {}
    if "proxy" in inspect.signature(httpx.AsyncClient.__init__).parameters:
        return {"proxy": proxy}
    return {"proxies": proxy}


def open_client(destination: DestinationConfig, auth: httpx.Auth | None) -> httpx.AsyncClient:
    """An HTTP client for one destination: TLS, client cert, proxy, timeouts.

    Without ``proxy`` the standard variables (``HTTPS_PROXY``, ``NO_PROXY``, ...)
    apply; redirects are not followed (the spec: update the URL instead).
    """
    return httpx.AsyncClient(
        verify=ssl_context(destination),
        **_proxy_argument(destination.proxy),
        trust_env=True,
        timeout=httpx.Timeout(destination.timeout_s, connect=destination.connect_timeout_s),
        follow_redirects=False,
        auth=auth,
    )


@dataclass
class DeliveryStats:
    """One destination's counters since start (never reset, so readers can diff).

    Attributes:
        delivered: messages the destination accepted.
        rejected: messages it refused for good.
        failures: attempts that failed and will be retried.
        last_error: the latest failure, as one line, or None.
        failing: whether the latest attempt failed (and will be retried).
        iterations: times the loop went round (a liveness signal).
        last_progress: trio time of the latest iteration or idle tick.
    """

    delivered: int = 0
    rejected: int = 0
    failures: int = 0
    last_error: str | None = None
    failing: bool = False
    iterations: int = 0
    last_progress: float = 0.0

    def tick(self) -> None:
        """Records that the loop is alive."""
        self.iterations += 1
        self.last_progress = trio.current_time()


class Deliverer:
    """Delivers one destination's messages, for ever.

    Args:
        name: the destination's name (its outbox cursor).
        sink: how its protocol is spoken.
        client: the HTTP client (its transport is the seam tests use).
        outbox: the shared outbox.
        max_backoff_s: the cap of the retry delay.
        rng: the jitter source (tests pass a seeded one).
        wall_clock: seconds since the epoch (for HTTP-date Retry-After).
        base_backoff_s: the first retry's delay ceiling.
        request_deadline_s: the most one request may take in all. httpx's timeouts
            bound each connect, read and write; a server that trickles its answer a
            byte at a time would pass them all and hold the loop for ever.
        failover_rest_s: how long a receiver that failed is passed over, for a
            destination with several URLs.
    """

    def __init__(
        self,
        name: str,
        sink: Sink,
        client: httpx.AsyncClient,
        outbox: AsyncOutbox,
        *,
        max_backoff_s: float,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        base_backoff_s: float = BASE_BACKOFF_S,
        request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
        failover_rest_s: float = DEFAULT_REST_S,
    ) -> None:
        self.name = name
        self.request_deadline_s = request_deadline_s
        self.sink = sink
        self.client = client
        self.outbox = outbox
        self.max_backoff_s = max_backoff_s
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.base_backoff_s = base_backoff_s
        self.stats = DeliveryStats()
        urls: tuple[str, ...] = getattr(sink, "urls", ())
        self.failover = (Failover(urls, trio.current_time, failover_rest_s) if len(urls) > 1
                         else None)
        self._attempt = 0
        # Delivered (seq, rejected) whose cursor move a full disk refused.
        self._unacknowledged: tuple[int, bool] | None = None

    async def _pause(self, seconds: float) -> None:
        """Sleeps, ticking the progress signal so a long backoff is not mistaken for a hang."""
        deadline = trio.current_time() + seconds
        while (left := deadline - trio.current_time()) > 0:
            await trio.sleep(min(left, PROGRESS_TICK_S))
            self.stats.tick()

    async def _wait_for_messages(self, changed: trio.Event) -> None:
        with trio.move_on_after(PROGRESS_TICK_S):
            await changed.wait()

    async def send(self, message: OutboxMessage) -> None:
        """Sends every request of one message.

        Raises:
            RetryableDeliveryError: try again later.
            PermanentDeliveryError: the destination refused it for good.
        """
        for request in self.sink.requests(message):
            if self.failover is None:
                await self._send_request(request)
            else:
                await self._send_failing_over(request, self.failover)

    async def _send_failing_over(self, request: httpx.Request, failover: Failover) -> None:
        """Sends ``request`` to the first of the destination's URLs that takes it."""
        failure: RetryableDeliveryError | None = None
        for url in failover.order():
            try:
                # The same body and headers (the signature covers neither the
                # host nor the path), the Host header of the receiver tried.
                headers = [(name, value) for name, value in request.headers.raw
                           if name.lower() != b"host"]
                await self._send_request(httpx.Request(request.method, url, headers=headers,
                                                       content=request.content))
            except RetryableDeliveryError as exc:
                failover.failed(url)
                log.debug("%s: %s did not take it: %s", self.name, url, exc)
                failure = exc
                continue
            failover.answered(url)
            return
        assert failure is not None
        raise failure

    async def _send_request(self, request: httpx.Request) -> None:
        """Sends one request and judges its answer."""
        try:
            with trio.fail_after(self.request_deadline_s):
                response = await self.client.send(request)
        except httpx.TransportError as exc:
            # Translate at the boundary: the loop only knows our hierarchy.
            raise RetryableDeliveryError(
                f"{type(exc).__name__} to {request.url.host}: {exc or 'no detail'}") from exc
        except trio.TooSlowError:
            raise RetryableDeliveryError(
                f"no complete answer from {request.url.host} within "
                f"{self.request_deadline_s:g}s") from None
        judge(response, self.sink, now=self.wall_clock())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Delivers until cancelled."""
        self.stats.tick()
        task_status.started()
        while True:
            self.stats.tick()
            if self._unacknowledged is not None:
                seq, rejected = self._unacknowledged
                if not await self._acknowledge(seq, rejected=rejected):
                    continue
            changed = self.outbox.changed  # before reading, so no wake-up is missed
            try:
                messages = await self.outbox.pending(self.name, types=self.sink.types,
                                                     limit=BATCH)
            except OutboxFullError as exc:
                await self._back_off(exc)
                continue
            if not messages:
                await self._wait_for_messages(changed)
                continue
            for message in messages:
                if not await self._deliver_once(message):
                    break  # back off, then re-read: a heartbeat may have been superseded

    async def _deliver_once(self, message: OutboxMessage) -> bool:
        """One attempt; returns whether the loop may go on to the next message."""
        try:
            await self.send(message)
        except PermanentDeliveryError as exc:
            log.error("%s: message %s (seq %d, %s) refused for good, skipped: %s",
                      self.name, message.id, message.seq, message.type, exc)
            self.stats.last_error = str(exc)
            return await self._acknowledge(message.seq, rejected=True)
        except RetryableDeliveryError as exc:
            await self._back_off(exc, exc.retry_after_s)
            return False
        return await self._acknowledge(message.seq)

    async def _acknowledge(self, seq: int, *, rejected: bool = False) -> bool:
        """Moves the cursor past a message the destination took (or refused for good).

        When a full disk will not take the move, the move alone is retried after a
        backoff (:meth:`run` does it first): the message is not sent again meanwhile.
        """
        try:
            await self.outbox.acknowledge(self.name, seq, rejected=rejected)
        except OutboxFullError as exc:
            self._unacknowledged = (seq, rejected)
            await self._back_off(exc)
            return False
        self._unacknowledged = None
        if rejected:
            self.stats.rejected += 1
        else:
            if self._attempt:
                log.info("%s: delivering again after %d failed attempts", self.name,
                         self._attempt)
            self.stats.failing = False
            self.stats.delivered += 1
        self._attempt = 0
        return True

    async def _back_off(self, exc: Exception, retry_after_s: float | None = None) -> None:
        """Counts a failed attempt and waits the jittered backoff (or Retry-After)."""
        self._attempt += 1
        self.stats.failures += 1
        self.stats.failing = True
        self.stats.last_error = str(exc)
        delay = backoff_delay(self._attempt, cap_s=self.max_backoff_s, rng=self.rng,
                              base_s=self.base_backoff_s)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        # Log the first failure and then every tenth, so a long outage is
        # visible without flooding the journal.
        loud = self._attempt == 1 or self._attempt % 10 == 0
        level = logging.WARNING if loud else logging.DEBUG
        log.log(level, "%s: not delivered (attempt %d, retrying in %.1fs): %s",
                self.name, self._attempt, delay, exc)
        await self._pause(delay)


# The most a stopping agent waits for its HTTP clients to close.
CLIENT_CLOSE_TIMEOUT_S = 0.5


class Delivery:
    """Every destination's deliverer, run side by side.

    Args:
        deliverers: one per destination.
    """

    def __init__(self, deliverers: Sequence[Deliverer]) -> None:
        self.deliverers = list(deliverers)

    def last_progress(self) -> float:
        """The trio time of the least recent tick of any loop (``inf`` when none)."""
        return min((d.stats.last_progress for d in self.deliverers), default=math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs every deliverer until cancelled; closes their clients on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                for deliverer in self.deliverers:
                    await nursery.start(deliverer.run)
                task_status.started()
        finally:
            # Shielded from the shutdown, but bounded: a peer that hangs must not
            # hold up the exit (closing a connection needs no answer).
            with trio.move_on_after(CLIENT_CLOSE_TIMEOUT_S, shield=True):
                for deliverer in self.deliverers:
                    await deliverer.client.aclose()
