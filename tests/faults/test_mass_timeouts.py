"""Thousands of targets that all time out at once, then come back.

The targets are loopback listeners whose accept queue is full: the kernel drops
every further SYN, so a connect neither succeeds nor fails, exactly like a
firewall that drops packets. The process's descriptor limit is lowered to what the
concurrency limit needs, so unbounded sockets would show as EMFILE errors.
"""

from __future__ import annotations

import random
import resource
import socket
from collections.abc import Iterator

import pytest
import trio

from agent.config.loader import CheckConfig
from agent.model import Outcome, Reason, Result, StateChange
from agent.schedule.scheduler import Scheduler
from tests.faults.hostile import open_fd_count

LISTENERS = 20


class _NoOffset(random.Random):
    """Every check's first run at once: the worst case the offsets normally soften."""

    def uniform(self, a: float, b: float) -> float:
        return a


def _full_listeners() -> tuple[list[socket.socket], list[socket.socket]]:
    listeners, fillers = [], []
    for index in range(LISTENERS):
        listener = socket.socket()
        listener.bind((f"127.0.0.{10 + index}", 0))
        listener.listen(0)
        listeners.append(listener)
        # Backlog 0 still queues one connection; two more make sure it is full.
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
    return listeners, fillers


@pytest.fixture
def full_listeners() -> Iterator[list[socket.socket]]:
    listeners, fillers = _full_listeners()
    yield listeners
    for sock in listeners + fillers:
        sock.close()


async def _accept_all(listeners: list[socket.socket]) -> None:
    """Turns the dropping targets into healthy ones: accept and close for ever."""
    async def serve(listener: socket.socket) -> None:
        listener.listen(4096)  # a second listen() raises the backlog in place
        listener.setblocking(False)
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                continue
            connection.close()

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(serve, listener)


async def _scenario(
    listeners: list[socket.socket], *, targets: int, max_concurrent: int, timeout_s: float,
    interval_s: float,
) -> None:
    checks = [
        CheckConfig(
            name=f"t{index}",
            host=listeners[index % LISTENERS].getsockname()[0],
            port=listeners[index % LISTENERS].getsockname()[1],
            interval_s=interval_s,
            timeout_s=timeout_s,
            failures_before_down=1,
        )
        for index in range(targets)
    ]
    rounds: list[list[Result]] = [[], []]
    round_done = [trio.Event(), trio.Event()]
    current = 0

    def on_result(result: Result, change: StateChange | None) -> None:
        rounds[current].append(result)
        if len(rounds[current]) == targets:
            round_done[current].set()

    baseline_fds = open_fd_count()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (baseline_fds + max_concurrent + 64, hard))
    peak_fds = 0
    try:
        scheduler = Scheduler(
            checks, max_concurrent=max_concurrent, on_result=on_result, rng=_NoOffset()
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            # Round one: everything times out. Watch the descriptors meanwhile.
            with trio.move_on_after(interval_s * 0.9):
                while len(rounds[0]) < targets:
                    peak_fds = max(peak_fds, open_fd_count())
                    await trio.sleep(0.01)
            assert len(rounds[0]) == targets, "round one did not finish before the next"
            current = 1
            nursery.start_soon(_accept_all, listeners)
            with trio.move_on_after(interval_s * 1.5):
                await round_done[1].wait()
            nursery.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert {result.observation.reason for result in rounds[0]} == {Reason.TIMEOUT}
    # Descriptors: the probes' sockets never exceed the concurrency limit.
    assert peak_fds - baseline_fds <= max_concurrent
    # The schedule recovers: round two ran every check, on time, and all are up.
    assert len(rounds[1]) == targets
    assert all(result.observation.outcome is Outcome.OK for result in rounds[1])
    assert scheduler.stats.skipped == 0


async def test_a_thousand_targets_time_out_at_once(full_listeners: list[socket.socket]) -> None:
    await _scenario(
        full_listeners, targets=1_000, max_concurrent=250, timeout_s=0.3, interval_s=3.0
    )


@pytest.mark.slow
async def test_ten_thousand_targets_time_out_at_once(full_listeners: list[socket.socket]) -> None:
    await _scenario(
        full_listeners, targets=10_000, max_concurrent=1_000, timeout_s=1.0, interval_s=15.0
    )
