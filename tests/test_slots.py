"""The concurrency limit: bounded, first come first served, cancellation-safe."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agent.schedule._slots import Slots


async def test_never_more_holders_than_slots_and_fifo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = Slots(2)
    holding = 0
    peak = 0
    order: list[int] = []

    async def hold(index: int) -> None:
        nonlocal holding, peak
        async with slots:
            order.append(index)
            holding += 1
            peak = max(peak, holding)
            await trio.sleep(1)
            holding -= 1

    async with trio.open_nursery() as nursery:
        for index in range(7):
            nursery.start_soon(hold, index)
            await trio.sleep(0.01)  # a definite arrival order
    assert peak == 2
    assert order == list(range(7))
    assert slots.in_use == 0


async def test_a_cancelled_waiter_takes_no_slot(autojump_clock: trio.testing.MockClock) -> None:
    slots = Slots(1)
    got: list[str] = []

    async def holder() -> None:
        async with slots:
            await trio.sleep(5)

    async def impatient() -> None:
        with trio.move_on_after(1):
            async with slots:
                got.append("impatient")

    async def patient() -> None:
        async with slots:
            got.append("patient")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.sleep(0.1)
        nursery.start_soon(impatient)
        await trio.sleep(0.1)
        nursery.start_soon(patient)
    assert got == ["patient"]
    assert slots.in_use == 0


async def test_changing_the_total_wakes_or_holds_back_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = Slots(1)
    started: list[float] = []

    async def hold() -> None:
        async with slots:
            started.append(trio.current_time())
            await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        begin = trio.current_time()
        for _ in range(4):
            nursery.start_soon(hold)
        await trio.sleep(1)
        slots.total = 3  # two more may start now
        await trio.sleep(1)
        slots.total = 1  # the last waiter starts only once all three have finished
    assert [round(at - begin) for at in started] == [0, 1, 1, 11]
    with pytest.raises(ValueError, match="at least 1"):
        slots.total = 0
