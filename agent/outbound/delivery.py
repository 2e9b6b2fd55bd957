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
* A message of several requests (the pings of Healthchecks, Uptime Kuma, ...)
  succeeds or fails ping by ping: a ping refused for good (a wrong UUID, a paused
  monitor) is logged once per monitor and holds back none of the others; a ping
  to retry is retried alone, the pings already accepted are not sent again (the
  attempt stops early only when the destination gave no answer at all). The
  message counts as rejected only when every ping of it was refused.
* Of any answer only the status, the headers and the first ``http_answers.MAX_ANSWER_BYTES``
  of the body are read; then the connection is closed. A body that is corrupt,
  compressed against our ``accept-encoding: identity``, cut off or endless is
  read as far as it goes and judged by its status (and what a sink needs of it).
* Whatever else goes wrong in a loop (a bug, an exception nobody foresaw) stays in
  that loop: logged once with its traceback, backed off, and the loop goes on; the
  checks and the other destinations never notice. A message that fails that way
  ``UNEXPECTED_ATTEMPTS`` times is set aside (counted in the next heartbeat's
  ``dropped.set_aside``) rather than tried for ever.

Delivery runs in its own tasks and talks to SQLite through worker threads: a slow
or dead destination changes nothing in the schedule of the checks.

Each loop ticks :class:`DeliveryStats` at least every ``PROGRESS_TICK_S`` seconds
even while idle or backing off; the watchdog reads ``DeliveryStats.iterations``.
"""

from __future__ import annotations

import inspect
import logging
import random
import ssl
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import trio

from agent.common.backoff import backoff_delay
from agent.common.connect_errors import describe
from agent.common.failover import DEFAULT_REST_S, Failover
from agent.common.http_answers import send_bounded
from agent.common.keyfiles import check_private
from agent.common.logs import get_logger
from agent.common.redact import redact_text
from agent.common.retry_after import parse_retry_after
from agent.config.destinations import DestinationConfig
from agent.errors import (
    ConfigError,
    OutboxFullError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SecretFileError,
)
from agent.outbound.sinks import Answer, Sink
from agent.outbound.spool import AsyncOutbox, OutboxMessage

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
# A message that makes its loop fail unexpectedly this often is set aside.
UNEXPECTED_ATTEMPTS = 5


class NoAnswer(RetryableDeliveryError):
    """The destination gave no answer at all (refused, reset, timed out, not HTTP)."""


async def read_answer(client: httpx.AsyncClient, request: httpx.Request) -> Answer:
    """Sends ``request``; reads the status, headers and at most a few KiB of the body.

    The connection is closed after that (a body left unread is never downloaded).
    A failure while reading the body keeps what arrived: the status has been said.

    Raises:
        NoAnswer: no status line came back (connect, write or protocol failure).
    """
    try:
        answer = await send_bounded(client, request)
    except httpx.HTTPError as exc:
        # Translate at the boundary: the loop only knows our hierarchy.
        raise NoAnswer(f"{type(exc).__name__} to {request.url.host}: "
                       f"{describe(exc) or 'no detail'}") from exc
    return Answer(answer.status, answer.reason, answer.headers, answer.text,
                  request.url.host)


def judge(answer: Answer, sink: Sink, *, now: float) -> None:
    """Raises unless ``answer`` means the destination recorded the request.

    Raises:
        RetryableDeliveryError: 1xx, 3xx, 5xx, 401, 403, 408, 429, or a 2xx that did
            not record it.
        PermanentDeliveryError: any other 4xx, or what the sink knows to be a
            refusal for good whatever its status.
    """
    status = answer.status
    if (refusal := sink.refused(answer)) is not None:
        raise PermanentDeliveryError(refusal)
    if 200 <= status < 300:
        reason = sink.not_recorded(answer)
        if reason is not None:
            raise RetryableDeliveryError(reason)
        return
    message = f"HTTP {status} from {answer.host}: {answer.body[:LOGGED_BODY_CHARS]!r}"
    if status in CREDENTIAL_4XX:
        message += " (the destination refuses this agent: check its key, its registration"
        message += " and this machine's clock)"
    elif 400 <= status < 500 and status not in RETRYABLE_4XX:
        raise PermanentDeliveryError(message)
    retry_after = parse_retry_after(answer.headers.get("retry-after"), now=now)
    raise RetryableDeliveryError(message, retry_after_s=retry_after)


class SystemTrustContext(ssl.SSLContext):
    """A verifying client context that reads the system's CAs before its first handshake.

    The same trust as ``ssl.create_default_context()`` (certificate and host name
    verified), with the certifi bundle only on a system that has no CAs. Parsing
    the trust store costs 1 to 1.7 MiB of RSS (measured: in the daemon, and alone),
    and a destination over plain http never makes a handshake: so it is read when
    the first TLS connection is set up (every one, in httpx and trio, goes through
    ``wrap_bio`` or ``wrap_socket``), never after one.
    """

    _trust_loaded = False

    def _load_trust(self) -> None:
        if self._trust_loaded:
            return
        self._trust_loaded = True
        # The system's trust store, where operators add their internal CAs.
        self.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if not self.cert_store_stats()["x509_ca"]:
            self.load_verify_locations(cafile=certifi.where())

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        """``SSLContext.wrap_bio``, once the trust store is read."""
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        """``SSLContext.wrap_socket``, once the trust store is read."""
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)


def ssl_context(destination: DestinationConfig) -> ssl.SSLContext:
    """Verification always on: the destination's CA file or the system's CAs; mTLS.

    Raises:
        ConfigError: the CA file or client certificate cannot be used, or the client
            key file is open to group or others.
    """
    key = f"destinations.{destination.name}.ca_file"
    try:
        context: ssl.SSLContext
        if destination.ca_file is not None:
            # Read now, so that a file that cannot be used is a config error.
            context = ssl.create_default_context(cafile=str(destination.ca_file))
        else:
            # PROTOCOL_TLS_CLIENT: certificates required, host names checked.
            context = SystemTrustContext(ssl.PROTOCOL_TLS_CLIENT)
            if sys.version_info >= (3, 13):
                # As create_default_context() sets them from Python 3.13 on.
                context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
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


def with_client_timeouts(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Request:
    """The request, carrying the client's timeouts unless it has its own.

    The sinks build their requests themselves, and httpx before 0.24 (Debian 12
    ships 0.23) applies a client's timeouts only to requests the client built.
    """
    request.extensions.setdefault("timeout", client.timeout.as_dict())
    return request


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
        set_aside: messages given up after failing unexpectedly again and again.
        failures: attempts that failed and will be retried.
        last_error: the latest failure, as one line, or None.
        failing: whether the latest attempt failed (and will be retried).
        iterations: times the loop went round (a liveness signal).
    """

    delivered: int = 0
    rejected: int = 0
    set_aside: int = 0
    failures: int = 0
    last_error: str | None = None
    failing: bool = False
    iterations: int = 0

    def tick(self) -> None:
        """Records that the loop is alive."""
        self.iterations += 1


# How a destination was done with a message (the cursor moves past it).
DELIVERED, REJECTED, SET_ASIDE = "delivered", "rejected", "set aside"


@dataclass
class _MessageProgress:
    """How far one message got: which of its requests are done, how often it crashed."""

    seq: int
    accepted: set[int]
    refusals: dict[int, str]
    unexpected_failures: int = 0


def _merged(earlier: RetryableDeliveryError | None,
            later: RetryableDeliveryError) -> RetryableDeliveryError:
    """One error for a message's retryable failures: the first, the longest Retry-After."""
    if earlier is None:
        return later
    hints = [e.retry_after_s for e in (earlier, later) if e.retry_after_s is not None]
    earlier.retry_after_s = max(hints, default=None)
    return earlier


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
        secrets: strings never to be logged (ping key, push tokens, ...), which an
            answer may echo.
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
        secrets: Sequence[str] = (),
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
        self.secrets = tuple(secrets)
        self.stats = DeliveryStats()
        urls: tuple[str, ...] = getattr(sink, "urls", ())
        self.failover = (Failover(urls, trio.current_time, failover_rest_s) if len(urls) > 1
                         else None)
        self._attempt = 0
        # Delivered (seq, outcome) whose cursor move a full disk refused.
        self._unacknowledged: tuple[int, str] | None = None
        # The message being delivered and how far it got (in memory only: after a
        # restart its accepted pings are sent again, which a push monitor takes as
        # one more beat of the same status: harmless).
        self._progress: _MessageProgress | None = None
        # Ping targets refused for good, logged once until they accept again.
        self._refused_targets: set[str] = set()
        # A traceback is logged once per episode of unexpected failures.
        self._traceback_logged = False

    def _printable(self, text: str) -> str:
        return redact_text(text, self.secrets)

    async def _pause(self, seconds: float) -> None:
        """Sleeps, ticking the progress signal so a long backoff is not mistaken for a hang."""
        deadline = trio.current_time() + seconds
        while (left := deadline - trio.current_time()) > 0:
            await trio.sleep(min(left, PROGRESS_TICK_S))
            self.stats.tick()

    async def _wait_for_messages(self, changed: trio.Event) -> None:
        with trio.move_on_after(PROGRESS_TICK_S):
            await changed.wait()

    def _progress_of(self, message: OutboxMessage) -> _MessageProgress:
        if self._progress is None or self._progress.seq != message.seq:
            self._progress = _MessageProgress(message.seq, set(), {})
        return self._progress

    async def _send_one(self, request: httpx.Request) -> None:
        """Sends one request, to the first of several receivers that takes it."""
        if self.failover is None:
            await self._send_request(request)
            return
        failure: RetryableDeliveryError | None = None
        for url in self.failover.order():
            # The same body and headers (the signature covers neither the host nor
            # the path), with the Host header of the receiver tried.
            headers = [(name, value) for name, value in request.headers.raw
                       if name.lower() != b"host"]
            try:
                await self._send_request(httpx.Request(request.method, url, headers=headers,
                                                       content=request.content))
            except RetryableDeliveryError as exc:
                self.failover.failed(url)
                log.debug("%s: %s did not take it: %s", self.name,
                          redact_text(url, self.secrets), exc)
                failure = exc
                continue
            self.failover.answered(url)
            return
        assert failure is not None
        raise failure

    async def _send_request(self, request: httpx.Request) -> None:
        """Sends one request and judges its answer (raises as :func:`judge` does)."""
        try:
            with trio.fail_after(self.request_deadline_s):
                answer = await read_answer(self.client, with_client_timeouts(self.client, request))
        except trio.TooSlowError:
            raise NoAnswer(f"no complete answer from {request.url.host} within "
                           f"{self.request_deadline_s:g}s") from None
        judge(answer, self.sink, now=self.wall_clock())

    async def send(self, message: OutboxMessage) -> None:
        """Sends the requests of one message that are not done yet, each on its own.

        A request refused for good is done (and logged); one to retry does not hold
        back the next, unless the destination gave no answer at all (the next would
        most likely wait the same). Requests done are remembered and not sent again.

        Raises:
            RetryableDeliveryError: some request is to be tried again.
            PermanentDeliveryError: the destination refused every request of it.
        """
        progress = self._progress_of(message)
        requests = self.sink.requests(message)
        retry: RetryableDeliveryError | None = None
        for index, request in enumerate(requests):
            if index in progress.accepted or index in progress.refusals:
                continue
            try:
                await self._send_one(request)
            except NoAnswer as exc:
                retry = _merged(retry, exc)
                break
            except RetryableDeliveryError as exc:
                retry = _merged(retry, exc)
            except PermanentDeliveryError as exc:
                progress.refusals[index] = str(exc)
                if len(requests) > 1:
                    self._note_refused_ping(request, message, exc)
            else:
                progress.accepted.add(index)
                self._note_accepted_ping(request)
            finally:
                self.stats.tick()  # one request at most between ticks, however many
        if retry is not None:
            raise retry
        if requests and len(progress.refusals) == len(requests):
            raise PermanentDeliveryError("; ".join(dict.fromkeys(progress.refusals.values())))

    def _ping_target(self, request: httpx.Request) -> str:
        return f"{request.method} {request.url.copy_with(query=None)}"

    def _note_refused_ping(self, request: httpx.Request, message: OutboxMessage,
                           exc: PermanentDeliveryError) -> None:
        """Logs a ping refused for good: loud the first time for its monitor, then quiet."""
        target = self._ping_target(request)
        loud = target not in self._refused_targets
        self._refused_targets.add(target)
        log.log(logging.ERROR if loud else logging.DEBUG,
                "%s: a ping of message %s (seq %d, %s) refused for good, the others go on: "
                "%s (check the monitor this ping names: a wrong token or UUID, or paused)",
                self.name, message.id, message.seq, message.type, self._printable(str(exc)))

    def _note_accepted_ping(self, request: httpx.Request) -> None:
        target = self._ping_target(request)
        if target in self._refused_targets:
            self._refused_targets.discard(target)
            log.info("%s: a monitor that refused pings accepts them again", self.name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Delivers until cancelled; no exception of one round ends the loop."""
        self.stats.tick()
        task_status.started()
        while True:
            self.stats.tick()
            try:
                await self._round()
            except Exception as exc:
                await self._contain(exc)

    async def _round(self) -> None:
        """One round: a pending cursor move, then the next batch of messages."""
        if self._unacknowledged is not None:
            seq, outcome = self._unacknowledged
            if not await self._acknowledge(seq, outcome):
                return
        changed = self.outbox.changed  # before reading, so no wake-up is missed
        try:
            messages = await self.outbox.pending(self.name, types=self.sink.types,
                                                 limit=BATCH)
        except OutboxFullError as exc:
            await self._back_off(exc)
            return
        if not messages:
            await self._wait_for_messages(changed)
            return
        for message in messages:
            if not await self._deliver_once(message):
                return  # back off, then re-read: a heartbeat may have been superseded

    async def _deliver_once(self, message: OutboxMessage) -> bool:
        """One attempt; returns whether the loop may go on to the next message."""
        progress = self._progress_of(message)
        if progress.unexpected_failures >= UNEXPECTED_ATTEMPTS:
            log.error("%s: message %s (seq %d, %s) set aside after %d unexpected failures; "
                      "counted in the next heartbeat as dropped.set_aside", self.name,
                      message.id, message.seq, message.type, progress.unexpected_failures)
            return await self._acknowledge(message.seq, SET_ASIDE)
        try:
            await self.send(message)
        except PermanentDeliveryError as exc:
            log.error("%s: message %s (seq %d, %s) refused for good, skipped: %s",
                      self.name, message.id, message.seq, message.type,
                      self._printable(str(exc)))
            self.stats.last_error = self._printable(str(exc))
            return await self._acknowledge(message.seq, REJECTED)
        except RetryableDeliveryError as exc:
            await self._back_off(exc, exc.retry_after_s)
            return False
        except Exception:
            progress.unexpected_failures += 1
            raise
        return await self._acknowledge(message.seq, DELIVERED)

    async def _contain(self, exc: Exception) -> None:
        """An exception nobody foresaw: logged (the traceback once), then backed off."""
        progress = self._progress
        blamed = (f" (message seq {progress.seq}, failure {progress.unexpected_failures} of "
                  f"at most {UNEXPECTED_ATTEMPTS})" if progress is not None and
                  progress.unexpected_failures else "")
        if self._traceback_logged:
            log.error("%s: unexpected %s%s: %s", self.name, type(exc).__name__, blamed,
                      self._printable(str(exc)))
        else:
            self._traceback_logged = True
            text = "".join(traceback.format_exception(exc)).rstrip()
            log.error("%s: unexpected failure%s, the loop goes on after a backoff:\n%s",
                      self.name, blamed, self._printable(text))
        await self._back_off(exc, quiet=True)

    async def _acknowledge(self, seq: int, outcome: str) -> bool:
        """Moves the cursor past a message the destination is done with.

        When a full disk will not take the move, the move alone is retried after a
        backoff (:meth:`run` does it first): the message is not sent again meanwhile.
        """
        try:
            await self.outbox.acknowledge(self.name, seq, rejected=outcome == REJECTED,
                                          set_aside=outcome == SET_ASIDE)
        except OutboxFullError as exc:
            self._unacknowledged = (seq, outcome)
            await self._back_off(exc)
            return False
        self._unacknowledged = None
        self._progress = None
        if outcome == REJECTED:
            self.stats.rejected += 1
        elif outcome == SET_ASIDE:
            self.stats.set_aside += 1
        else:
            if self._attempt:
                log.info("%s: delivering again after %d failed attempts", self.name,
                         self._attempt)
            self.stats.failing = False
            self.stats.delivered += 1
            self._traceback_logged = False
        self._attempt = 0
        return True

    async def _back_off(self, exc: Exception, retry_after_s: float | None = None, *,
                        quiet: bool = False) -> None:
        """Counts a failed attempt and waits the jittered backoff (or Retry-After)."""
        self._attempt += 1
        self.stats.failures += 1
        self.stats.failing = True
        self.stats.last_error = self._printable(str(exc))
        delay = backoff_delay(self._attempt, cap_s=self.max_backoff_s, rng=self.rng,
                              base_s=self.base_backoff_s)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        # Log the first failure and then every tenth, so a long outage is
        # visible without flooding the journal.
        loud = (self._attempt == 1 or self._attempt % 10 == 0) and not quiet
        level = logging.WARNING if loud else logging.DEBUG
        log.log(level, "%s: not delivered (attempt %d, retrying in %.1fs): %s",
                self.name, self._attempt, delay, self.stats.last_error)
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
            with trio.move_on_after(CLIENT_CLOSE_TIMEOUT_S) as closing:
                closing.shield = True  # trio 0.22 takes no shield= here
                for deliverer in self.deliverers:
                    await deliverer.client.aclose()
