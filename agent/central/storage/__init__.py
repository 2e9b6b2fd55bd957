"""The receiver's memory, behind one interface, on SQLite or PostgreSQL.

The interface is :class:`Storage` (sqlite.py): the SQLite store, whose methods'
SQL both backends run. :class:`~agent.central.storage.postgres.PostgresStorage`
is a subclass that swaps the connection for a pool and adds row locks, so a
method added to :class:`Storage` exists in both. :func:`open_storage` picks the
backend from ``[storage] url``.
"""

from __future__ import annotations

from agent.central.storage.base import (
    STORAGE_ERRORS,
    DuplicateMessage,
    SchemaTooNew,
    StorageError,
    StorageSettings,
)
from agent.central.storage.sqlite import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    TABLES,
    AgentRow,
    CheckRow,
    Incident,
    Notification,
    Retention,
    Storage,
)
from agent.errors import UsageError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres(url: str) -> bool:
    """Whether ``[storage] url`` names a PostgreSQL database."""
    return url.partition("://")[0] in POSTGRES_SCHEMES


def open_storage(settings: StorageSettings, *, migrate: bool = True) -> Storage:
    """Opens the store ``[storage]`` names: the SQLite file in ``state_dir``, or PostgreSQL.

    Args:
        settings: the ``[storage]`` settings.
        migrate: bring an older schema up to date (at start; the SQLite file is
            always migrated on open).

    Raises:
        UsageError: PostgreSQL is configured but psycopg is not installed.
        StorageError: the database cannot be reached.
        SchemaTooNew: a newer receiver migrated the database.
    """
    if not is_postgres(settings.url):
        return Storage.open_in(settings.state_dir)
    try:
        from agent.central.storage.postgres import PostgresStorage
    except ImportError as exc:
        raise UsageError(f"[storage] url is PostgreSQL, which needs {exc.name}: "
                         "apt install python3-psycopg python3-psycopg-pool, or "
                         "pip install 'heartwire[central-postgres]'") from None
    return PostgresStorage(settings, migrate=migrate)


__all__ = [
    "DATABASE_NAME",
    "SCHEMA_VERSION",
    "STORAGE_ERRORS",
    "TABLES",
    "AgentRow",
    "CheckRow",
    "DuplicateMessage",
    "Incident",
    "Notification",
    "Retention",
    "SchemaTooNew",
    "Storage",
    "StorageError",
    "StorageSettings",
    "is_postgres",
    "open_storage",
]
