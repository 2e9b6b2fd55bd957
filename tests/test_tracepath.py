"""The path trace: in network namespaces with a real router, and from agent to receiver.

client (10.91.1.2) — router (10.91.1.1 | 10.91.2.1) — server (10.91.2.2): the trace
reaches the server in two hops; with the router's link to the server cut it stops
at the router, hop 1, which says "network is unreachable"; with the server gone
from a link that is still up, nothing answers beyond the router.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from agent.central.config import load as load_central_config
from agent.checks import tracepath
from agent.common.network_path import describe_path, parse_path, path_data
from agent.common.signing import Ed25519SigningKey
from agent.model import (
    Hop,
    NetworkPath,
    Observation,
    Outcome,
    Reason,
    Result,
    StateChange,
    Status,
    Target,
)
from agent.outbound.reporting import state_change_data
from agent.schedule.scheduler import Scheduler
from agent.schedule.tracker import CheckTracker
from tests.central_support import Messages, make_config, running_central, signed
from tests.fakes import OPEN, REFUSED, ScriptedProbe, make_check
from tests.netutil import needs_ipv6
from tests.receiver import running_receiver
from tests.support.netns import ip, network_namespace, routed_path, run_in_namespace

# The trace's own budget, plus scheduling on a loaded machine.
ALLOWANCE_S = 1.0


def trace_from(namespace: str, address: str) -> tuple[NetworkPath, float]:
    async def run() -> tuple[NetworkPath, float]:
        started = trio.current_time()
        path = await tracepath.trace(address)
        return path, trio.current_time() - started

    return run_in_namespace(namespace, run)


def test_the_trace_reaches_the_server_through_the_router() -> None:
    with routed_path() as net:
        path, _ = trace_from(net.client, net.server_address)
    assert path.end == "reached"
    assert [(hop.hop, hop.address) for hop in path.hops] == [
        (1, net.router_address), (2, net.server_address)]
    assert all(hop.rtt_ms is not None and hop.rtt_ms < 1000 for hop in path.hops)
    assert describe_path(path) == "path to 10.91.2.2: reached in 2 hops"


def test_with_the_link_behind_the_router_cut_it_stops_at_the_router() -> None:
    with routed_path() as net:
        net.cut_behind_router()
        path, elapsed = trace_from(net.client, net.server_address)
    assert (path.end, path.detail) == ("unreachable", "network is unreachable")
    assert [(hop.hop, hop.address) for hop in path.hops] == [(1, net.router_address)]
    assert elapsed < 1.0  # the router answered at once: no need to wait out the budget
    assert describe_path(path) == (
        "path to 10.91.2.2: stopped after 10.91.1.1, hop 1 (network is unreachable)")


def test_when_nothing_answers_beyond_the_router_the_trace_ends_within_its_budget() -> None:
    with routed_path() as net:
        # The server leaves its link: the router's ARP gets no answer, and its
        # "host unreachable" would come only after the trace's budget.
        ip("-n", net.server, "addr", "del", "10.91.2.2/24", "dev", "to-router")
        path, elapsed = trace_from(net.client, net.server_address)
    assert path.end == "no_answer"
    assert [(hop.hop, hop.address) for hop in path.hops] == [(1, net.router_address)]
    assert tracepath.TRACE_BUDGET_S <= elapsed < tracepath.TRACE_BUDGET_S + ALLOWANCE_S
    assert describe_path(path) == (
        "path to 10.91.2.2: stopped after 10.91.1.1, hop 1 (no answer beyond)")


async def test_the_tracer_traces_a_target_at_most_once_per_interval() -> None:
    tracer = tracepath.PathTracer(min_interval_s=300.0)
    failed = Observation(Outcome.FAILED, Reason.REFUSED, address="127.0.0.1")
    first = await tracer.trace_for(Target("127.0.0.1", 1), failed)
    again = await tracer.trace_for(Target("127.0.0.1", 1), failed)
    other = await tracer.trace_for(Target("127.0.0.2", 1),
                                   Observation(Outcome.FAILED, Reason.REFUSED))
    assert first is not None and first.end == "reached"
    assert again is None
    assert other is not None and other.target == "127.0.0.2"  # resolved from the target


async def test_checks_that_go_down_together_share_one_trace() -> None:
    tracer = tracepath.PathTracer()
    failed = Observation(Outcome.FAILED, Reason.REFUSED, address="127.0.0.1")
    paths: list[NetworkPath | None] = []

    async def one() -> None:
        paths.append(await tracer.trace_for(Target("127.0.0.1", 1), failed))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert len(paths) == 3 and paths[0] is not None
    assert paths[1] is paths[0] and paths[2] is paths[0]
    assert await tracer.trace_for(Target("127.0.0.1", 1), failed) is None  # then: rate limit


def _schema_path_fields() -> tuple[set[str], set[str]]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    block = text[text.index("### JSON Schema"):]
    block = block[block.index("```json") + 7:]
    schema: dict[str, Any] = json.loads(block[:block.index("```")])["$defs"]
    path = schema["path"]
    return set(path["properties"]), set(path["properties"]["hops"]["items"]["properties"])


def test_the_path_on_the_wire_has_the_fields_the_protocol_doc_lists() -> None:
    path = NetworkPath("10.0.0.5", (Hop(1, "10.1.0.1", 0.3), Hop(2, None, None)), "no_answer")
    data = path_data(path)
    fields, hop_fields = _schema_path_fields()
    assert set(data) == fields
    assert set(data["hops"][0]) == hop_fields
    assert parse_path(json.loads(json.dumps(data))) == path


def _state_change_with(path: object) -> dict[str, Any]:
    message = Messages().state_change("db", "up", "down")
    message["data"]["path"] = path
    return message


async def _ingest(tmp_path: Path, message: dict[str, Any]) -> tuple[httpx.Response, Any]:
    async with running_central(make_config(tmp_path)) as (_, client):
        headers, body = signed(message)
        response = await client.post("/v1/ingest", content=body, headers=headers)
        incidents = (await client.get("/api/v1/incidents")).json()["incidents"]
    return response, incidents


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("far", "data.path must be an object"),
        ({"target": "db.internal", "hops": [], "end": "reached", "detail": None},
         "data.path.target must be an IP address"),
        ({"target": "10.0.0.5", "hops": [{"hop": 1, "address": None, "rtt_ms": None}] * 31,
          "end": "no_answer", "detail": None},
         "data.path.hops must be an array of at most 30 hops"),
        ({"target": "10.0.0.5", "hops": [{"hop": 99, "address": None, "rtt_ms": None}],
          "end": "no_answer", "detail": None},
         "data.path.hops[0].hop must be an integer from 1 to 30"),
        ({"target": "10.0.0.5", "hops": [{"hop": 1, "address": "<script>", "rtt_ms": 1}],
          "end": "no_answer", "detail": None},
         "data.path.hops[0].address must be an IP address"),
        ({"target": "10.0.0.5", "hops": [{"hop": 1, "address": None, "rtt_ms": -1}],
          "end": "no_answer", "detail": None},
         "data.path.hops[0].rtt_ms must be a non-negative number or null"),
        ({"target": "10.0.0.5", "hops": [], "end": "lost", "detail": None},
         "data.path.end must be one of reached, unreachable, no_answer, error"),
    ],
)
async def test_the_receiver_rejects_a_malformed_path(
    tmp_path: Path, path: object, message: str
) -> None:
    response, incidents = await _ingest(tmp_path, _state_change_with(path))
    assert response.status_code == 422
    assert (response.json()["error"], response.json()["message"]) == ("invalid_message", message)
    assert incidents == []


async def test_the_receiver_puts_the_path_in_the_incident_and_cuts_a_long_detail(
    tmp_path: Path,
) -> None:
    path = {"target": "10.0.0.5", "hops": [{"hop": 1, "address": "10.1.0.1", "rtt_ms": 0.4}],
            "end": "unreachable", "detail": "x" * 10_000}
    response, incidents = await _ingest(tmp_path, _state_change_with(path))
    assert response.status_code == 200, response.text
    assert [incident["summary"] for incident in incidents] == [
        f"dc1: check db is down (refused); path to 10.0.0.5: stopped after 10.1.0.1, hop 1 "
        f"({'x' * 200})"]


def test_agent_to_receiver_the_alert_says_where_the_path_stopped(tmp_path: Path) -> None:
    """The real agent, receiver and webhook inside the client namespace; the link is cut."""
    key = Ed25519SigningKey.generate()
    key_file = tmp_path / "agent.key"
    key_file.write_text(key.to_text() + "\n")
    key_file.chmod(0o600)

    async def scenario() -> tuple[dict[str, Any], Any]:
        # Made in the namespace's thread, so the webhook's socket lives there too.
        with running_receiver() as hook:
            central_toml = tmp_path / "central.toml"
            central_toml.write_text(
                f'[storage]\nstate_dir = "{tmp_path / "central-state"}"\n'
                '[alerts]\nretry_initial = "1s"\n'
                f'[agents.path-agent]\nkeys = ["{key.public_key().to_text()}"]\n'
                f'[channels.hook]\nkind = "webhook"\nurl = "{hook.url}/hook"\n'
            )
            async with running_central(load_central_config(central_toml),
                                       wall_clock=time.time) as (_, client):
                agent_toml = tmp_path / "agent.toml"
                agent_toml.write_text(
                    '[agent]\nid = "path-agent"\n'
                    '[checks.app]\nhost = "10.91.2.2"\nport = 5432\ninterval = "1s"\n'
                    'timeout = "500ms"\nfailures_before_down = 1\n'
                    '[central]\nheartbeat_interval = "5s"\n'
                    '[destinations.central]\nkind = "native"\n'
                    f'url = "{str(client.base_url).rstrip("/")}/v1/ingest"\n'
                    f'signing_key_file = "{key_file}"\n'
                )
                # The agent is its own process (it wants the main thread for signals),
                # started inside the same namespace.
                with (tmp_path / "agent.log").open("wb") as log:
                    agent = await trio.lowlevel.open_process(
                        ["ip", "netns", "exec", namespace, sys.executable, "-m", "agent",
                         "run", "--config", str(agent_toml),
                         "--state-dir", str(tmp_path / "agent-state")],
                        stdout=subprocess.DEVNULL, stderr=log,
                    )
                try:
                    with trio.fail_after(30):
                        while not hook.snapshot():  # noqa: ASYNC110
                            await trio.sleep(0.1)
                    incidents = (await client.get("/api/v1/incidents")).json()
                finally:
                    agent.terminate()
                    with trio.move_on_after(10):
                        await agent.wait()
                return json.loads(hook.snapshot()[0].body), incidents

    with routed_path() as net:
        net.cut_behind_router()
        namespace = net.client
        alert, incidents = run_in_namespace(net.client, scenario)
    expected = "path to 10.91.2.2: stopped after 10.91.1.1, hop 1 (network is unreachable)"
    assert alert["type"] == "incident.trigger"
    assert expected in alert["text"]
    assert expected in json.dumps(incidents)


class RecordingTracer(tracepath.PathTracer):
    """A tracer that takes two (virtual) seconds and notes the status meanwhile."""

    def __init__(self, trackers: Callable[[], dict[str, CheckTracker]]) -> None:
        super().__init__()
        self.trackers = trackers
        self.seen: list[Status] = []

    async def trace_for(self, target: Target, observation: Observation) -> NetworkPath | None:
        self.seen.append(self.trackers()["db"].status)
        await trio.sleep(2.0)
        return NetworkPath("10.0.0.5", (Hop(1, "10.1.0.1", 0.3),), "no_answer")


async def test_the_scheduler_traces_only_when_a_check_turns_down_and_before_it_shows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = ScriptedProbe()
    probe.script("db.test", [OPEN, REFUSED, REFUSED, REFUSED, OPEN])
    recorded: list[tuple[Result, StateChange | None]] = []
    scheduler: Scheduler | None = None
    tracer = RecordingTracer(lambda: scheduler.trackers if scheduler else {})
    scheduler = Scheduler(
        [make_check(interval_s=10.0, failures_before_down=2)], max_concurrent=4,
        on_result=lambda result, change: recorded.append((result, change)),
        probes=probe.registry(), path_tracer=tracer,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(55)
        nursery.cancel_scope.cancel()
    changes = [change for _, change in recorded if change is not None]
    assert [(c.previous, c.current) for c in changes] == [
        (Status.UNKNOWN, Status.UP), (Status.UP, Status.DOWN), (Status.DOWN, Status.UP)]
    # One trace: on the second failure in a row, while the check still showed up.
    assert tracer.seen == [Status.UP]
    assert changes[1].path is not None and changes[1].path.target == "10.0.0.5"
    assert changes[0].path is None and changes[2].path is None
    down_message = state_change_data(changes[1])
    assert describe_path(parse_path(down_message["path"])) == (
        "path to 10.0.0.5: stopped after 10.1.0.1, hop 1 (no answer beyond)")


@needs_ipv6
def test_an_ipv6_trace_reads_the_ipv6_error_queue() -> None:
    with network_namespace("trace6") as namespace:
        path, _ = trace_from(namespace, "::1")
    assert (path.end, [(hop.hop, hop.address) for hop in path.hops]) == ("reached", [(1, "::1")])
