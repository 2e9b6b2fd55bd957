"""A full disk under the state directory: the agent keeps checking, logs once, reports the drops.

The unit tests make SQLite itself refuse to grow the file (``PRAGMA
max_page_count``: a real ``SQLITE_FULL`` from a real file). The end-to-end test
mounts a small tmpfs of its own as the state directory of a real ``heartwire run``
(root, as in CI), fills it to the last byte, and frees it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent.config import loader as config
from agent.errors import OutboxFullError
from agent.model import Observation, Outcome, Reason, Result, Status
from agent.outbound import reporting as reporting_module
from agent.outbound.delivery import Delivery
from agent.outbound.reporting import Reporting
from agent.outbound.spool import (
    HEARTBEAT,
    RESULTS,
    STATE_CHANGE,
    AsyncOutbox,
    Outbox,
    OutboxDepth,
    open_outbox,
)
from agent.schedule.scheduler import Scheduler
from agent.service.daemon import scheduler_checks
from tests.faults.delivery_support import (
    RunningAgent,
    assert_exactly_once_in_order,
    bodies,
    committed_messages,
    first_seen,
    wait_for,
    write_agent_config,
)
from tests.netutil import open_port
from tests.receiver import running_receiver

FULL_LOG = "dropping (and counting) messages until space returns"


def _fill(box: Outbox) -> None:
    """Caps the file at its current size: the next write that grows it fails."""
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")


def _unfill(box: Outbox) -> None:
    box._db.execute("PRAGMA max_page_count = 1073741823")


def _store_until_full(box: Outbox) -> int:
    stored = 0
    for _ in range(10_000):
        try:
            box.enqueue_many([(RESULTS, {"pad": "x" * 1000}, None)])
        except OutboxFullError:
            return stored
        stored += 1
    raise AssertionError("the outbox never filled up")


def test_a_full_disk_counts_by_type_what_it_could_not_store_and_recovers(
    tmp_path: Path,
) -> None:
    box = open_outbox(tmp_path, agent_id="a", destinations=["main"], max_messages=10**6,
                      max_bytes=10**9)
    _fill(box)
    stored = _store_until_full(box)
    depth = box.depth()
    with pytest.raises(OutboxFullError, match="2 message"):
        box.enqueue_many([(STATE_CHANGE, {}, None), (RESULTS, {"pad": "y" * 5000}, None)])
    with pytest.raises(OutboxFullError):
        box.enqueue_heartbeat(lambda counts, depth: {"big": "z" * 50_000})
    assert box.depth() == depth  # the rolled-back writes left no trace
    assert box.unstored() == {"dropped.results": 2, "dropped.state_changes": 1,
                              "dropped.heartbeats": 1}
    assert len(box.pending("main", limit=10**6)) == stored

    _unfill(box)  # space returns
    beat = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(beat.body)["data"] == {"dropped.results": 2, "dropped.heartbeats": 1,
                                             "dropped.state_changes": 1,
                                             "dropped.set_aside": 0, "rejected": 0}
    again = box.enqueue_heartbeat(lambda counts, depth: dict(counts))
    assert json.loads(again.body)["data"]["dropped.results"] == 0
    assert box.unstored() == {}
    box.close()


def test_other_sqlite_errors_are_not_mistaken_for_a_full_disk(tmp_path: Path) -> None:
    box = open_outbox(tmp_path, agent_id="a", destinations=["main"], max_messages=100,
                      max_bytes=10**9)
    box._db.execute("DROP TABLE messages")  # a bug, not a full disk: it must surface
    with pytest.raises(Exception) as raised:
        box.enqueue_many([(RESULTS, {}, None)])
    assert not isinstance(raised.value, OutboxFullError)
    box.close()


def _reporting(tmp_path: Path) -> tuple[Reporting, Outbox]:
    loaded = config.parse([("agent.toml", {
        "agent": {"id": "agent-1"},
        "checks": {"db": {"host": "127.0.0.1", "port": 5432}},
        "destinations": {"main": {"kind": "native", "url": "https://central.test/in",
                                  "signing_key_env": "K", "send": "all"}},
    })])
    box = open_outbox(tmp_path, agent_id="agent-1", destinations=["main"], max_messages=10**6,
                      max_bytes=10**9)
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    checks = scheduler_checks(scheduler)
    return Reporting(loaded, AsyncOutbox(box, offload=False), Delivery([]), checks), box


async def test_reporting_logs_a_full_disk_once_per_episode_and_reports_the_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    reporting, box = _reporting(tmp_path)
    caplog.set_level(logging.INFO, logger="heartwire")
    for episode in range(2):
        _fill(box)
        _store_until_full(box)
        for n in range(20):  # a check result, its results batch and a heartbeat, each second
            reporting.on_result(Result("db", Status.UP, Observation(Outcome.OK, Reason.OPEN),
                                       0, float(n)), None)
            await reporting.flush_results()
            await reporting.send_heartbeat()
            await trio.sleep(1)
        assert reporting.storage_failing
        assert caplog.text.count(FULL_LOG) == episode + 1  # once per episode
        _unfill(box)  # space is back
        await reporting.send_heartbeat()
        data = json.loads(box.pending("main", types=[HEARTBEAT])[-1].body)["data"]
        # Some heartbeats may fit where the one they replace was; the results never did.
        assert data["dropped"]["results"] == 20
        assert data["dropped"]["results"] + data["dropped"]["heartbeats"] >= 20
        # The episode ends after a quiet minute, and says so once.
        await trio.sleep(reporting_module.STORAGE_QUIET_S)
        await reporting.send_heartbeat()
        assert not reporting.storage_failing
        assert caplog.text.count("stores messages again") == episode + 1
        box.acknowledge("main", box.counters()["last_seq"])  # delivered: room for more
    await reporting.outbox.aclose()


@contextlib.contextmanager
def _small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def _fill_to_the_last_byte(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):  # big blocks, then the last partial one byte by byte
            for _ in range(100_000):  # bounded; a tmpfs of a few MB fills long before
                try:
                    os.write(descriptor, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(descriptor)


def _heartbeats(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in first_seen(received) if b["type"] == HEARTBEAT]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root (CI is root)")
def test_heartwire_run_on_a_full_disk_keeps_checking_and_reports_the_drops(
    tmp_path: Path,
) -> None:
    with open_port() as target, running_receiver() as receiver, \
            _small_tmpfs(tmp_path / "mnt", "2m") as mount:
        config_file = write_agent_config(tmp_path, receiver.url + "/in", target_port=target,
                                         checks=20)
        # The state directory is the tmpfs (the config puts it at tmp_path/state).
        (tmp_path / "state").symlink_to(mount)
        agent = RunningAgent(config_file, tmp_path / "agent.log")
        filler = mount / "filler"
        try:
            wait_for(lambda: len(_heartbeats(bodies(receiver.snapshot()))) >= 1,
                     what="a first heartbeat")
            _fill_to_the_last_byte(filler)
            wait_for(lambda: FULL_LOG in agent.log(), what="the full-disk log line")
            before = committed_messages(tmp_path / "state")
            time.sleep(3)  # sixty checks, fifteen results batches, three heartbeats
            assert agent.proc.poll() is None, agent.log()
            assert agent.log().count(FULL_LOG) == 1
            full_runs = len(receiver.snapshot())
            filler.unlink()  # space returns
            wait_for(lambda: any(sum(b["data"]["dropped"].values()) > 0
                                 for b in _heartbeats(bodies(receiver.snapshot()))),
                     what="a heartbeat reporting the drops")
            beats = _heartbeats(bodies(receiver.snapshot()))
            wait_for(lambda: committed_messages(tmp_path / "state").last_seq > before.last_seq)
        finally:
            assert agent.stop() == 0, agent.log()
        received = bodies(receiver.snapshot())
    reported = next(b for b in beats if sum(b["data"]["dropped"].values()) > 0)
    dropped = reported["data"]["dropped"]
    assert dropped["results"] >= 5 and dropped["heartbeats"] >= 1, dropped
    # The checks ran all along: the run count grew by about 20 a second while full.
    first_runs = beats[0]["data"]["runs"]
    assert reported["data"]["runs"] - first_runs >= 40
    assert full_runs >= 1
    # The receiver never failed: a message came twice only if the agent sent it again
    # because the full disk would not take its cursor move. It must not.
    assert len(received) == len(first_seen(received))
    log = agent.log()
    assert "Traceback" not in log
    assert log.count(FULL_LOG) == 1  # not once per check, nor again on the way back
    assert log.count("not stored") + log.count("not delivered") <= 3, log
    # Messages the full disk refused never got a seq: the reports exceed the gaps.
    assert_exactly_once_in_order(received, through=before.last_seq,
                                 known_types=before.messages, exact_counts=False)


def _depth_in_file(box: Outbox) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(box.path, timeout=5)) as reader:
        count, size = reader.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages").fetchone()
    return int(count), int(size)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root (CI is root)")
def test_the_depth_is_what_the_file_holds_whatever_a_full_disk_refused(tmp_path: Path) -> None:
    with _small_tmpfs(tmp_path / "mnt", "1m") as mount:
        box = open_outbox(mount, agent_id="a", destinations=["main"], max_messages=10**6,
                          max_bytes=10**9)
        try:
            stored = box.enqueue_many([(RESULTS, {"pad": "x" * 2000}, None) for _ in range(20)])
            _fill_to_the_last_byte(mount / "filler")
            refused = 0
            for message in stored:  # delivered one by one; the disk refuses moving the cursor
                for attempt in range(3):
                    try:
                        box.acknowledge("main", message.seq)
                    except OutboxFullError:
                        refused += 1
                    try:
                        box.enqueue_heartbeat(lambda counts, depth: {"depth": depth.messages})
                    except OutboxFullError:
                        refused += 1
                    depth = box.depth()
                    assert depth.messages >= 0
                    assert (depth.messages, depth.bytes) == _depth_in_file(box), (message, attempt)
            assert refused > 0, "the disk never refused a write"
            (mount / "filler").unlink()
            box.acknowledge("main", stored[-1].seq)
            assert (box.depth().messages, box.depth().bytes) == _depth_in_file(box)
        finally:
            box.close()


def _wal_bytes(box: Outbox) -> int:
    wal = box.path.with_name(box.path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root (CI is root)")
def test_a_busy_outbox_on_a_small_disk_keeps_its_write_ahead_log_small(tmp_path: Path) -> None:
    # An agent that delivers everything at once still writes: a 2 MiB state disk
    # must not fill up with the write-ahead log of a nearly empty outbox.
    with _small_tmpfs(tmp_path / "mnt", "2m") as mount:
        box = open_outbox(mount, agent_id="a", destinations=["main"], max_messages=10**6,
                          max_bytes=256 * 1024 * 1024)
        try:
            largest_wal = 0
            for _ in range(1500):  # about 6 MiB written through the log
                box.enqueue_many([(RESULTS, {"pad": "x" * 2000}, None),
                                  (STATE_CHANGE, {"pad": "y" * 500}, None)])
                box.enqueue_heartbeat(lambda counts, depth: {"checks": ["z" * 500]})
                for message in box.pending("main"):
                    box.acknowledge("main", message.seq)
                largest_wal = max(largest_wal, _wal_bytes(box))
            assert largest_wal <= box.wal_limit_bytes, largest_wal
        finally:
            box.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root (CI is root)")
def test_an_outbox_works_on_a_disk_with_room_for_its_limit(tmp_path: Path) -> None:
    # Nothing is delivered; the outbox reaches its byte bound and drops by policy.
    # The disk has room for the bound (and the 32 KiB -shm file), and it must never
    # be the disk that refuses a message.
    limit = 1536 * 1024
    with _small_tmpfs(tmp_path / "mnt", "1600k") as mount:
        box = open_outbox(mount, agent_id="a", destinations=["main"], max_messages=10**6,
                          max_bytes=limit)
        try:
            reported: list[dict[str, int]] = []

            def heartbeat(counts: dict[str, int], depth: OutboxDepth) -> dict[str, int]:
                reported.append(counts)
                return dict(counts)

            for n in range(1500):  # about 4 MB of messages
                box.enqueue_many([(RESULTS, {"pad": "x" * 2000}, None)] * (1 + n % 3)
                                 + [(STATE_CHANGE, {"pad": "y" * 300}, None)] * (n % 2))
                if n % 10 == 0:
                    box.enqueue_heartbeat(heartbeat)
                assert box.stored_bytes() <= limit
            dropped = box.counters()["dropped.results"]
            dropped += sum(counts["dropped.results"] for counts in reported)
            assert dropped > 1000
            assert box.depth().messages > 200  # dropped by the bound, not emptied
        finally:
            box.close()
