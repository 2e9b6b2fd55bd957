"""Blocking calls off the event loop, on every trio the product supports.

trio 0.23 renamed ``to_thread.run_sync(cancellable=)`` to ``abandon_on_cancel=`` (and
deprecates the old name); Debian 12 ships trio 0.22, which knows only the old one.
"""
import inspect
from collections.abc import Callable
from typing import Final, TypeVar

import trio

R = TypeVar("R")

_HAS_ABANDON_ON_CANCEL: Final = (
    "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters)


async def run_abandoning_on_cancel(call: Callable[[], R],
                                   limiter: trio.CapacityLimiter | None = None) -> R:
    """Runs ``call`` in a worker thread; a cancelled caller returns at once.

    The thread itself runs on to its end (a thread cannot be stopped); ``limiter``
    keeps its slot until then, so calls sharing a limiter never overlap.
    """
    if _HAS_ABANDON_ON_CANCEL:
        return await trio.to_thread.run_sync(call, limiter=limiter, abandon_on_cancel=True)
    return await trio.to_thread.run_sync(  # type: ignore[call-arg,unused-ignore]
        call, limiter=limiter, cancellable=True)
