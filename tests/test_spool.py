"""The SQLite outbox: durability, per-destination cursors, bounds and drop policy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from agent.outbound.messages import HEARTBEAT, MAINTENANCE, RESULTS, STATE_CHANGE
from agent.outbound.spool import AsyncOutbox, Outbox, OutboxDepth, OutboxMessage, open_outbox


def enqueue(box: Outbox, msg_type: str, data: dict[str, object], *,
            at: float | None = None) -> OutboxMessage:
    """Stores one message, as the agent's writer stores a batch of one."""
    return box.enqueue_many([(msg_type, data, at)])[0]


def _open(tmp_path: Path, destinations: tuple[str, ...] = ("a", "b"), *,
          max_messages: int = 1000, max_bytes: int = 10_000_000) -> Outbox:
    return open_outbox(tmp_path, agent_id="agent-1", destinations=destinations,
                       max_messages=max_messages, max_bytes=max_bytes, wall_clock=lambda: 1e9)


def _stored(box: Outbox) -> list[int]:
    """The seqs in the file, read without handing them to a destination."""
    return [seq for (seq,) in box._db.execute("SELECT seq FROM messages ORDER BY seq")]


def _heartbeat(box: Outbox) -> int:
    return box.enqueue_heartbeat(lambda counts, depth: {"counts": counts,
                                                        "depth": depth.messages}).seq


def test_envelope_has_id_seq_agent_and_type(tmp_path: Path) -> None:
    box = _open(tmp_path)
    stored = enqueue(box, STATE_CHANGE, {"check": "db"})
    envelope = json.loads(stored.body)
    assert envelope == {"type": "state_change", "id": stored.id, "seq": 1, "agent": "agent-1",
                        "timestamp": "2001-09-09T01:46:40.000Z", "data": {"check": "db"}}
    assert stored.id.startswith("msg_")
    # The database and its WAL files are private, whatever the umask.
    for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_sequence_numbers_and_pending_messages_survive_reopen(tmp_path: Path) -> None:
    box = _open(tmp_path)
    first = box.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(3)])
    box.acknowledge("a", first[0].seq)
    box.close()
    box = _open(tmp_path)
    assert enqueue(box, STATE_CHANGE, {"n": 3}).seq == 4
    assert [m.seq for m in box.pending("a")] == [2, 3, 4]
    assert [m.id for m in box.pending("b")][:3] == [m.id for m in first]


def test_a_message_is_deleted_only_when_every_destination_is_done(tmp_path: Path) -> None:
    box = _open(tmp_path)
    box.enqueue_many([(STATE_CHANGE, {"n": n}, None) for n in range(3)])
    box.acknowledge("a", 3)
    assert box.depth().messages == 3  # b, the dead one, still needs them
    assert [m.seq for m in box.pending("a")] == []
    box.acknowledge("b", 2)
    assert box.depth().messages == 1
    assert [m.seq for m in box.pending("b")] == [3]


def test_a_destination_removed_from_the_config_no_longer_holds_messages(tmp_path: Path) -> None:
    box = _open(tmp_path)
    enqueue(box, STATE_CHANGE, {})
    box.acknowledge("a", 1)
    box.close()
    box = _open(tmp_path, ("a",))
    assert box.depth() == OutboxDepth(0, 0)


def test_unwanted_types_are_passed_over_and_collected(tmp_path: Path) -> None:
    box = _open(tmp_path, ("native", "hc"))
    box.enqueue_many([(RESULTS, {"results": []}, None), (STATE_CHANGE, {}, None),
                      (RESULTS, {"results": []}, None)])
    wanted = (HEARTBEAT, STATE_CHANGE)
    assert [m.seq for m in box.pending("hc", types=wanted)] == [2]
    box.acknowledge("hc", 2)
    assert box.pending("hc", types=wanted) == []
    assert box.cursor("hc") == 3  # moved past the trailing results
    box.acknowledge("native", 3)
    assert box.depth().messages == 0


def test_a_new_heartbeat_replaces_undelivered_ones_and_is_counted(tmp_path: Path) -> None:
    box = _open(tmp_path)
    enqueue(box, STATE_CHANGE, {})
    _heartbeat(box)
    _heartbeat(box)
    third = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert [m.seq for m in box.pending("a")] == [1, 4]
    # Each heartbeat reports the one it replaced; the counts start afresh each time.
    assert json.loads(third.body)["data"]["dropped.heartbeats"] == 1
    box.acknowledge("a", 4)
    box.acknowledge("b", 4)
    fourth = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(fourth.body)["data"]["dropped.heartbeats"] == 0


def test_drop_policy_results_first_then_heartbeats_never_state_changes_first(
    tmp_path: Path,
) -> None:
    box = _open(tmp_path, max_messages=4)
    box.enqueue_many([(STATE_CHANGE, {"n": 1}, None), (RESULTS, {"n": 2}, None),
                      (RESULTS, {"n": 3}, None)])
    _heartbeat(box)  # seq 4: full now
    enqueue(box, STATE_CHANGE, {"n": 5})  # drops the oldest results (seq 2)
    assert _stored(box) == [1, 3, 4, 5]
    enqueue(box, STATE_CHANGE, {"n": 6})  # drops seq 3, the last results
    # Only state changes and the newest heartbeat are left: the heartbeat is kept
    # (it is not superseded), so the oldest state change goes.
    enqueue(box, STATE_CHANGE, {"n": 7})
    assert box._db.execute("SELECT seq, type FROM messages ORDER BY seq").fetchall() == [
        (4, HEARTBEAT), (5, STATE_CHANGE), (6, STATE_CHANGE), (7, STATE_CHANGE)]
    enqueue(box, STATE_CHANGE, {"n": 8})
    assert _stored(box) == [4, 6, 7, 8]
    # The next heartbeat replaces seq 4 and reports every drop since the last one.
    beat = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert [m.seq for m in box.pending("a")] == [6, 7, 8, 9]
    assert json.loads(beat.body)["data"] == {
        "dropped.results": 2, "dropped.heartbeats": 1, "dropped.state_changes": 2,
        "dropped.set_aside": 0, "rejected": 0}
    assert box.counters().get("dropped.state_changes", 0) == 0


def test_byte_bound_drops_results_before_a_state_change(tmp_path: Path) -> None:
    # The bound counts the file's pages in use and the write-ahead log's share.
    limit = 256 * 1024
    box = _open(tmp_path, max_bytes=limit)
    enqueue(box, STATE_CHANGE, {"pad": "s" * 50_000})
    enqueue(box, RESULTS, {"pad": "r" * 60_000})
    assert box.counters().get("dropped.results", 0) == 0
    enqueue(box, STATE_CHANGE, {"pad": "t" * 70_000})  # over the bound: results go
    assert [m.type for m in box.pending("a")] == [STATE_CHANGE, STATE_CHANGE]
    assert box.stored_bytes() <= limit
    assert box.counters()["dropped.results"] == 1
    # The write-ahead log is bounded too: a quarter of the limit.
    assert box.wal_limit_bytes == limit // 4
    wal = tmp_path / "outbox.sqlite3-wal"
    assert wal.stat().st_size <= box.wal_limit_bytes


def test_rejections_are_counted_for_the_next_heartbeat(tmp_path: Path) -> None:
    box = _open(tmp_path)
    enqueue(box, STATE_CHANGE, {})
    box.acknowledge("a", 1, rejected=True)
    beat = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(beat.body)["data"]["rejected"] == 1


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from agent.outbound.spool import open_outbox
    box = open_outbox(Path(sys.argv[1]), agent_id="w", destinations=["a"],
                      max_messages=10**6, max_bytes=10**9)
    n = 0
    while True:
        n += 1
        stored = box.enqueue_many([("state_change", {"n": n, "pad": "x" * 200}, None)])[0]
        print(stored.seq, stored.id, flush=True)
""")


def test_kill_9_while_writing_loses_nothing_committed(tmp_path: Path) -> None:
    """A writer is killed mid-stream; everything it reported committed is there."""
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    committed: list[tuple[int, str]] = []
    deadline = time.monotonic() + 20
    while len(committed) < 200 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seq, msg_id = line.split()
        committed.append((int(seq), msg_id))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()
    assert len(committed) >= 200, "the writer did not get going"

    box = _open(tmp_path, ("a",))
    stored = {m.seq: m.id for m in box.pending("a", limit=10**6)}
    assert all(stored.get(seq) == msg_id for seq, msg_id in committed)
    # Sequence numbers stay strictly increasing after the restart.
    assert enqueue(box, STATE_CHANGE, {}).seq == max(stored) + 1
    assert sorted(stored) == list(range(1, max(stored) + 1))


async def test_async_outbox_wakes_waiters_and_runs_off_the_trio_thread(tmp_path: Path) -> None:
    box = AsyncOutbox(_open(tmp_path))
    woke = trio.Event()

    async def waiter() -> None:
        await box.changed.wait()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await box.enqueue_many([(STATE_CHANGE, {}, None)])
        with trio.fail_after(5):
            await woke.wait()
    assert [m.seq for m in await box.pending("a")] == [1]
    await box.acknowledge("a", 1)
    await box.aclose()


def test_unknown_destination_cursor_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no outbox cursor for destination 'zz'"):
        _open(tmp_path).pending("zz")


def _reported(beat_body: bytes) -> dict[str, int]:
    return dict(json.loads(beat_body)["data"]["counts"])


def test_a_heartbeat_being_sent_when_a_new_one_comes_is_not_counted_as_dropped(
    tmp_path: Path,
) -> None:
    box = _open(tmp_path, ("a",))
    enqueue(box, STATE_CHANGE, {})
    first = _heartbeat(box)
    assert [m.seq for m in box.pending("a")] == [1, first]  # a is sending them
    second = box.enqueue_heartbeat(lambda counts, depth: {"counts": counts})
    box.acknowledge("a", 1)
    box.acknowledge("a", first)  # the first heartbeat arrived after all
    assert [m.seq for m in box.pending("a")] == [second.seq]
    box.acknowledge("a", second.seq)
    third = box.enqueue_heartbeat(lambda counts, depth: {"counts": counts})
    # Delivered, so neither heartbeat counts it as dropped.
    assert _reported(second.body)["dropped.heartbeats"] == 0
    assert _reported(third.body)["dropped.heartbeats"] == 0


def test_a_superseded_heartbeat_whose_sending_failed_is_counted_once_and_never_sent(
    tmp_path: Path,
) -> None:
    box = _open(tmp_path, ("a",))
    first = _heartbeat(box)
    assert [m.seq for m in box.pending("a")] == [first]  # sending it fails...
    second = box.enqueue_heartbeat(lambda counts, depth: {"counts": counts})
    assert [m.seq for m in box.pending("a")] == [second.seq]  # ... a reads again
    third = box.enqueue_heartbeat(lambda counts, depth: {"counts": counts})
    assert [m.seq for m in box.pending("a")] == [third.seq]
    box.acknowledge("a", third.seq)
    fourth = box.enqueue_heartbeat(lambda counts, depth: {"counts": counts})
    dropped = [_reported(beat.body)["dropped.heartbeats"] for beat in (second, third, fourth)]
    assert sum(dropped) == 2  # the first and the second, each once


async def test_a_call_stuck_on_a_locked_file_is_abandoned_when_cancelled(tmp_path: Path) -> None:
    outbox = AsyncOutbox(_open(tmp_path, ("a",)))
    with contextlib.closing(sqlite3.connect(outbox.sync.path, isolation_level=None,
                                            timeout=10)) as other_process:
        other_process.execute("BEGIN IMMEDIATE")  # the outbox's writes wait for this lock
        started = time.monotonic()
        with trio.move_on_after(0.2):
            await outbox.enqueue_many([(STATE_CHANGE, {"n": 1}, None)])
        waited_s = time.monotonic() - started
        other_process.execute("ROLLBACK")
    assert waited_s < 1.0, f"cancelling took {waited_s:.1f}s"
    # The abandoned call still ran to its end (and committed) before the next one.
    stored = await outbox.enqueue_many([(STATE_CHANGE, {"n": 2}, None)])
    assert stored[0].seq == 2
    await outbox.aclose()


def test_a_maintenance_message_is_never_dropped_to_make_room(tmp_path: Path) -> None:
    box = _open(tmp_path, max_messages=3)
    window = enqueue(box, MAINTENANCE, {"action": "start", "duration_s": 60.0, "checks": [],
                                        "reason": None})
    for index in range(5):
        enqueue(box, RESULTS, {"results": [index]})
    assert window.seq in _stored(box)
    assert [message.type for message in box.pending("a", types=(MAINTENANCE,))] == [MAINTENANCE]
    assert box.counters()["dropped.results"] >= 3
    box.close()
