"""Several real receivers (``heartwire central`` processes) on one private PostgreSQL.

Messages are signed and sent over loopback the way an agent with several URLs
sends them: to one receiver, and to the next when that one does not answer. Alerts
go to a real loopback webhook that records every request, so a double or a
missing alert shows. One test kills receivers with SIGKILL while messages flow;
another stops PostgreSQL under running receivers.
"""

from __future__ import annotations

import datetime
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.central_postgres import Cluster, PrivatePostgres, private_postgres, write_config
from tests.central_support import AGENT_KEY, Messages, check_item, signed
from tests.receiver import Receiver, running_receiver
from tests.servers import free_ports

READY_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 5.0
HEARTBEAT_INTERVAL_S = 1.0


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@pytest.fixture
def cluster_of(tmp_path: Path, postgres_server: PrivatePostgres) -> Iterator[Any]:
    """Starts ``count`` receivers on a fresh database; yields (cluster, webhook, postgres)."""
    started: list[Cluster] = []
    with running_receiver() as webhook:

        def make(count: int, postgres: PrivatePostgres = postgres_server) -> Cluster:
            config = write_config(tmp_path, postgres.new_database(), webhook.url + "/hook")
            cluster = Cluster(config, free_ports(count))
            started.append(cluster)
            for index in range(count):
                cluster.start(index)
            return cluster

        try:
            yield make, webhook
        finally:
            for cluster in started:
                cluster.stop_all()


class Sender:
    """Sends signed messages to the first receiver that answers, like a failing-over agent."""

    def __init__(self, cluster: Cluster, client: httpx.AsyncClient) -> None:
        self.cluster = cluster
        self.client = client
        self.acknowledged: list[str] = []
        self.refused: list[int] = []
        self._turn = itertools.cycle(range(len(cluster.ports)))

    async def send_to(self, index: int, message: dict[str, Any]) -> int | None:
        """One attempt at one receiver: its status, or None when it did not answer."""
        headers, body = signed(message, timestamp=time.time())
        try:
            with trio.fail_after(SEND_TIMEOUT_S):
                response = await self.client.post(self.cluster.url(index) + "/v1/ingest",
                                                  content=body, headers=headers)
        except (httpx.TransportError, trio.TooSlowError):
            return None
        if response.status_code == 200:
            self.acknowledged.append(message["id"])
        else:
            self.refused.append(response.status_code)
        return response.status_code

    async def send(self, message: dict[str, Any], attempts: int = 30) -> None:
        """Delivers one message: the receivers in turn until one acknowledges (bounded)."""
        for _ in range(attempts):
            if await self.send_to(next(self._turn), message) == 200:
                return
            await trio.sleep(0.1)
        tail = self.cluster.log(0).read_text(errors="replace")[-3000:]
        raise AssertionError(f"message {message['id']} not acknowledged by any receiver "
                             f"(last answers {self.refused[-5:]}); receiver 0's log ends:\n{tail}")


def rows(postgres: PrivatePostgres, url: str, sql: str) -> list[list[str]]:
    """Rows of a query on the cluster's database, as text."""
    output = postgres.psql(sql, database=url.rsplit("/", 1)[1])
    return [line.split("|") for line in output.splitlines() if line]


def hook_deliveries(webhook: Receiver) -> list[tuple[str, str, str]]:
    """(webhook-id, event, incident kind) of every alert the webhook received."""
    return [(request.headers["webhook-id"], json.loads(request.body)["type"],
             json.loads(request.body)["incident"]["kind"]) for request in webhook.snapshot()]


def _database_url(cluster: Cluster) -> str:
    for line in cluster.config.read_text().splitlines():
        if line.startswith("url = "):
            return line.split('"')[1]
    raise AssertionError("no url")


async def _wait_until(condition: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.2)):  # the state is in other processes: polled
        if condition():
            return
        await trio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}")


async def test_two_receivers_store_each_message_once_with_true_gaps(
    cluster_of: Any, postgres_server: PrivatePostgres
) -> None:
    make, _ = cluster_of
    cluster = make(2)
    messages = Messages()
    async with httpx.AsyncClient() as client:
        sender = Sender(cluster, client)
        for _ in range(10):
            await sender.send(messages.heartbeat(interval_s=30))
        # A retried message reaching both receivers at the same moment is applied once.
        twice = messages.heartbeat(interval_s=30)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_to, 0, twice)
            nursery.start_soon(sender.send_to, 1, twice)
        # Out of order across receivers: 13 arrives at receiver 1 before 12 at 0.
        later = messages.heartbeat(interval_s=30, seq=13)
        earlier = messages.heartbeat(interval_s=30, seq=12)
        assert await sender.send_to(1, later) == 200
        assert await sender.send_to(0, earlier) == 200
        # A real hole: 14 and 15 never come.
        await sender.send(messages.heartbeat(interval_s=30, seq=16))
        agents = (await client.get(cluster.url(0) + "/api/v1/agents")).json()["agents"]
    url = _database_url(cluster)
    assert sender.acknowledged.count(twice["id"]) == 2
    assert rows(postgres_server, url, "SELECT count(*), count(DISTINCT msg_id) FROM messages") \
        == [["14", "14"]]
    assert rows(postgres_server, url, "SELECT expected, received FROM seq_gaps") == [["14", "16"]]
    assert (agents[0]["last_seq"], agents[0]["seq_gaps"]) == (16, 1)


# The test's own sender gives up on a request to a receiver killed mid-upload; httpx
# then leaves its request body's async generator to the garbage collector.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__':ResourceWarning")
async def test_receivers_killed_while_messages_flow_lose_nothing_and_alert_once(
    cluster_of: Any, postgres_server: PrivatePostgres
) -> None:
    make, webhook = cluster_of
    cluster = make(3)
    messages = Messages()
    kills = 0
    async with httpx.AsyncClient() as client:
        sender = Sender(cluster, client)

        async def deliver(until: float) -> None:
            number = 0
            while time.monotonic() < until:
                number += 1
                # The check goes down every fourth heartbeat and up at the next one:
                # one incident opened and resolved each time.
                status = "down" if number % 4 == 0 else "up"
                await sender.send(messages.heartbeat(
                    [check_item("db", status, at=_now_text())],
                    interval_s=HEARTBEAT_INTERVAL_S))
                await trio.sleep(0.1)

        async def chaos() -> None:
            nonlocal kills
            for round_number in range(4):
                await trio.sleep(4.0)
                victim = round_number % 3
                cluster.kill(victim)
                kills += 1
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(cluster.start, victim)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver, time.monotonic() + 20.0)
            nursery.start_soon(chaos)
        stopped_at = time.monotonic()
        url = _database_url(cluster)

        def stored() -> set[str]:
            return {row[0] for row in rows(postgres_server, url, "SELECT msg_id FROM messages")}

        def pending() -> int:
            return int(rows(postgres_server, url,
                            "SELECT count(*) FROM notifications WHERE state = 'pending'")[0][0])

        # The agent stopped: its dead man's switch fires once, from one receiver.
        await _wait_until(
            lambda: any(kind == "agent_silent" for _, _, kind in hook_deliveries(webhook)),
            30.0, "the agent_silent alert")
        silent_after = time.monotonic() - stopped_at
        await _wait_until(lambda: pending() == 0, 30.0, "every queued alert sent")
        await trio.sleep(3.0)  # every receiver sweeps a few more times
    assert kills == 4
    assert set(sender.acknowledged) <= stored()
    assert len(stored()) == len(set(sender.acknowledged))
    deliveries = hook_deliveries(webhook)
    # Each delivery id (incident, event, channel) arrived once: none twice, none lost.
    assert len(deliveries) == len({delivery_id for delivery_id, _, _ in deliveries}), deliveries
    queued = rows(postgres_server, url,
                  "SELECT count(*) FROM notifications WHERE state = 'sent'")[0][0]
    assert len(deliveries) == int(queued), (deliveries, queued)
    triggers = [d for d in deliveries if d[1:] == ("incident.trigger", "check_down")]
    assert len(triggers) >= 10
    assert [d[1:] for d in deliveries if d[2] == "agent_silent"] == [
        ("incident.trigger", "agent_silent")], deliveries
    assert rows(postgres_server, url,
                "SELECT count(*) FROM incidents WHERE kind = 'agent_silent'") == [["1"]]
    # Interval 1 s + grace 2 s, swept every second.
    assert silent_after < HEARTBEAT_INTERVAL_S + 2.0 + 5.0


@pytest.fixture
def own_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own (it is stopped and started again)."""
    yield from private_postgres()


async def test_a_stopped_database_is_a_503_and_the_receivers_recover_by_themselves(
    cluster_of: Any, own_postgres: PrivatePostgres
) -> None:
    make, _ = cluster_of
    cluster = make(2, own_postgres)
    messages = Messages()
    async with httpx.AsyncClient() as client:
        sender = Sender(cluster, client)
        await sender.send(messages.heartbeat(interval_s=30))
        own_postgres.stop()
        kept = messages.heartbeat(interval_s=30)
        for index in (0, 1):
            headers, body = signed(kept, timestamp=time.time())
            response = await client.post(cluster.url(index) + "/v1/ingest", content=body,
                                         headers=headers, timeout=30)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "30"
            assert response.json()["error"] == "storage_unavailable"
            page = await client.get(cluster.url(index) + "/api/v1/agents", timeout=30)
            assert page.status_code == 503
        own_postgres.start()
        for index in (0, 1):
            recovered = False
            for _ in range(60):  # bounded: 30 s
                status = await sender.send_to(index, messages.heartbeat(interval_s=30))
                if status == 200:
                    recovered = True
                    break
                await trio.sleep(0.5)
            assert recovered, f"receiver {index} did not recover"
        assert await sender.send_to(0, kept) == 200  # the agent's kept message goes in
    for process in cluster.processes.values():
        assert process.poll() is None  # neither receiver ended


def _max_seq_and_counts(postgres: PrivatePostgres, url: str) -> tuple[int, int, int]:
    (row,) = rows(postgres, url,
                  "SELECT coalesce(max(seq), 0), count(*), count(DISTINCT seq) FROM messages")
    return int(row[0]), int(row[1]), int(row[2])


async def test_an_agent_with_two_receiver_urls_delivers_through_either(
    cluster_of: Any, postgres_server: PrivatePostgres, tmp_path: Path
) -> None:
    make, webhook = cluster_of
    cluster = make(2)
    url = _database_url(cluster)
    key_file = tmp_path / "agent.key"
    key_file.write_text(AGENT_KEY.to_text() + "\n")  # type: ignore[attr-defined]
    key_file.chmod(0o600)
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        f'[agent]\nid = "dc1"\nstate_dir = "{tmp_path / "agent-state"}"\n'
        f'[checks.hook]\nhost = "127.0.0.1"\nport = {webhook.port}\ninterval = "1s"\n'
        'timeout = "500ms"\n'
        '[central]\nheartbeat_interval = "1s"\n'
        '[destinations.central]\nkind = "native"\n'
        f'url = ["{cluster.url(0)}/v1/ingest", "{cluster.url(1)}/v1/ingest"]\n'
        f'signing_key_file = "{key_file}"\n')
    log = (tmp_path / "agent.log").open("ab")
    agent = await trio.to_thread.run_sync(lambda: subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(agent_toml)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    try:
        await _wait_until(lambda: _max_seq_and_counts(postgres_server, url)[0] >= 3, 30.0,
                          "the agent's first messages")
        cluster.kill(0)  # the preferred receiver dies mid-stream
        killed_at_seq = _max_seq_and_counts(postgres_server, url)[0]
        await _wait_until(
            lambda: _max_seq_and_counts(postgres_server, url)[0] >= killed_at_seq + 3, 30.0,
            "messages through the second receiver")
        await trio.to_thread.run_sync(cluster.start, 0)
        cluster.kill(1)  # now the other one: the first, back, takes over
        second_killed_at = _max_seq_and_counts(postgres_server, url)[0]
        await _wait_until(
            lambda: _max_seq_and_counts(postgres_server, url)[0] >= second_killed_at + 3,
            30.0, "messages through the first receiver again")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)
        log.close()
    highest, stored, distinct = _max_seq_and_counts(postgres_server, url)
    # Every seq from 1 to the last arrived, each once: nothing lost, nothing doubled.
    assert stored == distinct == highest
    assert rows(postgres_server, url, "SELECT count(*) FROM seq_gaps") == [["0"]]
