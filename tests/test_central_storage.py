"""The storage interface, the same tests on both backends: SQLite and a private PostgreSQL.

What several receivers on one database rely on is tested here with two stores
opened on the same database, as two receivers would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.central.history_store import HistoryStore
from agent.central.storage import (
    DuplicateMessage,
    Retention,
    SchemaTooNew,
    Storage,
    StorageSettings,
    open_storage,
)
from tests.central_postgres import PrivatePostgres

OpenStore = Callable[[], Storage]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens stores on one database (SQLite file or PostgreSQL), closed after the test."""
    if request.param == "postgres":
        postgres: PrivatePostgres = request.getfixturevalue("postgres_server")
        settings = StorageSettings(tmp_path, postgres.new_database())
    else:
        settings = StorageSettings(tmp_path)
    opened: list[Storage] = []

    def open_one() -> Storage:
        opened.append(open_storage(settings))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def test_a_message_is_applied_once_and_seq_gaps_are_recorded(open_store: OpenStore) -> None:
    store = open_store()
    with store.transaction():
        assert store.record_message("dc1", "msg_a", 1, "heartbeat", 100.0) is None
    with pytest.raises(DuplicateMessage), store.transaction():
        store.record_message("dc1", "msg_a", 1, "heartbeat", 101.0)
    # Another agent's message with the same id is its own.
    with store.transaction():
        store.record_message("other", "msg_a", 1, "heartbeat", 101.0)
    with store.transaction():
        assert store.record_message("dc1", "msg_b", 4, "heartbeat", 102.0) == (2, 4)
    assert store.has_message("dc1", "msg_a") and not store.has_message("dc1", "msg_z")
    assert store.count("messages") == 3
    assert [gap[:2] for gap in store.seq_gaps("dc1")] == [(2, 4)]
    assert store.seq_gap_counts() == {"dc1": 1}


def test_a_late_seq_fills_its_gap_split_shrunk_or_closed(open_store: OpenStore) -> None:
    store = open_store()
    for seq, msg_id in ((1, "msg_1"), (6, "msg_6")):  # 2..5 missing
        store.record_message("dc1", msg_id, seq, "results", 1.0)
    store.record_message("dc1", "msg_3", 3, "results", 2.0)  # splits: 2 | 4..5
    assert [gap[:2] for gap in store.seq_gaps("dc1")] == [(2, 3), (4, 6)]
    store.record_message("dc1", "msg_5", 5, "results", 3.0)  # shrinks: 4
    store.record_message("dc1", "msg_2", 2, "results", 4.0)  # closes 2
    assert [gap[:2] for gap in store.seq_gaps("dc1")] == [(4, 5)]
    store.record_message("dc1", "msg_4", 4, "results", 5.0)
    assert store.seq_gaps("dc1") == []
    assert store.agents()[0].last_seq == 6


def test_one_incident_is_open_per_cause_and_is_resolved_once(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    opened = first.open_incident("agent_silent", "dc1", "", "silent", "dc1: silent", 10.0)
    assert opened is not None and opened.resolved_at is None
    assert second.open_incident("agent_silent", "dc1", "", "silent", "again", 11.0) is None
    assert second.open_incident_for("agent_silent", "dc1", "") == opened
    resolved = second.resolve_incident("agent_silent", "dc1", "", 20.0)
    assert resolved is not None and resolved.resolved_at == 20.0
    assert first.resolve_incident("agent_silent", "dc1", "", 21.0) is None
    again = first.open_incident("agent_silent", "dc1", "", "silent", "dc1: silent", 30.0)
    assert again is not None and again.id != opened.id
    assert [incident.id for incident in first.open_incidents()] == [again.id]
    assert first.incidents_opened_since("agent_silent", "dc1", "", 0.0) == 2
    assert first.last_opened_at("agent_silent", "dc1", "") == 30.0


def test_a_late_trigger_is_marked_by_one_receiver(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    down = first.open_incident("check_down", "dc1", "db", "down", "db down", 1.0,
                               notified=False)
    assert down is not None and not down.notified
    assert first.mark_notified(down.id) is True
    assert second.mark_notified(down.id) is False
    assert second.incident(down.id).notified


def test_deliveries_are_claimed_once_in_order_and_taken_over_after_the_lease(
    open_store: OpenStore,
) -> None:
    first, second = open_store(), open_store()
    incident = first.open_incident("check_down", "dc1", "db", "down", "db down", 1.0)
    assert incident is not None
    first.enqueue(incident.id, "trigger", ["hook", "mail"], 1.0)
    first.enqueue(incident.id, "resolve", ["hook"], 2.0)
    claimed = first.claim_due(5.0, lease_until=65.0)
    assert [(n.channel, n.event) for n in claimed] == [("hook", "trigger"), ("mail", "trigger")]
    # Held by the first receiver: the second gets nothing, not even the resolve
    # queued behind the trigger (a channel delivers in order).
    assert second.claim_due(6.0, lease_until=66.0) == []
    assert second.queue_next_due() == 65.0
    first.mark_sent(claimed[0].id, 7.0)
    assert [(n.channel, n.event) for n in second.claim_due(8.0, 68.0)] == [("hook", "resolve")]
    # The first receiver died holding "mail": the lease ends, another takes it over.
    assert second.claim_due(64.0, 124.0) == []
    taken = second.claim_due(66.0, 126.0)
    assert [(n.channel, n.event, n.attempts) for n in taken] == [("mail", "trigger", 0)]
    second.mark_retry(taken[0].id, 200.0, "timed out")
    assert second.queue_next_due() == 68.0  # hook's resolve, still claimed
    rows = {(row["channel"], row["event"]): row for row in first.notifications()}
    assert rows[("hook", "trigger")]["state"] == "sent"
    assert rows[("mail", "trigger")]["attempts"] == 1


def test_two_receivers_claiming_at_once_never_share_a_delivery(open_store: OpenStore) -> None:
    stores = [open_store(), open_store()]
    incident = stores[0].open_incident("check_down", "dc1", "db", "down", "db down", 1.0)
    assert incident is not None
    stores[0].enqueue(incident.id, "trigger", [f"channel{n}" for n in range(40)], 1.0)
    claims: list[list[int]] = [[], []]
    lock = threading.Lock()  # a SQLite connection takes one thread at a time

    def claim(index: int) -> None:
        for _ in range(20):
            if stores[index].concurrent:
                found = stores[index].claim_due(5.0, 100.0)
            else:
                with lock:
                    found = stores[index].claim_due(5.0, 100.0)
            claims[index].extend(n.id for n in found)

    threads = [threading.Thread(target=claim, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not set(claims[0]) & set(claims[1])
    assert len(claims[0]) + len(claims[1]) == 40


def test_a_periodic_job_is_claimed_once_per_period_across_receivers(
    open_store: OpenStore,
) -> None:
    first, second = open_store(), open_store()
    assert first.claim_job("prune", 3600.0, 10_000.0)
    assert not second.claim_job("prune", 3600.0, 10_001.0)
    assert not first.claim_job("prune", 3600.0, 13_599.0)
    assert second.claim_job("prune", 3600.0, 13_600.0)


def test_history_past_its_retention_is_pruned(open_store: OpenStore) -> None:
    store = open_store()
    store.record_message("dc1", "msg_old", 1, "results", 100.0)
    store.record_message("dc1", "msg_new", 3, "results", 1000.0)
    store.add_state_change("dc1", "db", "up", "down", None, 100.0, "msg_old")
    old = store.open_incident("check_down", "dc1", "db", "down", "db down", 100.0)
    assert old is not None
    store.resolve_incident("check_down", "dc1", "db", 150.0)
    retention = Retention(messages_s=500, state_history_s=500, seq_gaps_s=5000,
                          notifications_s=500, incidents_s=500)
    deleted = store.prune(retention, 1000.0)
    assert deleted == {"messages": 1, "state_history": 1, "seq_gaps": 0,
                       "notifications": 0, "incidents": 1}
    assert store.has_message("dc1", "msg_new") and store.count("seq_gaps") == 1


def test_checks_are_paged_problems_first_and_keep_what_a_message_lacks(
    open_store: OpenStore,
) -> None:
    from agent.central.storage import CheckRow

    store = open_store()
    for name, status in (("a", "up"), ("b", "down"), ("c", "up")):
        store.save_check(CheckRow("dc1", name, status, None, 1.5, None, "g", "h", 5432), 1.0)
    store.save_check(CheckRow("dc1", "a", "up", None, 2.0, None, None, None, None), 2.0)
    row = store.check("dc1", "a")
    assert row is not None and (row.latency_ms, row.group, row.port) == (2.0, "g", 5432)
    assert [c.name for c in store.checks(problems_first=True)] == ["b", "a", "c"]
    assert [c.name for c in store.checks(limit=1, offset=1)] == ["b"]
    assert store.check("dc1", "zzz") is None
    named = store.checks_named("dc1", ["b", "zzz", "a"])
    assert sorted(named) == ["a", "b"] and named["b"].status == "down"
    assert store.checks_named("dc1", []) == {}


def test_a_database_from_a_newer_receiver_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    version = store.schema_version()
    assert version >= 1
    if store.concurrent:
        store._db.execute("UPDATE heartwire_schema SET version = ?", (version + 1,))
    else:
        store._db.execute(f"PRAGMA user_version = {version + 1}")
    with pytest.raises(SchemaTooNew, match=f"schema version {version + 1}, newer than"):
        open_store()


def test_a_charts_observations_are_read_oldest_first_and_bounded(open_store: OpenStore) -> None:
    store = open_store()
    history = HistoryStore(store)
    with store.transaction():
        for at, status, latency in ((30.0, "up", 0.5), (10.0, "up", 0.7), (20.0, "down", None),
                                    (40.0, "degraded", 9.0), (50.0, "up", 0.4)):
            history.add_observation("dc1", "db", at, status, latency, "why")
        history.add_observation("dc1", "other", 25.0, "down", None, "why")
    assert history.latencies("dc1", "db", 10.0, 40.0, 10) == [
        (10.0, 0.7, False), (20.0, None, True), (30.0, 0.5, False), (40.0, 9.0, False)]
    assert history.latencies("dc1", "db", 0.0, 100.0, 2) == [(10.0, 0.7, False),
                                                              (20.0, None, True)]
