"""How heartwire logs: one line per event, with structured fields for journald.

Results are logged with ``extra`` fields (``check``, ``status``, ``reason``,
``latency_ms``) so that a structured handler can turn them into journal fields;
the plain stderr handler shows the message alone.

Log lines carry text from the network and from config files (an HTTP reason
phrase, a host name, a peer's error message): every handler formats with
:class:`EscapingFormatter`, so a control character arrives as ``\\x1b`` or
``\\n`` and can neither move a terminal's cursor nor forge a second line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import Any

from agent.model import Result, StateChange, Status

LOGGER_NAME = "heartwire"
STDERR_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"

# C0 and C1 control characters and DEL, Unicode's line and paragraph separators, and
# the bidirectional overrides and isolates (which reorder what a terminal shows).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as a Python escape (``\\x1b``).

    Newlines and tabs are escaped too: one event is one line.
    """
    return _CONTROL.sub(_escape_one, text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose lines hold no control character.

    The message (with its arguments, where hostile text arrives) is escaped whole; a
    traceback keeps the line breaks of its frames, but an exception's own text (which
    may quote what a peer sent) is escaped whole, so it cannot add a line either.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        chunks = traceback.format_exception(*ei)
        text = "".join(_escape_lines(chunk) if _is_framing(chunk)
                       else escape_control(chunk.removesuffix("\n")) + "\n"
                       for chunk in chunks)
        return text.removesuffix("\n")

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


# How traceback.format_exception's chunks that are not an exception's text begin
# (after the indentation and "|" bars of an exception group).
_TRACEBACK_FRAMING = ("Traceback (most recent call last):", 'File "', "[Previous line",
                      "During handling of the above exception",
                      "The above exception was the direct cause", "+-", "+---")


def _is_framing(chunk: str) -> bool:
    return chunk.lstrip("\n |").startswith(_TRACEBACK_FRAMING)


def _escape_lines(text: str) -> str:
    return "\n".join(escape_control(line) for line in text.split("\n"))


def configure(*, debug: bool = False) -> None:
    """Sends heartwire's logs to stderr, one line each (DEBUG and up with ``debug``),
    or to the journal with structured fields when stderr is systemd's journal stream.

    The agent and the receiver (``heartwire central``) both log through here, with
    control characters escaped (:class:`EscapingFormatter`).
    """
    handler: logging.Handler | None = None
    # systemd sets JOURNAL_STREAM for a unit's stderr; without it the journal code
    # (and systemd-python) is not even imported.
    if "JOURNAL_STREAM" in os.environ:
        from agent.common.journal import journal_handler

        handler = journal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(STDERR_FORMAT))
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
    ordinary = change is None and not (
        result.consecutive_failures and result.status is not Status.DOWN)
    # Most results are ordinary, logged at DEBUG, which is off by default: at 1,000
    # checks a second, formatting them for nothing cost a few per cent of the CPU.
    if ordinary and not logger.isEnabledFor(logging.DEBUG):
        return
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
    elif not ordinary:
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
