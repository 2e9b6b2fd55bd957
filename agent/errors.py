"""The exceptions heartwire raises on purpose.

Every error an operator can cause derives from :class:`HeartwireError`; the CLI
catches that base class once and prints its message as one line::

    HeartwireError
    ├── ConfigError      a config file is unreadable or invalid (file, key path, message)
    └── UsageError       the command line asks for something that cannot be done

Anything else that escapes is a bug and is allowed to show its traceback.
"""

from __future__ import annotations


class HeartwireError(Exception):
    """Base class: an error caused by input, reported as one line."""


class ConfigError(HeartwireError):
    """A config file that cannot be used.

    Attributes:
        file: the file the problem is in.
        key: the dotted key path (``checks.db.port``), or None for whole-file problems.
        message: what is wrong, in words an operator can act on.
    """

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class UsageError(HeartwireError):
    """The command line asks for something that cannot be done."""
