"""Delivering queued notifications to their channels, retrying until they go through.

The queue lives in the database (storage ``notifications``), written in the same
transaction as the incident, so an alert survives a channel outage and a receiver
restart. Each channel delivers its own queue in order (a resolve never overtakes
its trigger), one delivery at a time; channels do not wait for each other.

Several receivers may drain one queue (PostgreSQL): a receiver claims a delivery
for ``lease_s`` before sending it, so each alert is sent by one of them; one
killed mid-send leaves its claim, which another takes over once the lease is past.
(A receiver killed after the channel accepted the alert but before it recorded
that sends it again: at least once, never lost.) The send timeout stays below
half the lease.

A failed delivery is retried with the agent's backoff (:mod:`agent.common.backoff`,
full jitter): after up to ``retry_initial``, a ceiling doubling up to ``retry_max``
(or after the ``Retry-After`` the service asked for, if longer), for as long as it
takes; receivers that failed together do not retry together. A delivery the
service refuses for good (a 4xx other than 408/429, an SMTP 5xx) is marked
``failed`` and logged as an error: retrying cannot fix a revoked token, and it must
not block the alerts queued behind it.

Anything else a channel raises (an answer nobody foresaw) is contained in that one
delivery: logged once with its traceback, retried with the same backoff, and
marked ``failed`` after ``MAX_CRASHED_ATTEMPTS`` attempts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
import trio.lowlevel

from agent.central.channels import Channel, ChannelError
from agent.central.storage import STORAGE_ERRORS, Notification, Storage
from agent.common.backoff import backoff_delay
from agent.common.logs import get_logger

log = get_logger("central.dispatch")

# A delivery that hangs longer than this is treated as failed and retried.
SEND_TIMEOUT_S = 60.0
# Bound on how long the loop sleeps with nothing due (new rows wake it anyway).
IDLE_WAKE_S = 60.0
# A delivery whose channel keeps failing in an unexpected way (a bug, or an answer
# nobody foresaw) is marked failed after this many attempts, so that the alerts
# queued behind it go out.
MAX_CRASHED_ATTEMPTS = 5
# How soon a store that failed (a full disk) is tried again.
STORE_RETRY_S = 10.0
DEFAULT_LEASE_S = 120.0

RunStore = Callable[..., Awaitable[Any]]


class Dispatcher:
    """Drains the notification queue.

    Args:
        storage: the store holding the queue.
        channels: the channels by name.
        wall_clock: seconds since the epoch (the queue stores wall times).
        retry_initial_s: the first retry delay.
        retry_max_s: the cap of the doubling delay.
        rng: the source of the backoff's jitter (seeded in tests).
        run_store: runs one store call, ``await run_store(function, *args)``
            (the receiver runs it in a worker thread; default: here, under a lock).
        lease_s: how long a claimed delivery is held (see the module docstring).
        idle_wake_s: the longest sleep with nothing due (other receivers' rows
            are found at least this often).
    """

    def __init__(
        self,
        storage: Storage,
        channels: Mapping[str, Channel],
        *,
        wall_clock: Callable[[], float],
        retry_initial_s: float,
        retry_max_s: float,
        rng: random.Random | None = None,
        run_store: RunStore | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        idle_wake_s: float = IDLE_WAKE_S,
    ) -> None:
        self.storage = storage
        self.channels = dict(channels)
        self.wall_clock = wall_clock
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.rng = rng if rng is not None else random.Random()
        self.run_store = run_store or _inline_store()
        self.lease_s = lease_s
        self.idle_wake_s = idle_wake_s
        self.send_timeout_s = min(SEND_TIMEOUT_S, lease_s / 2)
        self._wake = trio.Event()
        # Deliveries whose channel raised something unexpected: traceback logged once.
        self._crashed: set[int] = set()

    def wake(self) -> None:
        """Something was queued: look at the queue now."""
        self._wake.set()

    def retry_delay(self, attempts: int, retry_after_s: object = None) -> float:
        """The wait after the ``attempts``-th failed attempt: full jitter below a ceiling
        that starts at ``retry_initial_s`` and doubles up to ``retry_max_s``.

        ``retry_after_s`` comes from the remote service: anything but a finite,
        non-negative number is ignored, and it never exceeds ``retry_max_s``.
        """
        delay = backoff_delay(attempts, cap_s=self.retry_max_s, rng=self.rng,
                              base_s=self.retry_initial_s)
        if isinstance(retry_after_s, int | float) and not isinstance(retry_after_s, bool) and \
                math.isfinite(retry_after_s) and retry_after_s >= 0:
            delay = max(delay, min(float(retry_after_s), self.retry_max_s))
        return delay

    async def _deliver(self, notification: Notification) -> None:
        channel = self.channels.get(notification.channel)
        if channel is None:
            # The channel was removed from the config: keep the row, say so once.
            await self.run_store(self.storage.mark_failed, notification.id,
                                 "channel no longer configured")
            log.error("dropping delivery %d: channel %r is no longer configured",
                      notification.id, notification.channel)
            return
        attempt = notification.attempts + 1
        try:
            with trio.fail_after(self.send_timeout_s):
                await channel.send(notification)
        except ChannelError as exc:
            if exc.retryable:
                delay = self.retry_delay(attempt, exc.retry_after_s)
                await self.run_store(self.storage.mark_retry, notification.id,
                                     self.wall_clock() + delay, str(exc))
                log.warning("%s (attempt %d), retrying in %.0fs", exc, attempt, delay)
            else:
                await self.run_store(self.storage.mark_failed, notification.id, str(exc))
                log.error("%s: giving up on incident %d %s", exc, notification.incident.id,
                          notification.event)
            return
        except trio.TooSlowError:
            delay = self.retry_delay(attempt)
            await self.run_store(self.storage.mark_retry, notification.id,
                                 self.wall_clock() + delay, "timed out")
            log.warning("channel %s timed out, retrying in %.0fs", notification.channel, delay)
            return
        except Exception as exc:  # a failure stays in its room: one delivery, not the loop
            await self._crashed_delivery(notification, attempt, exc)
            return
        self._crashed.discard(notification.id)
        await self.run_store(self.storage.mark_sent, notification.id, self.wall_clock())
        log.info("sent %s of incident %d to %s", notification.event, notification.incident.id,
                 notification.channel)

    async def _crashed_delivery(self, notification: Notification, attempt: int,
                                exc: Exception) -> None:
        """An unexpected error from a channel: retried with backoff, set aside in the end."""
        error = f"channel {notification.channel} failed: {type(exc).__name__}: {exc}"[:500]
        if notification.id not in self._crashed:
            self._crashed.add(notification.id)
            log.error("%s (delivery %d)", error, notification.id, exc_info=exc)
        if attempt >= MAX_CRASHED_ATTEMPTS:
            self._crashed.discard(notification.id)
            await self.run_store(self.storage.mark_failed, notification.id, error)
            log.error("giving up on delivery %d after %d failed attempts: %s",
                      notification.id, attempt, error)
            return
        delay = self.retry_delay(attempt)
        await self.run_store(self.storage.mark_retry, notification.id,
                             self.wall_clock() + delay, error)
        log.warning("%s (attempt %d), retrying in %.0fs", error, attempt, delay)

    async def run_once(self) -> float | None:
        """Sends every channel's queue head that is due.

        Returns:
            The earliest wall time a queued delivery becomes due, or None when the
            queue is empty.
        """
        now = self.wall_clock()
        due = await self.run_store(self.storage.claim_due, now, now + self.lease_s)
        async with trio.open_nursery() as nursery:
            for head in due:
                nursery.start_soon(self._deliver, head)
        if due:
            return now  # look again at once: the next row of each channel may be due
        next_due: float | None = await self.run_store(self.storage.queue_next_due)
        return next_due

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Delivers forever (until cancelled)."""
        task_status.started()
        failing = False
        while True:
            self._wake = trio.Event()
            try:
                next_due = await self.run_once()
                recovered, failing = failing, False
            except* STORAGE_ERRORS as group:
                # The queue stays where it is; a full disk must not end the receiver.
                if not failing:
                    log.error("the delivery queue cannot be read or updated: %s; retrying"
                              " every %gs", group.exceptions[0], STORE_RETRY_S)
                failing, recovered = True, False
                next_due = self.wall_clock() + STORE_RETRY_S
            if recovered:
                log.info("the delivery queue can be used again")
            if next_due is not None and next_due <= self.wall_clock():
                await trio.lowlevel.checkpoint()
                continue
            wait = self.idle_wake_s if next_due is None else next_due - self.wall_clock()
            with trio.move_on_after(min(wait, self.idle_wake_s)):
                await self._wake.wait()


def _inline_store() -> RunStore:
    """Store calls run on the event loop, one at a time (tests, command-line uses)."""
    lock = trio.Lock()

    async def run_store(function: Callable[..., Any], *args: Any) -> Any:
        async with lock:
            return function(*args)

    return run_store
