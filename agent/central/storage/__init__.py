"""The receiver's memory, behind one interface (see sqlite.py for the tables)."""

from agent.central.storage.sqlite import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    AgentRow,
    CheckRow,
    Incident,
    Notification,
    Retention,
    Storage,
)

__all__ = [
    "DATABASE_NAME",
    "SCHEMA_VERSION",
    "AgentRow",
    "CheckRow",
    "Incident",
    "Notification",
    "Retention",
    "Storage",
]
