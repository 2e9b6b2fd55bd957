"""The receiver's memory: one SQLite file (WAL), and the SQL both backends share.

Everything the receiver keeps goes through :class:`Storage`; nothing else in
``agent/central`` writes SQL. The methods speak in the receiver's terms (messages,
heartbeats, checks, incidents, notifications). Their SQL is portable (``?``
placeholders, ``ON CONFLICT``, ``RETURNING``): the PostgreSQL backend
(postgres.py) inherits every method and replaces only the connection, the
schema and its migrations. A method that needs a dialect of its own is
overridden there.

Several receivers may share one PostgreSQL, so no method relies on being the only
writer: a message is applied once (the ``(agent, msg_id)`` key), one incident is
open per cause (a partial unique index), a resolve or a late trigger is sent by
whoever changed the row, deliveries are claimed with a lease, and pruning is
claimed once per period (``cluster_jobs``).

Tables:

* ``agents``: one row per agent: last heartbeat (receipt time), its interval,
  the highest ``seq`` seen and the heartbeat's own fields.
* ``checks``: the latest known status of each agent's checks.
* ``state_history``: every status change, from ``state_change`` messages and from
  heartbeats that show a different status.
* ``messages``: the ids of applied messages, by agent, for deduplication.
* ``seq_gaps``: each hole in an agent's ``seq``, as received.
* ``incidents``: the alert history: what opened, when, when it resolved.
* ``notifications``: the durable per-channel queue of alert deliveries; a
  receiver sending one holds it until ``claimed_until`` (its lease).
* ``cluster_jobs``: when each periodic job (pruning) last ran, by whichever receiver.

History is pruned hourly past its retention (:class:`Retention`, from central.toml
``[storage]``): message ids, status changes, seq gaps, sent/failed deliveries and
resolved incidents. A file from an older receiver is migrated on open
(``PRAGMA user_version``); a file from a newer receiver is refused.

Calls are synchronous and short. One connection serves all writes and its calls
never overlap (the receiver holds one lock around them: ingest runs in a worker
thread, the watcher and the dispatcher on the event loop); the status page reads
through a second connection, which WAL lets read while a write goes on.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from agent.central.storage.base import DuplicateMessage, SchemaTooNew, StorageError

DATABASE_NAME: Final = "central.sqlite3"

# Dedup is per agent: one agent must not make another's message a duplicate.
_MESSAGES_COLUMNS: Final = (
    "agent TEXT NOT NULL, msg_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
    " received_at REAL NOT NULL, PRIMARY KEY (agent, msg_id)"
)

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_heartbeat_at REAL,
    interval_s REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    version TEXT,
    started_at TEXT,
    heartbeat_json TEXT
);
CREATE TABLE IF NOT EXISTS checks (
    agent TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    latency_ms REAL,
    at TEXT,
    group_name TEXT,
    host TEXT,
    port INTEGER,
    updated_at REAL NOT NULL,
    PRIMARY KEY (agent, name)
);
CREATE TABLE IF NOT EXISTS state_history (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL,
    previous TEXT NOT NULL,
    current TEXT NOT NULL,
    at TEXT,
    received_at REAL NOT NULL,
    msg_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages ({_MESSAGES_COLUMNS});
CREATE INDEX IF NOT EXISTS messages_received_at ON messages (received_at);
CREATE TABLE IF NOT EXISTS seq_gaps (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    expected INTEGER NOT NULL,
    received INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    agent TEXT NOT NULL,
    check_name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    opened_at REAL NOT NULL,
    resolved_at REAL,
    notified INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open
    ON incidents (kind, agent, check_name) WHERE resolved_at IS NULL;
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    sent_at REAL,
    claimed_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cluster_jobs (
    name TEXT PRIMARY KEY,
    last_run_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (channel, state, id);
CREATE INDEX IF NOT EXISTS state_history_received_at ON state_history (received_at);
CREATE INDEX IF NOT EXISTS seq_gaps_agent ON seq_gaps (agent, id);
CREATE INDEX IF NOT EXISTS notifications_incident ON notifications (incident_id);
"""

# Every table of what the receiver knows, parents before the rows that refer to them
# (export and import). Not cluster_jobs: when this cluster's receivers last ran a
# periodic job means nothing to another store, and each receiver writes it at start.
TABLES: Final = ("agents", "checks", "state_history", "messages", "seq_gaps", "incidents",
                 "notifications")

# PRAGMA user_version of a database this code created or migrated. Version 0 (a
# file from before it was set) keyed message ids alone: one agent could make
# another's genuine message a "duplicate". _MIGRATIONS[n] takes version n to n+1.
SCHEMA_VERSION: Final = 2
_MIGRATIONS: Final = (
    f"""
    ALTER TABLE messages RENAME TO messages_v0;
    CREATE TABLE messages ({_MESSAGES_COLUMNS});
    INSERT INTO messages (agent, msg_id, seq, type, received_at)
        SELECT agent, msg_id, seq, type, received_at FROM messages_v0;
    DROP TABLE messages_v0;
    DROP INDEX IF EXISTS messages_received_at;
    CREATE INDEX messages_received_at ON messages (received_at);
    """,
    # Version 2: deliveries are leased (several receivers share a queue), and
    # periodic jobs are claimed once per period.
    """
    ALTER TABLE notifications ADD COLUMN claimed_until REAL NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS cluster_jobs (name TEXT PRIMARY KEY, last_run_at REAL NOT NULL);
    """,
)
# ``LIMIT`` for "no limit": SQLite takes -1, PostgreSQL does not; both take this.
NO_LIMIT: Final = 2**62


# Names bound in one IN (...) list: far below SQLite's 32,766 variables.
_NAMES_PER_QUERY: Final = 500


def _limit(limit: int) -> int:
    return NO_LIMIT if limit < 0 else limit


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the receiver keeps each kind of history (seconds).

    Attributes:
        messages_s: applied message ids (deduplication).
        state_history_s: status changes.
        seq_gaps_s: recorded holes in agents' ``seq``.
        notifications_s: sent and failed alert deliveries (pending ones are kept).
        incidents_s: resolved incidents (open ones, and those with deliveries
            still pending, are kept).
    """

    messages_s: float
    state_history_s: float
    seq_gaps_s: float
    notifications_s: float
    incidents_s: float


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One agent as stored."""

    id: str
    first_seen: float
    last_heartbeat_at: float | None
    interval_s: float | None
    last_seq: int
    version: str | None
    started_at: str | None


@dataclass(frozen=True, slots=True)
class CheckRow:
    """The latest known state of one check of one agent."""

    agent: str
    name: str
    status: str
    reason: str | None
    latency_ms: float | None
    at: str | None
    group: str | None
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class Incident:
    """One alert: opened when something went wrong, resolved when it recovered.

    Attributes:
        id: the incident number (also in the PagerDuty dedup key).
        kind: ``agent_silent``, ``check_down`` or ``check_flapping``.
        agent: the agent it is about.
        check: the check it is about, "" for agent-wide incidents.
        status: the status that opened it (``down``, ``degraded``, ``silent``, ``flapping``).
        summary: one human line.
        opened_at: wall time it opened.
        resolved_at: wall time it resolved, or None while open.
        notified: whether its trigger was sent to the channels (False while suppressed
            by flapping).
    """

    id: int
    kind: str
    agent: str
    check: str
    status: str
    summary: str
    opened_at: float
    resolved_at: float | None
    notified: bool


@dataclass(frozen=True, slots=True)
class Notification:
    """One pending delivery of an incident event to one channel."""

    id: int
    incident: Incident
    event: str  # "trigger" or "resolve"
    channel: str
    attempts: int
    next_attempt_at: float


# A channel's oldest pending delivery (channels deliver in order).
_QUEUE_HEAD: Final = (
    "n.state = 'pending' AND n.id = (SELECT min(m.id) FROM notifications m"
    " WHERE m.channel = n.channel AND m.state = 'pending')"
)

_INCIDENT_COLUMNS: Final = (
    "id, kind, agent, check_name, status, summary, opened_at, resolved_at, notified"
)


def _incident(row: sqlite3.Row | tuple[Any, ...]) -> Incident:
    return Incident(
        id=row[0], kind=row[1], agent=row[2], check=row[3], status=row[4], summary=row[5],
        opened_at=row[6], resolved_at=row[7], notified=bool(row[8]),
    )


class Storage:
    """The SQLite store of one receiver.

    Args:
        path: the database file (created with its tables when missing).
    """

    # Whether calls may run in several threads at once (one connection: no).
    concurrent: bool = False
    # Appended to a SELECT of rows the transaction will update: SQLite's writer
    # lock (BEGIN IMMEDIATE) already serialises them.
    _LOCK_ROWS: str = ""
    _LOCK_ROWS_SKIP_LOCKED: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        # isolation_level=None: transactions are explicit (see transaction()).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced before the 2xx goes out. The agent deletes
        # an acknowledged message, so NORMAL's window (a power cut losing the last
        # commits) would lose it for good.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "messages" not in tables:
            version = SCHEMA_VERSION  # a new file: the schema below is the current one
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(str(self.path), version, SCHEMA_VERSION)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for script in _MIGRATIONS[version:]:
                for statement in script.split(";"):
                    words = statement.split()
                    # A table this file does not have yet is created whole below.
                    if words[:2] == ["ALTER", "TABLE"] and words[2] not in tables:
                        continue
                    if statement.strip():
                        self._db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def schema_version(self) -> int:
        """The schema version of the database."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        return int(version)

    @classmethod
    def open_in(cls, state_dir: Path) -> Storage:
        """Opens (or creates) the database in ``state_dir``."""
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(state_dir / DATABASE_NAME)

    def close(self) -> None:
        """Closes the database."""
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection, shared by the store's other tables (history_store.py)."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen together or not at all (nesting joins the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- messages ---------------------------------------------------------------

    def has_message(self, agent: str, msg_id: str) -> bool:
        """Whether this agent's message with this id was already applied."""
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE agent = ? AND msg_id = ?", (agent, msg_id)
        ).fetchone()
        return row is not None

    def record_message(
        self, agent: str, msg_id: str, seq: int, kind: str, now: float
    ) -> tuple[int, int] | None:
        """Remembers an applied message and advances the agent's ``seq``.

        A gap row ``(expected, received)`` stands for the missing numbers
        ``expected .. received - 1``. A message that arrives late (another receiver
        took the later ones first, or a retry overtook it) fills its number in: the
        gap shrinks, splits or goes.

        Returns:
            ``(expected, received)`` when ``seq`` skipped numbers (the gap is
            recorded), else None.

        Raises:
            DuplicateMessage: this agent's message with this id was applied already
                (the caller's transaction must be rolled back).
        """
        self._ensure_agent(agent, now)
        inserted = self._db.execute(
            "INSERT INTO messages (msg_id, agent, seq, type, received_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (agent, msg_id) DO NOTHING",
            (msg_id, agent, seq, kind, now),
        )
        if inserted.rowcount == 0:
            raise DuplicateMessage(msg_id)
        # The agent's row is the lock that orders its messages across receivers.
        (last_seq,) = self._db.execute(
            "SELECT last_seq FROM agents WHERE id = ?" + self._LOCK_ROWS, (agent,)
        ).fetchone()
        gap = None
        # The first message after the receiver learns of an agent starts the count.
        if last_seq and seq > last_seq + 1:
            gap = (last_seq + 1, seq)
            self._db.execute(
                "INSERT INTO seq_gaps (agent, expected, received, received_at) VALUES (?, ?, ?, ?)",
                (agent, last_seq + 1, seq, now),
            )
        if seq > last_seq:
            self._db.execute("UPDATE agents SET last_seq = ? WHERE id = ?", (seq, agent))
        elif seq < last_seq:
            self._fill_gap(agent, seq)
        return gap

    def _fill_gap(self, agent: str, seq: int) -> None:
        """A late ``seq`` is no longer missing: the gap holding it shrinks or splits."""
        row = self._db.execute(
            "SELECT id, expected, received, received_at FROM seq_gaps WHERE agent = ?"
            " AND expected <= ? AND received > ?", (agent, seq, seq),
        ).fetchone()
        if row is None:
            return
        gap_id, expected, received, received_at = row
        self._db.execute("DELETE FROM seq_gaps WHERE id = ?", (gap_id,))
        for low, high in ((expected, seq), (seq + 1, received)):
            if low < high:
                self._db.execute(
                    "INSERT INTO seq_gaps (agent, expected, received, received_at)"
                    " VALUES (?, ?, ?, ?)", (agent, low, high, received_at),
                )

    def prune_messages(self, before: float) -> int:
        """Forgets message ids received before ``before``; returns how many."""
        cursor = self._db.execute("DELETE FROM messages WHERE received_at < ?", (before,))
        return cursor.rowcount

    def prune(self, retention: Retention, now: float) -> dict[str, int]:
        """Deletes history older than its retention, in one transaction.

        Returns:
            Rows deleted, by table.
        """
        deleted: dict[str, int] = {}
        with self.transaction():
            deleted["messages"] = self.prune_messages(now - retention.messages_s)
            deleted["state_history"] = self._db.execute(
                "DELETE FROM state_history WHERE received_at < ?",
                (now - retention.state_history_s,)).rowcount
            deleted["seq_gaps"] = self._db.execute(
                "DELETE FROM seq_gaps WHERE received_at < ?",
                (now - retention.seq_gaps_s,)).rowcount
            deleted["notifications"] = self._db.execute(
                "DELETE FROM notifications WHERE state != 'pending' AND created_at < ?",
                (now - retention.notifications_s,)).rowcount
            # An incident goes with its last delivery: the queue refers to it.
            deleted["incidents"] = self._db.execute(
                "DELETE FROM incidents WHERE resolved_at IS NOT NULL AND resolved_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM notifications n"
                " WHERE n.incident_id = incidents.id)",
                (now - retention.incidents_s,)).rowcount
        return deleted

    def seq_gap_counts(self) -> dict[str, int]:
        """How many gaps are recorded, by agent."""
        rows = self._db.execute("SELECT agent, count(*) FROM seq_gaps GROUP BY agent")
        return {agent: int(total) for agent, total in rows}

    def seq_gaps(self, agent: str) -> list[tuple[int, int, float]]:
        """The recorded gaps of an agent: ``(expected, received, received_at)``."""
        rows = self._db.execute(
            "SELECT expected, received, received_at FROM seq_gaps WHERE agent = ?"
            " ORDER BY expected",
            (agent,),
        )
        return [tuple(row) for row in rows]

    def count(self, table: str) -> int:
        """Rows in a table (for tests and the status page)."""
        if table not in TABLES:
            raise ValueError(f"no table {table!r}")
        (total,) = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(total)

    # -- whole tables (export and import) --------------------------------------

    def _table(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"no table {table!r}")
        return table

    def columns(self, table: str) -> list[str]:
        """The column names of a table."""
        rows = self._db.execute(f"PRAGMA table_info({self._table(table)})")
        return [row[1] for row in rows]

    def rows(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        """A table's column names and its rows, read as they are consumed."""
        cursor = self._db.execute(f"SELECT * FROM {self._table(table)}")
        return [column[0] for column in cursor.description], iter(cursor)

    def insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Inserts rows as they are (ids included); ``columns`` must be the table's."""
        unknown = set(columns) - set(self.columns(table))
        if unknown:
            raise ValueError(f"no columns {sorted(unknown)} in {table}")
        if rows:
            try:
                self._db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(columns))})", rows)
            except (sqlite3.IntegrityError, sqlite3.InterfaceError) as exc:
                # A row the file holds twice, or a value of no SQL type (a nested
                # JSON object): the file's fault, said in one line.
                raise StorageError(f"{table}: {exc}") from None

    def after_import(self) -> None:
        """What an import needs done once its rows are in (nothing, for SQLite)."""

    # -- agents and checks ------------------------------------------------------

    def _ensure_agent(self, agent: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO agents (id, first_seen) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            (agent, now),
        )

    def record_heartbeat(
        self, agent: str, now: float, interval_s: float, heartbeat: dict[str, Any]
    ) -> None:
        """Stores a heartbeat's receipt time, interval and fields."""
        self._ensure_agent(agent, now)
        self._db.execute(
            "UPDATE agents SET last_heartbeat_at = ?, interval_s = ?, version = ?,"
            " started_at = ?, heartbeat_json = ? WHERE id = ?",
            (now, interval_s, heartbeat.get("version"), heartbeat.get("started_at"),
             json.dumps(heartbeat), agent),
        )

    def last_heartbeat_json(self, agent: str) -> str | None:
        """The ``data`` of an agent's latest heartbeat as JSON, or None when it sent none."""
        row = self._db.execute(
            "SELECT heartbeat_json FROM agents WHERE id = ?", (agent,)).fetchone()
        return None if row is None else cast("str | None", row[0])

    def agents(self) -> list[AgentRow]:
        """Every agent that ever reported, by id."""
        rows = self._db.execute(
            "SELECT id, first_seen, last_heartbeat_at, interval_s, last_seq, version, started_at"
            " FROM agents ORDER BY id"
        )
        return [AgentRow(*row) for row in rows]

    def check(self, agent: str, name: str) -> CheckRow | None:
        """One check's latest state, or None when never reported."""
        row = self._db.execute(
            "SELECT agent, name, status, reason, latency_ms, at, group_name, host, port"
            " FROM checks WHERE agent = ? AND name = ?",
            (agent, name),
        ).fetchone()
        return CheckRow(*row) if row else None

    def checks_named(self, agent: str, names: list[str]) -> dict[str, CheckRow]:
        """The latest states of some checks of one agent, by name (absent: never reported).

        A few queries for a whole heartbeat instead of one per check: on
        PostgreSQL each query is a round trip.
        """
        found: dict[str, CheckRow] = {}
        for start in range(0, len(names), _NAMES_PER_QUERY):
            chunk = names[start:start + _NAMES_PER_QUERY]
            rows = self._db.execute(
                "SELECT agent, name, status, reason, latency_ms, at, group_name, host, port"
                f" FROM checks WHERE agent = ? AND name IN ({', '.join('?' * len(chunk))})",
                (agent, *chunk),
            )
            found.update((row[1], CheckRow(*row)) for row in rows)
        return found

    def checks(self, *, limit: int = -1, offset: int = 0,
               problems_first: bool = False) -> list[CheckRow]:
        """Checks' latest states, by agent and name (or those not ``up`` first).

        Args:
            limit: at most this many rows (-1: all).
            offset: rows to skip (pagination).
            problems_first: order checks that are not ``up`` before the others.
        """
        order = "(status = 'up'), agent, name" if problems_first else "agent, name"
        rows = self._db.execute(
            "SELECT agent, name, status, reason, latency_ms, at, group_name, host, port"
            f" FROM checks ORDER BY {order} LIMIT ? OFFSET ?",
            (_limit(limit), offset),
        )
        return [CheckRow(*row) for row in rows]

    def save_check(self, row: CheckRow, now: float) -> None:
        """Replaces a check's latest state (fields a message lacks keep their value)."""
        self._db.execute(
            "INSERT INTO checks (agent, name, status, reason, latency_ms, at, group_name, host,"
            " port, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (agent, name) DO UPDATE SET status = excluded.status,"
            " reason = excluded.reason, latency_ms = excluded.latency_ms, at = excluded.at,"
            " group_name = coalesce(excluded.group_name, checks.group_name),"
            " host = coalesce(excluded.host, checks.host),"
            " port = coalesce(excluded.port, checks.port),"
            " updated_at = excluded.updated_at",
            (row.agent, row.name, row.status, row.reason, row.latency_ms, row.at, row.group,
             row.host, row.port, now),
        )

    def add_state_change(
        self, agent: str, check: str, previous: str, current: str, at: str | None,
        now: float, msg_id: str,
    ) -> None:
        """Appends one status change to the history."""
        self._db.execute(
            "INSERT INTO state_history (agent, check_name, previous, current, at, received_at,"
            " msg_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (agent, check, previous, current, at, now, msg_id),
        )

    def state_history(self, agent: str, check: str) -> list[tuple[str, str]]:
        """``(previous, current)`` pairs of one check, oldest first."""
        rows = self._db.execute(
            "SELECT previous, current FROM state_history WHERE agent = ? AND check_name = ?"
            " ORDER BY id",
            (agent, check),
        )
        return [tuple(row) for row in rows]

    # -- incidents --------------------------------------------------------------

    def open_incident(
        self, kind: str, agent: str, check: str, status: str, summary: str, now: float,
        *, notified: bool = True,
    ) -> Incident | None:
        """Opens an incident unless one of the same kind is open for the same subject.

        Returns:
            The new incident, or None when one was already open.
        """
        # The partial unique index decides: of two receivers opening the same
        # incident at once, the second one's insert does nothing.
        row = self._db.execute(
            "INSERT INTO incidents (kind, agent, check_name, status, summary,"
            " opened_at, notified) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            " RETURNING id",
            (kind, agent, check, status, summary, now, int(notified)),
        ).fetchone()
        if row is None:
            return None
        return self.incident(int(row[0]))

    def resolve_incident(self, kind: str, agent: str, check: str, now: float) -> Incident | None:
        """Resolves the open incident of this kind and subject; None when none was open.

        Of two receivers resolving it at once only one gets it back (and notifies).
        """
        row = self._db.execute(
            "UPDATE incidents SET resolved_at = ? WHERE kind = ? AND agent = ?"
            " AND check_name = ? AND resolved_at IS NULL RETURNING id",
            (now, kind, agent, check),
        ).fetchone()
        return None if row is None else self.incident(int(row[0]))

    def mark_notified(self, incident_id: int, summary: str | None = None) -> bool:
        """Records that an incident's trigger goes to the channels after all.

        Args:
            incident_id: the incident.
            summary: its summary as it goes out (a parent's names what it held by
                then), or None to keep the one it was opened with.

        Returns:
            True for the one caller that changed it (that caller sends the trigger).
        """
        changed = self._db.execute(
            "UPDATE incidents SET notified = 1, summary = COALESCE(?, summary)"
            " WHERE id = ? AND notified = 0", (summary, incident_id))
        return changed.rowcount > 0

    def incident(self, incident_id: int) -> Incident:
        """One incident by id."""
        row = self._db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
        ).fetchone()
        return _incident(row)

    def open_incident_for(self, kind: str, agent: str, check: str) -> Incident | None:
        """The open incident of this kind and subject, if any."""
        row = self._db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE kind = ? AND agent = ?"
            " AND check_name = ? AND resolved_at IS NULL",
            (kind, agent, check),
        ).fetchone()
        return _incident(row) if row else None

    def open_incidents(self, limit: int = -1) -> list[Incident]:
        """The open incidents, oldest first (at most ``limit``; -1: all)."""
        rows = self._db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE resolved_at IS NULL ORDER BY id"
            " LIMIT ?", (_limit(limit),)
        )
        return [_incident(row) for row in rows]

    def incidents(self, limit: int = 100) -> list[Incident]:
        """The alert history, newest first."""
        rows = self._db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_incident(row) for row in rows]

    def incidents_opened_since(self, kind: str, agent: str, check: str, since: float) -> int:
        """How many incidents of this kind and subject opened at or after ``since``."""
        (total,) = self._db.execute(
            "SELECT count(*) FROM incidents WHERE kind = ? AND agent = ? AND check_name = ?"
            " AND opened_at >= ?",
            (kind, agent, check, since),
        ).fetchone()
        return int(total)

    def last_opened_at(self, kind: str, agent: str, check: str) -> float | None:
        """When the newest incident of this kind and subject opened."""
        (opened,) = self._db.execute(
            "SELECT max(opened_at) FROM incidents WHERE kind = ? AND agent = ? AND check_name = ?",
            (kind, agent, check),
        ).fetchone()
        return float(opened) if opened is not None else None

    # -- notifications (the durable delivery queue) ----------------------------

    def enqueue(self, incident_id: int, event: str, channels: list[str], now: float) -> None:
        """Queues one delivery of ``event`` per channel."""
        self._db.executemany(
            "INSERT INTO notifications (incident_id, event, channel, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, ?, ?)",
            [(incident_id, event, channel, now, now) for channel in channels],
        )

    def queue_heads(self) -> list[Notification]:
        """Each channel's oldest pending delivery (channels deliver in order)."""
        rows = self._db.execute(
            "SELECT n.id, n.incident_id, n.event, n.channel, n.attempts, n.next_attempt_at"
            f" FROM notifications n WHERE {_QUEUE_HEAD} ORDER BY n.id"
        ).fetchall()
        return [
            Notification(row[0], self.incident(row[1]), row[2], row[3], row[4], row[5])
            for row in rows
        ]

    def claim_due(self, now: float, lease_until: float) -> list[Notification]:
        """Takes each channel's queue head that is due and not held by another sender.

        The claim lasts until ``lease_until``: a receiver killed while sending
        leaves its claim behind, and another receiver takes the delivery over
        once the lease is past. A head held by someone else blocks its channel
        (channels deliver in order); ``SKIP LOCKED`` makes two receivers claiming
        at the same moment pass each other instead of waiting.
        """
        due = (
            "SELECT n.id, n.incident_id, n.event, n.channel, n.attempts, n.next_attempt_at"
            f" FROM notifications n WHERE {_QUEUE_HEAD} AND n.next_attempt_at <= ?"
            " AND n.claimed_until <= ? ORDER BY n.id"
        )
        # Nothing due (the usual case) costs a read, not a write transaction.
        if self._db.execute(due, (now, now)).fetchone() is None:
            return []
        with self.transaction():
            rows = self._db.execute(due + self._LOCK_ROWS_SKIP_LOCKED, (now, now)).fetchall()
            for row in rows:
                self._db.execute("UPDATE notifications SET claimed_until = ? WHERE id = ?",
                                 (lease_until, row[0]))
            return [
                Notification(row[0], self.incident(row[1]), row[2], row[3], row[4], row[5])
                for row in rows
            ]

    def queue_next_due(self) -> float | None:
        """When the earliest queue head becomes due (or its lease ends); None: empty."""
        (due,) = self._db.execute(
            "SELECT min(CASE WHEN n.claimed_until > n.next_attempt_at THEN n.claimed_until"
            f" ELSE n.next_attempt_at END) FROM notifications n WHERE {_QUEUE_HEAD}"
        ).fetchone()
        return None if due is None else float(due)

    def claim_job(self, name: str, period_s: float, now: float) -> bool:
        """Claims a periodic job (pruning) for this period, across every receiver.

        Returns:
            True for the one receiver that should run it now; False when it ran
            less than ``period_s`` ago (here or on another receiver).
        """
        claimed = self._db.execute(
            "INSERT INTO cluster_jobs (name, last_run_at) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at"
            " WHERE cluster_jobs.last_run_at <= ?",
            (name, now, now - period_s),
        )
        return claimed.rowcount > 0

    def mark_sent(self, notification_id: int, now: float) -> None:
        """A delivery succeeded."""
        self._db.execute(
            "UPDATE notifications SET state = 'sent', sent_at = ?, attempts = attempts + 1,"
            " claimed_until = 0 WHERE id = ?",
            (now, notification_id),
        )

    def mark_retry(self, notification_id: int, next_attempt_at: float, error: str) -> None:
        """A delivery failed and will be tried again at ``next_attempt_at``."""
        self._db.execute(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?,"
            " last_error = ?, claimed_until = 0 WHERE id = ?",
            (next_attempt_at, error, notification_id),
        )

    def mark_failed(self, notification_id: int, error: str) -> None:
        """A delivery the channel refused for good (kept, visible, never retried)."""
        self._db.execute(
            "UPDATE notifications SET state = 'failed', attempts = attempts + 1,"
            " last_error = ?, claimed_until = 0 WHERE id = ?",
            (error, notification_id),
        )

    def notifications(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Deliveries, oldest first, as plain rows (for tests and the API)."""
        query = (
            "SELECT id, incident_id, event, channel, attempts, state, last_error, sent_at"
            " FROM notifications"
        )
        args: tuple[str, ...] = ()
        if channel is not None:
            query += " WHERE channel = ?"
            args = (channel,)
        cursor = self._db.execute(query + " ORDER BY id", args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    # -- what the status page reads (bounded) -------------------------------------

    def status_counts(self) -> list[tuple[str, str, int]]:
        """``(agent, status, checks)`` for every agent and reported status."""
        rows = self._db.execute(
            "SELECT agent, status, count(*) FROM checks GROUP BY agent, status"
        )
        return [(str(row[0]), str(row[1]), int(row[2])) for row in rows]

    def checks_worst_first(self, silent_agents: list[str], limit: int) -> list[CheckRow]:
        """At most ``limit`` checks: those not up (or of a silent agent) first, then by
        group, agent and name."""
        marks = ", ".join("?" for _ in silent_agents) or "''"  # ids are never empty
        rows = self._db.execute(
            "SELECT agent, name, status, reason, latency_ms, at, group_name, host, port"
            f" FROM checks ORDER BY CASE WHEN status = 'up' AND agent NOT IN ({marks})"
            " THEN 1 ELSE 0 END, CASE WHEN group_name IS NULL THEN 1 ELSE 0 END,"
            " group_name, agent, name LIMIT ?",
            (*silent_agents, limit),
        )
        return [CheckRow(*row) for row in rows]

    def incidents_of(self, agent: str, check: str, limit: int) -> list[Incident]:
        """A check's incidents and its agent's silences, newest first."""
        rows = self._db.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE agent = ?"
            " AND check_name IN (?, '') ORDER BY id DESC LIMIT ?",
            (agent, check, limit),
        )
        return [_incident(row) for row in rows]
