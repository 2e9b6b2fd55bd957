"""A concurrency limit whose free slots cost no trip through the event loop.

:class:`trio.CapacityLimiter` yields to the scheduler on every acquire, even when
a token is free; at thousands of checks per second that yield is a tenth of a
check. :class:`Slots` takes a free slot at once (after checking for cancellation)
and only parks when none is free. Waiters are served first come, first served, and
a released slot passes straight to the first waiter.
"""

from __future__ import annotations

from types import TracebackType

import trio


class Slots:
    """At most ``total`` holders at once; ``async with slots:`` holds one.

    Args:
        total: how many may hold a slot at once (at least 1).
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0
        self._waiting = trio.lowlevel.ParkingLot()

    @property
    def total(self) -> int:
        """How many may hold a slot at once; raising it wakes waiters at once."""
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"total must be at least 1, got {total}")
        self._total = total
        free = min(len(self._waiting), total - self._used)
        if free > 0:
            self._used += free
            self._waiting.unpark(count=free)

    @property
    def in_use(self) -> int:
        """How many slots are held now."""
        return self._used

    async def __aenter__(self) -> None:
        # Whoever waits goes first: a newcomer never takes a slot from the queue.
        if self._used < self._total and not self._waiting:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._used += 1
            return
        # Parked until a release hands this task its slot (counted by the releaser).
        await self._waiting.park()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Gives the slot back, or hands it to the first waiter."""
        if self._waiting and self._used <= self._total:
            self._waiting.unpark()
        else:
            self._used -= 1
