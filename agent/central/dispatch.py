"""Delivering queued notifications to their channels, retrying until they go through.

The queue lives in the database (storage ``notifications``), written in the same
transaction as the incident, so an alert survives a channel outage and a receiver
restart. Each channel delivers its own queue in order (a resolve never overtakes
its trigger), one delivery at a time; channels do not wait for each other.

A failed delivery is retried after ``retry_initial``, doubling up to ``retry_max``
(or after the ``Retry-After`` the service asked for, if longer), for as long as it
takes. A delivery the service refuses for good (a 4xx other than 408/429, an SMTP
5xx) is marked ``failed`` and logged as an error: retrying cannot fix a revoked
token, and it must not block the alerts queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio
import trio.lowlevel

from agent.central.channels import Channel, ChannelError
from agent.central.storage import Notification, Storage
from agent.logs import get_logger

log = get_logger("central.dispatch")

# A delivery that hangs longer than this is treated as failed and retried.
SEND_TIMEOUT_S = 60.0
# Bound on how long the loop sleeps with nothing due (new rows wake it anyway).
IDLE_WAKE_S = 60.0


class Dispatcher:
    """Drains the notification queue.

    Args:
        storage: the store holding the queue.
        channels: the channels by name.
        wall_clock: seconds since the epoch (the queue stores wall times).
        retry_initial_s: the first retry delay.
        retry_max_s: the cap of the doubling delay.
    """

    def __init__(
        self,
        storage: Storage,
        channels: Mapping[str, Channel],
        *,
        wall_clock: Callable[[], float],
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self.storage = storage
        self.channels = dict(channels)
        self.wall_clock = wall_clock
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._wake = trio.Event()

    def wake(self) -> None:
        """Something was queued: look at the queue now."""
        self._wake.set()

    def retry_delay(self, attempts: int, retry_after_s: float | None = None) -> float:
        """The wait after the ``attempts``-th failed attempt (1 → retry_initial)."""
        delay = min(self.retry_max_s, self.retry_initial_s * 2.0 ** max(0, attempts - 1))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_max_s))
        return delay

    async def _deliver(self, notification: Notification) -> None:
        channel = self.channels.get(notification.channel)
        if channel is None:
            # The channel was removed from the config: keep the row, say so once.
            self.storage.mark_failed(notification.id, "channel no longer configured")
            log.error("dropping delivery %d: channel %r is no longer configured",
                      notification.id, notification.channel)
            return
        try:
            with trio.fail_after(SEND_TIMEOUT_S):
                await channel.send(notification)
        except ChannelError as exc:
            if exc.retryable:
                delay = self.retry_delay(notification.attempts + 1, exc.retry_after_s)
                self.storage.mark_retry(notification.id, self.wall_clock() + delay, str(exc))
                log.warning("%s (attempt %d), retrying in %.0fs", exc,
                            notification.attempts + 1, delay)
            else:
                self.storage.mark_failed(notification.id, str(exc))
                log.error("%s: giving up on incident %d %s", exc, notification.incident.id,
                          notification.event)
            return
        except trio.TooSlowError:
            delay = self.retry_delay(notification.attempts + 1)
            self.storage.mark_retry(notification.id, self.wall_clock() + delay, "timed out")
            log.warning("channel %s timed out, retrying in %.0fs", notification.channel, delay)
            return
        self.storage.mark_sent(notification.id, self.wall_clock())
        log.info("sent %s of incident %d to %s", notification.event, notification.incident.id,
                 notification.channel)

    async def run_once(self) -> float | None:
        """Sends every channel's queue head that is due.

        Returns:
            The earliest wall time a queued delivery becomes due, or None when the
            queue is empty.
        """
        heads = self.storage.queue_heads()
        now = self.wall_clock()
        due = [head for head in heads if head.next_attempt_at <= now]
        async with trio.open_nursery() as nursery:
            for head in due:
                nursery.start_soon(self._deliver, head)
        if due:
            return now  # look again at once: the next row of each channel may be due
        return min((head.next_attempt_at for head in heads), default=None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Delivers forever (until cancelled)."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            next_due = await self.run_once()
            if next_due is not None and next_due <= self.wall_clock():
                await trio.lowlevel.checkpoint()
                continue
            wait = IDLE_WAKE_S if next_due is None else next_due - self.wall_clock()
            with trio.move_on_after(min(wait, IDLE_WAKE_S)):
                await self._wake.wait()
