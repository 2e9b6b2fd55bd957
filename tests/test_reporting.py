"""Heartbeats, state changes and batched results, end to end into a destination."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from agent.checks import ProbeKind
from agent.common.signing import Ed25519SigningKey, WebhookAuth, verify
from agent.config import loader as config
from agent.model import Observation, Outcome, Reason, Target
from agent.outbound.delivery import Deliverer, Delivery
from agent.outbound.reporting import Reporting, open_reporting
from agent.outbound.sinks import make_sink
from agent.outbound.spool import AsyncOutbox, open_outbox
from agent.schedule.scheduler import Scheduler
from agent.service.daemon import Daemon, scheduler_checks
from agent.service.liveness import delivery_progress
from tests.receiver import running_receiver

KEY = Ed25519SigningKey.generate()


def _config(**central: object) -> config.Config:
    return config.parse([("agent.toml", {
        "agent": {"id": "agent-1"},
        "central": {"heartbeat_interval": "30s", **central},
        "checks": {"db": {"host": "127.0.0.1", "port": 5432, "interval": "10s",
                          "timeout": "1s", "failures_before_down": 1}},
        "destinations": {"main": {"kind": "native", "url": "https://central.test/in",
                                  "signing_key_env": "K", "send": "all"}},
    })])


def _offline_reporting(
    tmp_path: Path, loaded: config.Config, *, max_messages: int, max_bytes: int, **kwargs: Any
) -> tuple[AsyncOutbox, Reporting]:
    """Reporting over a real outbox, with no destination delivering and a scheduler
    that is never run (tests feed it results by hand)."""
    outbox = AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["main"],
                                     max_messages=max_messages, max_bytes=max_bytes))
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    return outbox, Reporting(loaded, outbox, Delivery([]), scheduler_checks(scheduler),
                             **kwargs)


class _Flaky:
    """A probe that is up, then down from the given virtual time on."""

    def __init__(self, down_from: float) -> None:
        self.down_from = down_from

    async def __call__(self, target: Target, *, timeout: float) -> Observation:
        if trio.current_time() >= self.down_from:
            return Observation(Outcome.FAILED, Reason.REFUSED, detail="Connection refused")
        return Observation(Outcome.OK, Reason.OPEN, latency_ms=0.5)


async def test_heartbeats_on_interval_state_changes_at_once_results_batched(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    loaded = _config(results_batch_interval="20s")
    received: list[tuple[float, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        verify(request.headers, request.content, [KEY.public_key()])
        received.append((trio.current_time(), json.loads(request.content)))
        return httpx.Response(204)

    outbox = AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["main"],
                                     max_messages=1000, max_bytes=10**7), offload=False)
    destination = loaded.destinations[0]
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=WebhookAuth([KEY]))
    deliverer = Deliverer("main", make_sink(destination, None), client, outbox,
                          max_backoff_s=60, rng=random.Random(0))
    reporting: Reporting
    scheduler = Scheduler(loaded.checks, max_concurrent=4,
                          on_result=lambda r, c: reporting.on_result(r, c),
                          probes={"tcp": ProbeKind(_Flaky(down_from=45.0))},
                          rng=random.Random(0))
    reporting = Reporting(loaded, outbox, Delivery([deliverer]), scheduler_checks(scheduler))
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await nursery.start(reporting.run)
        await trio.sleep(95)
        nursery.cancel_scope.cancel()

    heartbeats = [(at, m) for at, m in received if m["type"] == "heartbeat"]
    assert [at for at, _ in heartbeats] == pytest.approx([0, 30, 60, 90], abs=0.01)
    changes = [(at, m) for at, m in received if m["type"] == "state_change"]
    assert [(m["data"]["previous"], m["data"]["current"]) for _, m in changes] == [
        ("unknown", "up"), ("up", "down")]
    down_at, down = changes[1]
    assert 45 <= down_at < 56  # delivered as soon as the check ran after t=45
    assert down["data"]["observation"]["reason"] == "refused"
    results = [m for _, m in received if m["type"] == "results"]
    assert len(results) == 4  # every 20 s
    assert sum(len(m["data"]["results"]) for m in results) >= 8
    seqs = [m["seq"] for _, m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    last = heartbeats[-1][1]["data"]
    assert last["checks"] == [{"name": "db", "group": None, "host": "127.0.0.1", "port": 5432,
                               "status": "down", "reason": "refused",
                               "latency_ms": None, "at": last["checks"][0]["at"]}]
    assert last["runs"] >= 9 and last["dropped"] == {"results": 0, "heartbeats": 0,
                                                     "state_changes": 0, "set_aside": 0}
    assert last["interval_s"] == 30.0 and last["rejected"] == 0


async def test_the_daemon_reports_to_a_real_receiver(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    key_file = tmp_path / "agent.key"
    key_file.write_text(KEY.to_text())
    key_file.chmod(0o600)
    with running_receiver(ok_body=b"") as receiver:
        (tmp_path / "agent.toml").write_text(f"""
[agent]
id = "it-agent"
state_dir = "/nonexistent/never-used"

[central]
heartbeat_interval = "1s"

[checks.local]
host = "127.0.0.1"
port = {port}
interval = "1s"
timeout = "500ms"

[destinations.main]
kind = "native"
url = "{receiver.url}/v1/ingest"
signing_key_file = "{key_file}"
""")
        daemon = Daemon(tmp_path / "agent.toml", state_dir=tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            with trio.fail_after(15):
                # Real sockets and the real clock: poll the recorded requests.
                while len({json.loads(r.body)["type"] for r in receiver.snapshot()}) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    listener.close()
    bodies = [json.loads(r.body) for r in receiver.snapshot()]
    assert {"heartbeat", "state_change"} <= {b["type"] for b in bodies}
    assert all(b["agent"] == "it-agent" for b in bodies)
    for request in receiver.snapshot():
        verify(request.headers, request.body, [KEY.public_key()])
    assert (tmp_path / "state" / "outbox.sqlite3").exists()


def _schema() -> dict[str, Any]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    block = text[text.index("### JSON Schema"):]
    block = block[block.index("```json") + 7:]
    schema: dict[str, Any] = json.loads(block[:block.index("```")])
    return schema


def test_messages_have_exactly_the_fields_the_protocol_doc_lists() -> None:
    from agent.model import Result, StateChange, Status
    from agent.outbound.messages import CheckSnapshot, heartbeat_data, state_change_data
    from agent.outbound.spool import OutboxDepth

    schema = _schema()["$defs"]
    result = Result("db", Status.DOWN, Observation(Outcome.FAILED, Reason.REFUSED), 2, 1e9)
    beat = heartbeat_data(started_at=1e9, interval_s=30, checks=[
        CheckSnapshot("db", Status.DOWN, result, group="Databases", host="db1", port=5432,
                      depends_on=("uplink",), service="orders-db")],
        runs=1, skipped=0, counts={}, depth=OutboxDepth(0, 0))
    assert set(beat) == set(schema["heartbeat"]["required"])
    # Every documented field, the optional group/host/port/depends_on/service included.
    assert set(beat["checks"][0]) == set(
        schema["heartbeat"]["properties"]["checks"]["items"]["properties"])
    assert (beat["checks"][0]["group"], beat["checks"][0]["port"]) == ("Databases", 5432)
    change = state_change_data(StateChange("db", Status.UP, Status.DOWN, result))
    assert set(change) == set(schema["state_change"]["required"])
    assert set(change["observation"]) == set(schema["observation"]["required"])


async def test_results_beyond_the_pending_limit_are_counted_as_dropped(tmp_path: Path) -> None:
    from agent.model import Result, Status

    loaded = _config()
    outbox, reporting = _offline_reporting(tmp_path, loaded, max_messages=1000,
                                           max_bytes=10**7, pending_results_limit=3)
    for n in range(5):
        reporting.on_result(Result("db", Status.UP, Observation(Outcome.OK, Reason.OPEN),
                                   0, float(n)), None)
    await reporting.flush_results()
    await reporting.send_heartbeat()
    batch, beat = outbox.sync.pending("main")
    assert [r["at"] for r in json.loads(batch.body)["data"]["results"]] == [
        "1970-01-01T00:00:02.000Z", "1970-01-01T00:00:03.000Z", "1970-01-01T00:00:04.000Z"]
    assert json.loads(beat.body)["data"]["dropped"]["results"] == 2
    await outbox.aclose()


async def test_a_large_batch_of_results_is_split_into_bounded_messages(tmp_path: Path) -> None:
    from agent.model import Result, Status
    from agent.outbound.reporting import RESULTS_PER_MESSAGE

    loaded = _config()
    outbox, reporting = _offline_reporting(tmp_path, loaded, max_messages=1000,
                                           max_bytes=10**8)
    count = 2 * RESULTS_PER_MESSAGE + 7
    for n in range(count):
        reporting.on_result(Result("db", Status.UP, Observation(Outcome.OK, Reason.OPEN),
                                   0, float(n)), None)
    await reporting.flush_results()
    bodies = [json.loads(message.body)["data"]["results"]
              for message in outbox.sync.pending("main")]
    assert [len(body) for body in bodies] == [RESULTS_PER_MESSAGE, RESULTS_PER_MESSAGE, 7]
    stamps = [r["at"] for body in bodies for r in body]
    assert stamps == sorted(stamps) and len(set(stamps)) == count  # all, in order
    await outbox.aclose()


async def test_watchdog_progress_and_status_of_delivery(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A dead central keeps the progress count moving; a wedged outbox stops it."""

    class WedgingOutbox(AsyncOutbox):
        """An outbox whose reads can hang, like SQLite on a dead network disk."""

        wedged = False

        async def pending(self, *args: Any, **kwargs: Any) -> Any:
            if self.wedged:
                await trio.sleep_forever()
            return await super().pending(*args, **kwargs)

    loaded = _config()
    outbox = WedgingOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["main"],
                                       max_messages=100, max_bytes=10**6), offload=False)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    deliverer = Deliverer("main", make_sink(loaded.destinations[0], None), client, outbox,
                          max_backoff_s=60, rng=random.Random(0), request_deadline_s=20)
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    reporting = Reporting(loaded, outbox, Delivery([deliverer]), scheduler_checks(scheduler))
    progress = delivery_progress(reporting.delivery)
    async with trio.open_nursery() as nursery:
        await nursery.start(reporting.delivery.run)
        await reporting.send_heartbeat()
        progress.restart(trio.current_time())
        for _ in range(30):  # 300 s of a central answering 503
            await trio.sleep(10)
            assert progress.stalled(trio.current_time()) is None
        assert reporting.status() == "outbox 1 waiting, main failing"
        outbox.wedged = True
        verdicts = []
        for _ in range(20):  # looked at every 10 s, as the supervisor does
            await trio.sleep(10)
            verdicts.append(progress.stalled(trio.current_time()))
        # Allowed: one request deadline (20 s) and two ticks (10 s).
        assert verdicts[:2] == [None, None]
        assert "delivery loop iterations has not advanced" in (verdicts[-1] or "")
        nursery.cancel_scope.cancel()
    await outbox.aclose()


async def test_a_stopping_agent_writes_what_is_still_in_memory(tmp_path: Path) -> None:
    from agent.model import Result, StateChange, Status

    loaded = _config()
    _, reporting = _offline_reporting(tmp_path, loaded, max_messages=1000, max_bytes=10**7)
    async with trio.open_nursery() as nursery:
        await nursery.start(reporting.run)
        result = Result("db", Status.DOWN, Observation(Outcome.FAILED, Reason.REFUSED), 1, 1e9)
        # No checkpoint between these and the cancel: the writer never sees them.
        reporting.on_result(result, StateChange("db", Status.UP, Status.DOWN, result))
        reporting.on_result(result, None)
        nursery.cancel_scope.cancel()
    reopened = open_outbox(tmp_path, agent_id="agent-1", destinations=["main"],
                           max_messages=1000, max_bytes=10**7)
    types = [m.type for m in reopened.pending("main")]
    assert types.count("state_change") == 1 and types.count("results") == 1
    reopened.close()


async def test_a_reload_that_changes_destinations_says_they_apply_at_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = _config()
    outbox, reporting = _offline_reporting(tmp_path, loaded, max_messages=100,
                                           max_bytes=10**6)
    reporting.note_reload(loaded)
    assert "next restart" not in caplog.text
    reporting.note_reload(_config(heartbeat_interval="10s"))
    assert "take effect at the next restart" in caplog.text
    await outbox.aclose()


def test_the_plain_http_warning_names_the_destination_without_its_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K", KEY.to_text())
    loaded = config.parse([("agent.toml", {
        "agent": {"id": "agent-1", "state_dir": str(tmp_path)},
        "destinations": {
            "main": {"kind": "native", "signing_key_env": "K",
                     "url": "http://ops:Pa55w0rdXY@central.test/in?token=T0kenValue"},
            "kuma": {"kind": "uptime-kuma", "url": "http://kuma.test",
                     "push_tokens": {"db": "KumaT0ken"}},
            "beat": {"kind": "betterstack",
                     "url": "http://uptime.betterstack.test/api/v1/heartbeat/BsT0ken"},
        },
    })])
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    reporting = open_reporting(loaded, scheduler_checks(scheduler))
    assert reporting is not None
    reporting.outbox.sync.close()
    warnings = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 3, caplog.text
    assert "http://ops:<redacted>@central.test/in?token=<redacted>" in warnings[0]
    assert "/api/v1/heartbeat/<redacted>" in warnings[2]
    for secret in ("Pa55w0rdXY", "T0kenValue", "BsT0ken"):
        assert secret not in caplog.text


async def test_a_heartbeat_of_many_checks_lets_the_checks_run_while_it_is_built(
    tmp_path: Path,
) -> None:
    # Thousands of checks: listing them all in one go would stop every check from
    # starting meanwhile. Another task must get the loop between parts of the list.
    checks = {f"c{n}": {"host": "127.0.0.1", "port": 5432} for n in range(2_000)}
    loaded = config.parse([("agent.toml", {
        "agent": {"id": "agent-1"}, "checks": checks,
        "destinations": {"main": {"kind": "native", "url": "https://central.test/in",
                                  "signing_key_env": "K"}},
    })])
    outbox = AsyncOutbox(open_outbox(tmp_path, agent_id="agent-1", destinations=["main"],
                                     max_messages=1000, max_bytes=10**8),
                          offload=False)  # so that only the listing can yield

    async def never_answers(target: Target, *, timeout: float) -> Observation:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None,
                          probes={"tcp": ProbeKind(never_answers)})
    reporting = Reporting(loaded, outbox, Delivery([]), scheduler_checks(scheduler))
    turns_while_building = 0
    building = False

    async def other_task() -> None:
        nonlocal turns_while_building
        while True:
            turns_while_building += building
            await trio.lowlevel.checkpoint()

    async def heartbeat() -> None:
        nonlocal building
        building = True
        await reporting.send_heartbeat()
        building = False

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        await heartbeat()
        nursery.cancel_scope.cancel()

    (beat,) = outbox.sync.pending("main")
    assert len(json.loads(beat.body)["data"]["checks"]) == 2_000  # every check, once
    assert turns_while_building >= 3  # at least once between every two parts of 500
    await outbox.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_plain_http_to_this_machines_loopback_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("K", KEY.to_text())
    loaded = config.parse([("agent.toml", {
        "agent": {"id": "agent-1", "state_dir": str(tmp_path)},
        "destinations": {"main": {"kind": "native", "signing_key_env": "K",
                                  "url": f"http://{host}:8470/v1/ingest"}},
    })])
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    reporting = open_reporting(loaded, scheduler_checks(scheduler))
    assert reporting is not None
    reporting.outbox.sync.close()
    assert "plain http" not in caplog.text


async def test_heartbeats_carry_each_checks_depends_on_and_service_from_the_config(
    autojump_clock: trio.testing.MockClock
) -> None:
    loaded = config.parse([("agent.toml", {
        "agent": {"id": "agent-1"},
        "checks": {"uplink": {"host": "127.0.0.1", "port": 1},
                   "db": {"host": "127.0.0.1", "port": 5432, "depends_on": ["uplink"],
                          "service": "orders-db"}},
    })])
    scheduler = Scheduler(loaded.checks, max_concurrent=1, on_result=lambda r, c: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        entries = [snapshot.data() for part in scheduler_checks(scheduler).snapshot(10)
                   for snapshot in part]
        nursery.cancel_scope.cancel()
    assert {entry["name"]: entry.get("depends_on") for entry in entries} == {
        "uplink": None, "db": ["uplink"]}
    assert {entry["name"]: entry.get("service") for entry in entries} == {
        "uplink": None, "db": "orders-db"}
