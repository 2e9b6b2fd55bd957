"""What every storage backend shares: its settings and the errors it raises on purpose.

The interface itself is :class:`agent.central.storage.sqlite.Storage`: its methods
hold SQL both backends run, and the PostgreSQL backend is a subclass of it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.errors import HeartwireError

# How many PostgreSQL connections one receiver keeps at most.
DEFAULT_POOL_SIZE: Final = 4


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where the receiver keeps its state (central.toml ``[storage]``).

    Attributes:
        state_dir: the SQLite database's directory (the default backend).
        url: a ``postgresql://`` URL (no password in it), or "" for SQLite.
        password: the PostgreSQL password, from ``password_file``/``_env``/``_credential``.
        pool_size: PostgreSQL connections this receiver keeps at most.
    """

    state_dir: Path
    url: str = ""
    password: str | None = field(default=None, repr=False)
    pool_size: int = DEFAULT_POOL_SIZE


class StorageError(Exception):
    """The database cannot be used right now (down, unreachable, full): retry later."""


class DuplicateMessage(Exception):
    """The message was applied already (by this receiver or another one)."""


class SchemaTooNew(HeartwireError):
    """The database was written by a newer receiver: this one does not know its schema."""

    def __init__(self, where: str, version: int, known: int) -> None:
        super().__init__(f"{where} has schema version {version}, newer than the {known} this "
                         "receiver knows: upgrade heartwire on this machine")


# What a store call raises when the database, not the caller, is at fault.
STORAGE_ERRORS: Final = (sqlite3.Error, StorageError)
