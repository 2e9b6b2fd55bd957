"""Reading TOML tables strictly, with errors that name the file and the key path.

Every config section is read through a :class:`Table`: each accessor checks the
value's type and range, and :meth:`Table.finish` rejects keys nobody asked for, so a
typo (``intervall = "30s"``) is an error instead of a silently ignored setting.

A table also remembers, in the file's own terms, every key it was asked for and the
value that was used: as written, or the default when the key is absent (and the
default is a value the key accepts). :meth:`Table.effective` returns that, which is
what ``heartwire config show`` prints: a config every reader accepts again, with
exactly the keys the readers know.
"""

from __future__ import annotations

import difflib
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

from agent.errors import ConfigError

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HINT = 'a duration such as "250ms", "5s", "2m", "1h" or a number of seconds'
# No config needs more than a few levels of tables and arrays; past this a document
# is refused before any code walks it recursively (tomllib's parser, tomli-w, ...).
MAX_NESTING = 32
NESTING_MESSAGE = f"nested more than {MAX_NESTING} levels deep"
# A config file larger than this is refused unread (a thousand checks take ~100 KiB).
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def loads_bounded(text: str) -> dict[str, object]:
    """Parses TOML text whose tables and arrays nest at most :data:`MAX_NESTING` deep.

    tomllib parses nested values recursively: thousands of levels would raise
    RecursionError (a traceback, not an error message), and a few hundred would
    parse but make every later recursive walk fragile.

    Raises:
        tomllib.TOMLDecodeError: for invalid TOML.
        ValueError: with :data:`NESTING_MESSAGE` for too deep a document.
    """
    try:
        document = tomllib.loads(text)
    except RecursionError:
        raise ValueError(NESTING_MESSAGE) from None
    if _deeper_than(document, MAX_NESTING):
        raise ValueError(NESTING_MESSAGE)
    return document


def read_toml(path: Path) -> dict[str, object]:
    """Reads one TOML file; unreadable or malformed files become a ConfigError."""
    try:
        # Not a regular file (a FIFO, /dev/zero) could block or never end: refuse
        # before opening. A regular file is read up to the bound, never further.
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise ConfigError(str(path), None, "is not a regular file")
        with path.open("rb") as handle:
            content = handle.read(MAX_CONFIG_BYTES + 1)
        if len(content) > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), None,
                              f"is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
        return loads_bounded(content.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), None, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(str(path), None, "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(str(path), None, "permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"invalid TOML: {exc}") from None
    except ValueError as exc:  # nested too deeply
        raise ConfigError(str(path), None, str(exc)) from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror or exc}") from None


def _deeper_than(value: object, limit: int) -> bool:
    """Whether tables/arrays in ``value`` nest more than ``limit`` levels (no recursion)."""
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def parse_duration(value: object) -> float:
    """Turns "250ms", "5s", "2m", "1h", "14d" or a number of seconds into seconds.

    Raises:
        ValueError: with a message that says what was expected.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Writes seconds back in the shortest unit that is exact ("500ms", "30s", "2m")."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNIT_SECONDS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Table:
    """One TOML table being read, with the file and key path it came from.

    Args:
        raw: the table as tomllib returned it.
        file: the file it was read from.
        path: its dotted key path ("checks.db"), "" for the top level.
    """

    def __init__(self, raw: Mapping[str, object], file: str, path: str = "") -> None:
        self.raw = raw
        self.file = file
        self.path = path
        self._read: set[str] = set()
        # key → the value used, as TOML would write it (a sub-Table for tables).
        self._used: dict[str, object] = {}

    def effective(self) -> dict[str, object]:
        """Every key read and the value used, defaults included, as a TOML table.

        Keys appear in the order they were read; a default that the key itself
        would refuse (a "not set" sentinel) is left out, as are defaults of None.
        """
        table: dict[str, object] = {}
        for key, value in self._used.items():
            table[key] = value.effective() if isinstance(value, Table) else value
        return table

    def _use_default(self, key: str, value: object) -> None:
        if key not in self.raw:
            self._used.setdefault(key, value)

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> ConfigError:
        """A ConfigError for ``key`` of this table (or the table itself when None)."""
        return ConfigError(self.file, self.key_path(key) if key else (self.path or None), message)

    def has(self, key: str) -> bool:
        """Whether the table sets ``key``."""
        return key in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def _take(self, key: str, default: object) -> object:
        self._read.add(key)
        if key in self.raw:
            self._used.setdefault(key, self.raw[key])
            return self.raw[key]
        if default is REQUIRED:
            # A typo of a required key is two errors; the typo is the one to report.
            unknown = [name for name in self.raw if name not in self._read]
            close = difflib.get_close_matches(key, unknown, n=1)
            if close:
                raise self.error(close[0], f"unknown key (did you mean {key!r}?)")
            raise self.error(key, "is required")
        return default

    def _typed(self, key: str, default: object, kind: type[T], what: str) -> T:
        value = self._take(key, default)
        if key not in self.raw:
            return value  # type: ignore[return-value]  # the caller's default
        # bool is an int subclass in Python; TOML keeps them apart and so do we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {what}, got {_type_name(value)} {value!r}")
        return value

    def string(self, key: str, default: str | _Required | None = REQUIRED) -> str:
        """A string value; leading and trailing space is an error, not trimmed."""
        value = self._typed(key, default, str, "a string")
        if isinstance(default, str):
            self._use_default(key, default)
        return value

    def nonempty_string(self, key: str, default: str | _Required = REQUIRED) -> str:
        """A string that must contain something other than white space."""
        value = self.string(key, default)
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def optional_string(self, key: str) -> str | None:
        """A string, or None when the key is absent."""
        if not self.has(key):
            self._read.add(key)
            return None
        return self.nonempty_string(key)

    def boolean(self, key: str, default: bool | _Required = REQUIRED) -> bool:
        """A true/false value."""
        if isinstance(default, bool):
            self._use_default(key, default)
        return self._typed(key, default, bool, "true or false")

    def integer(
        self,
        key: str,
        default: int | _Required = REQUIRED,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """A whole number, checked against the bounds given."""
        value = self._typed(key, default, int, "an integer")
        if key in self.raw:
            if minimum is not None and maximum is not None and not minimum <= value <= maximum:
                raise self.error(key, f"must be between {minimum} and {maximum}, got {value}")
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum}, got {value}")
        elif isinstance(default, int) and (minimum is None or default >= minimum) and (
            maximum is None or default <= maximum
        ):
            self._use_default(key, default)
        return value

    def duration(
        self, key: str, default: float | _Required | None = REQUIRED, *, positive: bool = True
    ) -> float:
        """A duration in seconds, written "250ms", "5s", "2m", "1h", "1d" or as a number."""
        value = self._take(key, default)
        if key not in self.raw:
            if isinstance(default, float | int) and (default > 0 or not positive):
                self._use_default(key, format_duration(float(default)))
            return value  # type: ignore[return-value]
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if positive and seconds <= 0:
            raise self.error(key, f"must be greater than zero, got {value!r}")
        return seconds

    def choice(self, key: str, choices: Sequence[str], default: str | _Required = REQUIRED) -> str:
        """A string that must be one of ``choices``."""
        value = self.string(key, default)
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            raise self.error(key, f"must be one of {allowed}, got {value!r}")
        return value

    def string_list(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        """An array of non-empty strings."""
        value = self._take(key, list(default))
        self._use_default(key, list(default))
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of strings, got {_type_name(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{key}[{index}]", f"expected a non-empty string, got {item!r}")
        return tuple(value)

    def table(self, key: str, *, required: bool = False) -> Table:
        """A sub-table; an absent optional one reads as empty."""
        value = self._take(key, REQUIRED if required else {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_type_name(value)}")
        table = Table(value, self.file, self.key_path(key))
        self._used[key] = table
        return table

    def mark_read(self, *keys: str) -> None:
        """Marks keys as handled elsewhere so :meth:`finish` does not reject them."""
        self._read.update(keys)

    def finish(self) -> None:
        """Rejects every key that no accessor asked for (typos, misplaced settings)."""
        for key in self.raw:
            if key in self._read:
                # Read straight from ``raw`` elsewhere: shown as written.
                self._used.setdefault(key, self.raw[key])
                continue
            message = "unknown key"
            close = difflib.get_close_matches(key, sorted(self._read), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            raise self.error(key, message)
