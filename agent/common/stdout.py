"""Writing a command's output to stdout when the reader may have gone away.

``heartwire check | head -1`` closes the pipe before the rest of the table arrives.
The command still ends with its own exit code (as monitoring-plugins do) and no
traceback: the rest of the output is dropped.
"""

from __future__ import annotations

import os
import sys


def emit(text: str, *, end: str = "\n") -> None:
    """Prints ``text`` to stdout; a closed pipe drops it (and all later output)."""
    try:
        sys.stdout.write(text + end)
    except BrokenPipeError:
        _discard_stdout()


def flush() -> None:
    """Flushes stdout before exit, with the same rule as :func:`emit`."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    except (OSError, ValueError):  # stdout already closed: nothing left to write
        pass


def _discard_stdout() -> None:
    # Python flushes stdout again at exit, which would fail the same way: point
    # the descriptor at /dev/null (the recipe in the docs of the signal module).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
