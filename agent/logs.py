"""How heartwire logs: one line per event, with structured fields for journald.

Results are logged with ``extra`` fields (``check``, ``status``, ``reason``,
``latency_ms``) so that a structured handler can turn them into journal fields;
the plain stderr handler shows the message alone.
"""

from __future__ import annotations

import logging
import sys

from agent.model import Result, StateChange, Status

LOGGER_NAME = "heartwire"


def configure(*, debug: bool = False) -> None:
    """Sends heartwire's logs to stderr, one line each (DEBUG and up with ``debug``),
    or to the journal with structured fields when stderr is systemd's journal stream."""
    from agent.systemd import journal_handler

    handler: logging.Handler | None = journal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def get_logger(name: str = "") -> logging.Logger:
    """The logger of a heartwire component (``heartwire.<name>``)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def describe_result(result: Result) -> str:
    """A short human phrase for what the probe saw: ``open, 0.4 ms via 10.0.0.5``."""
    observation = result.observation
    words = [observation.reason]
    if observation.latency_ms is not None:
        words.append(f"{observation.latency_ms:.1f} ms")
    text = ", ".join(words)
    if observation.address:
        text += f" via {observation.address}"
    if observation.detail:
        text += f": {observation.detail}"
    return text


def log_result(logger: logging.Logger, result: Result, change: StateChange | None) -> None:
    """Logs a state change at INFO (WARNING when it goes down), unconfirmed failures
    at INFO, and everything else at DEBUG."""
    fields = {
        "check": result.check,
        "status": result.status.value,
        "reason": result.observation.reason,
        "latency_ms": result.observation.latency_ms,
    }
    if change is not None:
        level = logging.WARNING if change.current is Status.DOWN else logging.INFO
        logger.log(
            level,
            "%s: %s -> %s (%s)",
            result.check,
            change.previous.value,
            change.current.value,
            describe_result(result),
            extra=fields,
        )
    elif result.consecutive_failures and result.status is not Status.DOWN:
        logger.info(
            "%s: failed (%s), %d in a row; still reported %s until confirmed",
            result.check,
            describe_result(result),
            result.consecutive_failures,
            result.status.value,
            extra=fields,
        )
    else:
        logger.debug("%s: %s (%s)", result.check, result.status.value,
                     describe_result(result), extra=fields)
