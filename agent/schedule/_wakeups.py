"""Many tasks sleeping until their own deadlines, woken by one timer task.

``trio.sleep_until`` wakes a task by expiring a cancel scope, which raises and
catches a ``Cancelled`` through that task's stack. At thousands of scheduled checks
per second that costs more than the TCP check itself. Here each sleeper parks
without a scope of its own, and one task keeps a heap of deadlines and reschedules
the sleepers that are due, in deadline order.

Time is trio's clock, so :class:`trio.testing.MockClock` (autojump included) drives
it like any trio sleep.
"""

from __future__ import annotations

import heapq
import math

import trio


class _Sleeper:
    """A parked task; ``cancelled`` once it left (it stays in the heap until due)."""

    __slots__ = ("cancelled", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.cancelled = False


class WakeupQueue:
    """One timer for many sleepers; :meth:`run` must be running for anyone to wake."""

    def __init__(self) -> None:
        # (deadline, sequence, sleeper): plain tuples compare fastest.
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._sequence = 0
        self._timer = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wakes sleepers as their deadlines pass, until cancelled."""
        task_status.started()
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                sleeper = heapq.heappop(self._heap)[2]
                if not sleeper.cancelled:
                    trio.lowlevel.reschedule(sleeper.task)
            self._timer = trio.CancelScope(
                deadline=self._heap[0][0] if self._heap else math.inf
            )
            with self._timer:
                await trio.sleep_forever()

    async def sleep_until(self, deadline: float) -> None:
        """Returns once trio's clock reaches ``deadline`` (a checkpoint, like trio's)."""
        if deadline <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        self._sequence += 1
        sleeper = _Sleeper(trio.lowlevel.current_task())
        heapq.heappush(self._heap, (deadline, self._sequence, sleeper))
        if deadline < self._timer.deadline:
            # The timer task sleeps until a later deadline: wake it sooner.
            self._timer.deadline = deadline

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            sleeper.cancelled = True  # left in the heap, skipped when it comes due
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
