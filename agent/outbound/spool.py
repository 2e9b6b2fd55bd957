"""The durable outbox: every message is in SQLite before anyone tries to send it.

One SQLite file under ``[agent] state_dir`` (WAL mode, ``synchronous=FULL``) holds
the messages not yet delivered everywhere, one cursor per destination (the highest
sequence number it accepted), the next sequence number and the drop counters.
A destination's cursor moves only after it accepted a message (or refused it for
good), and a message is deleted once every cursor passed it, so a crash at any
point loses nothing that was committed and a restart resumes where each
destination stopped. Each destination reads in sequence order: delivery is
at-least-once and ordered per destination, and a dead destination holds back only
its own cursor.

Bounds (``max_outbox_messages``, ``max_outbox_bytes``) are enforced on every
insert; the byte bound counts what the outbox takes on disk (the database's pages
in use, and the write-ahead log, which is checkpointed early and truncated, so it
never outgrows its share), so an outbox works on any disk with room for its
limits. They are enforced by dropping, in this order: the oldest ``results``, then superseded
heartbeats, and state changes only when nothing else is left (the newest heartbeat
is never dropped: it is the liveness signal and carries the drop counts). A new heartbeat
replaces every older undelivered one (only the newest matters), except one that a
destination is sending at that moment: that one is set aside until the attempt ends,
so that a heartbeat is never both delivered and counted as dropped. Each dropped
message is counted by type, and the counts go out in the next heartbeat. The depth
(messages and bytes) is a counter in the file too, changed in the transaction that
changes the messages, so what is reported is what the file holds.

A full disk (or an I/O error) under the state directory does not stop the agent:
a write that SQLite refuses with ``SQLITE_FULL`` or ``SQLITE_IOERR`` is rolled
back, its messages are counted as dropped by type in memory (the file cannot take
the count either) and :class:`OutboxFullError` is raised; the first heartbeat
stored once space returns carries these counts too.

:class:`Outbox` is synchronous and owns one connection; :class:`AsyncOutbox` runs
each call in a worker thread (``trio.to_thread``), one at a time, so a slow disk
(an fsync per commit) never stalls the trio loop that runs the checks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import trio

from agent.common.signing import new_message_id
from agent.common.threads import run_abandoning_on_cancel
from agent.errors import OutboxFullError
from agent.outbound.messages import (
    HEARTBEAT,
    MESSAGE_TYPES,
    REPORTED_COUNTERS,
    RESULTS,
    STATE_CHANGE,
    encode,
    envelope,
    heartbeat_counts,
)

OUTBOX_FILE: Final = "outbox.sqlite3"

# Which type to drop first when the outbox is full: state changes last.
DROP_ORDER: Final = (RESULTS, HEARTBEAT, STATE_CHANGE)
_DROPPED: Final = {RESULTS: "dropped.results", HEARTBEAT: "dropped.heartbeats",
                   STATE_CHANGE: "dropped.state_changes"}
# What the messages table holds, kept beside it in the same transactions (so a
# rolled-back write cannot leave the reported depth wrong).
_DEPTH_MESSAGES: Final = "depth.messages"
_DEPTH_BYTES: Final = "depth.bytes"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_type ON messages (type, seq);
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# How long a write waits for another process's lock on the file before it counts as
# a storage failure (sqlite3's default).
_BUSY_TIMEOUT_MS: Final = 5000
# The most the write-ahead log may take of ``max_outbox_bytes`` (see wal_limit_bytes).
WAL_LIMIT_BYTES: Final = 1024 * 1024

# SQLite's primary result codes (the low byte of an extended code) that mean the
# disk, not the data, is the problem: the write may succeed once space returns, or
# once another process (an operator's sqlite3 shell) lets go of the file's lock.
_STORAGE_ERRORS: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
                                    sqlite3.SQLITE_BUSY})

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One stored message.

    Attributes:
        seq: the per-agent sequence number (never reused, survives restarts).
        id: the message id (``msg_...``), the receiver's deduplication key.
        type: heartbeat, state_change or results.
        body: the exact JSON bytes to send.
    """

    seq: int
    id: str
    type: str
    body: bytes

    def envelope(self) -> dict[str, Any]:
        """The body parsed back (for sinks that translate it to another API)."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """How much is waiting: messages and bytes of body."""

    messages: int
    bytes: int


def wal_limit_bytes(max_bytes: int) -> int:
    """The write-ahead log's share of ``max_bytes``: a quarter, at most ``WAL_LIMIT_BYTES``.

    SQLite checkpoints once the log holds a quarter of that, so the rest is room for
    the transaction that crosses the mark; after the checkpoint the log is truncated
    back to the limit, and a commit that leaves it larger truncates it at once.
    """
    return min(WAL_LIMIT_BYTES, max_bytes // 4)


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the disk is full, failing or locked (not a bug)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_ERRORS


class Outbox:
    """The outbox file, used from one thread at a time.

    Args:
        path: the SQLite file (its directory is created, mode 0700).
        agent_id: written into every envelope.
        destinations: the configured destination names; cursors of others are dropped.
        max_messages: the most messages kept.
        max_bytes: the most bytes the outbox takes on disk: the database's pages in
            use and the write-ahead log's share (:func:`wal_limit_bytes`).
        wall_clock: seconds since the epoch, for envelope timestamps.
    """

    def __init__(
        self,
        path: Path,
        *,
        agent_id: str,
        destinations: Sequence[str],
        max_messages: int,
        max_bytes: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Messages name internal hosts: only the agent's user may read them. SQLite
        # gives the -wal and -shm files the database file's mode, so set it first.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self.path = path
        self.agent_id = agent_id
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._wall_clock = wall_clock
        # Messages a full disk kept out of the file, by counter name: kept in memory
        # (the file cannot take them either) until a heartbeat is stored.
        self._unstored: dict[str, int] = {}
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a
        # transaction is exactly one method call. check_same_thread=False because
        # AsyncOutbox moves calls between worker threads (one at a time).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=_BUSY_TIMEOUT_MS / 1000)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before enqueue returns, also across power loss
        # (NORMAL in WAL mode survives a process crash but may lose the last commits
        # on power loss). bench/bench_outbox.py measures the cost.
        self._db.execute("PRAGMA synchronous=FULL")
        # The write-ahead log is part of the outbox's size: SQLite's default lets it
        # grow to about 4 MiB before a checkpoint (and never shrinks it), which alone
        # fills a small state disk. Checkpoint early, and truncate it back after.
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self.wal_limit_bytes = wal_limit_bytes(max_bytes)
        checkpoint_pages = max(1, self.wal_limit_bytes // self._page_size // 4)
        self._db.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
        self._db.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes}")
        self._db.executescript(_SCHEMA)
        # The highest seq each destination was handed by pending(): what it may be
        # sending right now (nothing, after a restart).
        self._handed: dict[str, int] = {}
        # Superseded heartbeats kept because a destination was sending them.
        self._superseded: set[int] = set()
        self._depth = OutboxDepth(0, 0)
        with self._transaction():
            # Counted afresh at every start: the counters then follow every change.
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages").fetchone()
            self._db.executemany(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(_DEPTH_MESSAGES, count), (_DEPTH_BYTES, size)])
            known = {row[0] for row in self._db.execute("SELECT destination FROM cursors")}
            for name in destinations:
                if name not in known:
                    # A new destination gets whatever is still waiting for the others.
                    self._db.execute("INSERT INTO cursors VALUES (?, 0)", (name,))
            self._db.executemany(
                "DELETE FROM cursors WHERE destination = ?",
                [(name,) for name in known - set(destinations)],
            )
            self._collect_garbage()
            self._enforce_bounds()  # the limits may be lower than when it was written
        self._depth = self._stored_depth()

    def close(self) -> None:
        """Closes the file (a WAL checkpoint happens on the last close)."""
        self._db.close()

    # -- writing ---------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction that turns a full disk into :class:`OutboxFullError`.

        Afterwards, committed or rolled back, the cached depth is what the file holds.
        """
        superseded = set(self._superseded)
        try:
            with self._transaction():
                yield
        except BaseException as exc:
            self._superseded = superseded  # as the rolled-back transaction left them
            if not isinstance(exc, sqlite3.Error) or not is_storage_error(exc):
                raise
            if self._db.in_transaction:  # a failed COMMIT leaves it open
                self._db.execute("ROLLBACK")
            raise OutboxFullError(f"cannot write to {self.path}: {exc}") from exc
        finally:
            if not self._db.in_transaction:
                self._depth = self._stored_depth()
        self._keep_wal_small()

    def _keep_wal_small(self) -> None:
        """Truncates the write-ahead log once a transaction left it above its share.

        The automatic checkpoint keeps it there in general; a transaction bigger than
        the rest of the share would otherwise leave it larger until the next one.
        """
        try:
            wal_bytes = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if wal_bytes > self.wal_limit_bytes:
            # Without waiting: while another process reads the file the log cannot
            # be truncated, and a write must not wait for that.
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                if not is_storage_error(exc):
                    raise  # a full disk: the log stays until the next commit
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")

    def _stored_depth(self) -> OutboxDepth:
        """The depth as the counters in the file (or the open transaction) say."""
        return OutboxDepth(self._counter(_DEPTH_MESSAGES), self._counter(_DEPTH_BYTES))

    @contextmanager
    def _storing(self, types: Sequence[str]) -> Iterator[None]:
        """A write transaction for new messages of ``types``; a full disk drops them.

        Raises:
            OutboxFullError: SQLite could not write (full disk, I/O error); the
                transaction was rolled back and the messages counted as dropped.
        """
        try:
            with self._writing():
                yield
        except OutboxFullError as exc:
            for msg_type in types:
                name = _DROPPED.get(msg_type)
                if name is not None:  # a maintenance message: the error tells its sender
                    self._unstored[name] = self._unstored.get(name, 0) + 1
            raise OutboxFullError(f"{len(types)} message(s) not stored: {exc}") from exc

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _add(self, name: str, amount: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )

    def _delete(self, where: str, args: Sequence[object]) -> list[str]:
        """Deletes messages (and counts them out of the depth). Returns their types."""
        rows = self._db.execute(
            f"DELETE FROM messages WHERE {where} RETURNING type, length(body)", args
        ).fetchall()
        if rows:
            self._add(_DEPTH_MESSAGES, -len(rows))
            self._add(_DEPTH_BYTES, -sum(row[1] for row in rows))
        return [row[0] for row in rows]

    def _insert(self, msg_type: str, data: Mapping[str, object], at: float) -> OutboxMessage:
        seq = self._counter("last_seq") + 1
        self._db.execute(
            "INSERT INTO counters VALUES ('last_seq', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (seq,))
        message_id = new_message_id()
        body = encode(envelope(msg_type, message_id, seq, self.agent_id, at, data))
        self._db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)",
                         (seq, message_id, msg_type, body))
        self._add(_DEPTH_MESSAGES)
        self._add(_DEPTH_BYTES, len(body))
        return OutboxMessage(seq, message_id, msg_type, body)

    def stored_bytes(self) -> int:
        """What the outbox may take on disk now: the database's pages in use (as the
        open transaction leaves them) and the write-ahead log's allowance."""
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free_pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free_pages) * self._page_size + self.wal_limit_bytes

    def _over_bounds(self) -> bool:
        if self._stored_depth().messages > self.max_messages:
            return True
        return self.stored_bytes() > self.max_bytes

    def _enforce_bounds(self) -> None:
        # The newest heartbeat is never dropped: it is one message, it says the agent
        # is alive, and it carries the drop counts.
        oldest = {
            RESULTS: "seq = (SELECT min(seq) FROM messages WHERE type = 'results')",
            HEARTBEAT: "seq = (SELECT min(seq) FROM messages WHERE type = 'heartbeat') "
                       "AND seq < (SELECT max(seq) FROM messages WHERE type = 'heartbeat')",
            STATE_CHANGE: "seq = (SELECT min(seq) FROM messages WHERE type = 'state_change')",
        }
        while self._over_bounds():
            for msg_type in DROP_ORDER:
                if self._delete(oldest[msg_type], ()):
                    self._add(_DROPPED[msg_type])
                    break
            else:
                return  # only the newest heartbeat is left

    def enqueue_many(
        self, items: Sequence[tuple[str, Mapping[str, object], float | None]]
    ) -> list[OutboxMessage]:
        """Stores several messages in one transaction (one fsync), in order.

        Raises:
            OutboxFullError: the disk refused the write; none was stored, each is counted.
        """
        with self._storing([msg_type for msg_type, _, _ in items]):
            stored = [self._insert(msg_type, data, self._wall_clock() if at is None else at)
                      for msg_type, data, at in items]
            self._enforce_bounds()
        return stored

    def _cursors(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT destination, delivered_seq FROM cursors"))

    def _being_sent(self, seq: int, cursors: Mapping[str, int]) -> bool:
        """Whether some destination was handed ``seq`` and has not finished with it."""
        return any(cursor < seq <= self._handed.get(name, 0) for name, cursor in cursors.items())

    def _supersede_heartbeats(self) -> None:
        """Retires the heartbeats a new one replaces.

        A heartbeat that some destination is sending (it was handed out by
        :meth:`pending` and not acknowledged) is only set aside: no destination is
        handed it again, and its fate is settled once nobody sends it any more
        (:meth:`_settle_superseded`). The others are dropped at once.
        """
        cursors = self._cursors()
        rows = self._db.execute("SELECT seq FROM messages WHERE type = 'heartbeat' AND seq > ?",
                                (min(cursors.values(), default=0),)).fetchall()
        for (seq,) in rows:
            if self._being_sent(seq, cursors):
                self._superseded.add(seq)
            else:
                self._drop_superseded(seq, cursors)

    def _settle_superseded(self) -> None:
        """Drops the set-aside heartbeats that no destination is sending any more."""
        if not self._superseded:
            return
        cursors = self._cursors()
        for seq in sorted(self._superseded):
            if not self._being_sent(seq, cursors):
                self._superseded.discard(seq)
                self._drop_superseded(seq, cursors)

    def _drop_superseded(self, seq: int, cursors: Mapping[str, int]) -> None:
        """Deletes a superseded heartbeat; counts it when no destination received it.

        One that no destination took is counted in ``dropped.heartbeats``, and the
        counts it carried go back into the counters for the next heartbeat. One that
        some destination took was delivered, its counts with it: counting it again
        would report it twice there.
        """
        row = self._db.execute("SELECT body FROM messages WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return  # collected or dropped by the bounds meanwhile
        self._delete("seq = ?", (seq,))
        if seq > max(cursors.values(), default=0):
            self._add(_DROPPED[HEARTBEAT])
            self._carry_forward_counts(row[0])

    def _carry_forward_counts(self, body: bytes) -> None:
        """The counts of a heartbeat that will never be sent go back into the counters."""
        data = json.loads(body).get("data", {})
        for name, amount in heartbeat_counts(data).items():
            self._add(name, amount)

    def enqueue_heartbeat(
        self, build: Callable[[dict[str, int], OutboxDepth], Mapping[str, object]]
    ) -> OutboxMessage:
        """Stores a new heartbeat, replacing older undelivered ones.

        ``build`` gets the drop/reject counters since the previous heartbeat and the
        outbox depth, and returns the heartbeat's data. Taking the counters, resetting
        them and storing the heartbeat is one transaction, so a crash can neither lose
        a count nor report it twice. The counts include what a full disk kept out.

        Raises:
            OutboxFullError: the disk refused the write; the heartbeat is counted as
                dropped and the counters stay for the next one.
        """
        with self._storing([HEARTBEAT]):
            self._supersede_heartbeats()
            counts = {name: self._counter(name) + self._unstored.get(name, 0)
                      for name in REPORTED_COUNTERS}
            self._db.execute(
                f"DELETE FROM counters WHERE name IN ({','.join('?' * len(REPORTED_COUNTERS))})",
                REPORTED_COUNTERS)
            message = self._insert(HEARTBEAT, build(counts, self._stored_depth()),
                                   self._wall_clock())
            self._enforce_bounds()
        self._unstored.clear()  # committed: the heartbeat carries them now
        return message

    # -- reading and acknowledging ----------------------------------------------

    def pending(
        self, destination: str, *, types: Collection[str] = MESSAGE_TYPES, limit: int = 100
    ) -> list[OutboxMessage]:
        """The next messages for ``destination``, oldest first.

        Messages of other types are passed over: when none of the wanted types is
        waiting, the cursor moves past the others so they can be collected.

        Raises:
            OutboxFullError: moving the cursor past them needed a write the disk refused.
        """
        marks = ",".join("?" * len(types))
        with self._writing():
            cursor = self._cursor(destination)
            # Reading again means the destination is done with what it was handed.
            self._handed[destination] = cursor
            self._settle_superseded()
            rows = self._db.execute(
                f"SELECT seq, id, type, body FROM messages WHERE seq > ? AND type IN ({marks}) "
                "ORDER BY seq LIMIT ?", (cursor, *types, limit + len(self._superseded))
            ).fetchall()
            rows = [row for row in rows if row[0] not in self._superseded][:limit]
            if not rows:
                last = self._counter("last_seq")
                if last > cursor:
                    self._move_cursor(destination, last)
        self._handed[destination] = rows[-1][0] if rows else cursor
        return [OutboxMessage(seq, msg_id, msg_type, bytes(body))
                for seq, msg_id, msg_type, body in rows]

    def _cursor(self, destination: str) -> int:
        row = self._db.execute("SELECT delivered_seq FROM cursors WHERE destination = ?",
                               (destination,)).fetchone()
        if row is None:
            raise KeyError(f"no outbox cursor for destination {destination!r}")
        return int(row[0])

    def _move_cursor(self, destination: str, seq: int) -> None:
        self._db.execute(
            "UPDATE cursors SET delivered_seq = max(delivered_seq, ?) WHERE destination = ?",
            (seq, destination))
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        self._delete("seq <= (SELECT coalesce(min(delivered_seq), 0) FROM cursors)", ())

    def acknowledge(self, destination: str, seq: int, *, rejected: bool = False,
                    set_aside: bool = False) -> None:
        """``destination`` is done with every message up to ``seq``.

        Args:
            destination: the destination's name.
            seq: the last message it accepted.
            rejected: it refused that message for good (a permanent 4xx): counted
                and reported in the next heartbeat.
            set_aside: delivery gave that message up after it failed unexpectedly
                again and again: counted and reported as ``dropped.set_aside``.

        Raises:
            OutboxFullError: the disk refused the write; the cursor did not move (the
                messages are sent again later, and receivers deduplicate them).
        """
        with self._writing():
            self._move_cursor(destination, seq)
            if rejected:
                self._add("rejected")
            if set_aside:
                self._add("dropped.set_aside")

    # -- inspecting --------------------------------------------------------------

    def depth(self) -> OutboxDepth:
        """Messages and bytes waiting (for any destination)."""
        return self._depth

    def cursor(self, destination: str) -> int:
        """The highest sequence number ``destination`` is done with."""
        return self._cursor(destination)

    def unstored(self) -> dict[str, int]:
        """Messages a full disk kept out since the last stored heartbeat, by counter."""
        return dict(self._unstored)

    def counters(self) -> dict[str, int]:
        """Every counter, for diagnostics and tests."""
        return {name: int(value) for name, value in
                self._db.execute("SELECT name, value FROM counters")}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not exc_type:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            # SQLite may already have rolled back by itself (SQLITE_FULL, IOERR).
            self._db.execute("ROLLBACK")


class AsyncOutbox:
    """:class:`Outbox` for trio code: each call runs in a worker thread, one at a time.

    Args:
        outbox: the synchronous outbox it wraps (and now owns).
        offload: run calls in a worker thread (the default). Tests under a
            ``MockClock`` with autojump pass False: the clock would otherwise jump
            to the next deadline while a call waits on its thread.
    """

    def __init__(self, outbox: Outbox, *, offload: bool = True) -> None:
        self.sync = outbox
        self._offload = offload
        self._limiter = trio.CapacityLimiter(1)
        self._changed = trio.Event()

    async def _run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        def call() -> R:
            return fn(*args, **kwargs)

        if not self._offload:
            await trio.lowlevel.checkpoint()
            return call()
        # Cancellation does not wait for a call stuck in a hung disk: the caller goes
        # on, the call finishes (and commits) in its thread, and the limiter stays
        # taken until it has, so calls on the connection never overlap.
        return await run_abandoning_on_cancel(call, self._limiter)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def changed(self) -> trio.Event:
        """An event set when the next message is stored (take it before reading)."""
        return self._changed

    async def enqueue_many(
        self, items: Sequence[tuple[str, Mapping[str, object], float | None]]
    ) -> list[OutboxMessage]:
        """See :meth:`Outbox.enqueue_many`."""
        stored = await self._run(self.sync.enqueue_many, items)
        self._notify()
        return stored

    async def enqueue_heartbeat(
        self, build: Callable[[dict[str, int], OutboxDepth], Mapping[str, object]]
    ) -> OutboxMessage:
        """See :meth:`Outbox.enqueue_heartbeat`."""
        stored = await self._run(self.sync.enqueue_heartbeat, build)
        self._notify()
        return stored

    async def pending(
        self, destination: str, *, types: Collection[str] = MESSAGE_TYPES, limit: int = 100
    ) -> list[OutboxMessage]:
        """See :meth:`Outbox.pending`."""
        return await self._run(self.sync.pending, destination, types=types, limit=limit)

    async def acknowledge(self, destination: str, seq: int, *, rejected: bool = False,
                          set_aside: bool = False) -> None:
        """See :meth:`Outbox.acknowledge`."""
        await self._run(self.sync.acknowledge, destination, seq, rejected=rejected,
                        set_aside=set_aside)

    async def aclose(self) -> None:
        """Closes the file once no call is running.

        Bounded by the caller's deadline: when a call is stuck in a hung disk the
        file is left open (the process is on its way out; SQLite recovers the log).
        """
        async with self._limiter:
            self.sync.close()



def open_outbox(
    state_dir: Path,
    *,
    agent_id: str,
    destinations: Sequence[str],
    max_messages: int,
    max_bytes: int,
    wall_clock: Callable[[], float] = time.time,
) -> Outbox:
    """Opens (or creates) ``state_dir/outbox.sqlite3``."""
    return Outbox(state_dir / OUTBOX_FILE, agent_id=agent_id, destinations=destinations,
                  max_messages=max_messages, max_bytes=max_bytes, wall_clock=wall_clock)
