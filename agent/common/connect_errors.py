"""Why a connection failed, in words, for errors that hide it.

``trio.open_tcp_stream`` (which httpx uses under trio) raises
``OSError("all attempts to connect to HOST:PORT failed")`` and keeps the reason
of each attempt (refused, unreachable, timed out) only in an ``ExceptionGroup``
chained as its cause. Printed as it is, the message says that something failed
but not why; :func:`describe` appends the reasons.
"""

from __future__ import annotations

# Each attempt's reason is printed; a name with many addresses lists only a few.
MAX_REASONS = 3
# How far along the chain of causes (httpx → httpcore → OSError → group) to look.
_MAX_CHAIN = 8


def describe(exc: BaseException) -> str:
    """``str(exc)`` followed by the reason of every failed connection attempt, if hidden.

    Example: ``all attempts to connect to localhost:1 failed (127.0.0.1:1: Connection
    refused)``.
    """
    text = str(exc)
    reasons = _attempt_reasons(exc)
    if not reasons or all(reason in text for reason in reasons):
        return text
    shown = reasons[:MAX_REASONS]
    if len(reasons) > MAX_REASONS:
        shown.append(f"and {len(reasons) - MAX_REASONS} more")
    return f"{text} ({'; '.join(shown)})"


def _attempt_reasons(exc: BaseException) -> list[str]:
    """The distinct reasons inside the first ExceptionGroup along ``exc``'s causes."""
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None:
            return []
        if isinstance(current, BaseExceptionGroup):
            reasons = [_reason(member) for member in _leaves(current)]
            return list(dict.fromkeys(reasons))
        current = current.__cause__ or current.__context__
    return []


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending and len(leaves) < 64:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves


def _reason(exc: BaseException) -> str:
    # trio >= 0.23 words each attempt "Error connecting to ('127.0.0.1', 1): Connection
    # refused"; trio 0.22 (Debian 12) "Error in connect: Connection refused", without
    # the address (the top message names the target; the reason is what was missing).
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    prefix = "Error connecting to "
    if text.startswith(prefix) and ": " in text:
        address, _, why = text[len(prefix):].partition(": ")
        return f"{_address(address)}: {why}"
    return text.removeprefix("Error in connect: ") or type(exc).__name__


def _address(text: str) -> str:
    """``('127.0.0.1', 1)`` or ``('::1', 1, 0, 0)`` → ``127.0.0.1:1`` / ``[::1]:1``."""
    parts = [part.strip(" '\"") for part in text.strip("()").split(",")]
    if len(parts) < 2:
        return text
    host, port = parts[0], parts[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
