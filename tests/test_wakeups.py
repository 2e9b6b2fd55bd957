"""One timer task waking many sleepers at their exact (virtual) deadlines."""

from __future__ import annotations

import trio
import trio.testing

from agent.schedule._wakeups import WakeupQueue


async def test_sleepers_wake_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = WakeupQueue()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await queue.sleep_until(deadline)
        woke.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        start = trio.current_time()
        nursery.start_soon(sleeper, "late", start + 30)
        await trio.sleep(1)
        # Added while the timer waits for a later deadline: must still wake on time.
        nursery.start_soon(sleeper, "early", start + 5)
        nursery.start_soon(sleeper, "past", start - 1)
        await trio.sleep(40)
        nursery.cancel_scope.cancel()
    assert woke == [("past", start + 1), ("early", start + 5), ("late", start + 30)]


async def test_a_cancelled_sleeper_leaves_and_others_still_wake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = WakeupQueue()
    woke: list[float] = []

    async def sleeper(deadline: float) -> None:
        await queue.sleep_until(deadline)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        start = trio.current_time()
        with trio.move_on_after(2) as scope:
            await queue.sleep_until(start + 10)
        assert scope.cancelled_caught
        nursery.start_soon(sleeper, start + 20)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert woke == [start + 20]
