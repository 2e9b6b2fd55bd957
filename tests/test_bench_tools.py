"""The benchmark's own instruments: the weighing receiver, the paced raw loop, the
profile summary. A figure in bench/RESULTS.md is only as true as these."""

from __future__ import annotations

import gzip
import json
import socket

from bench.common import open_listeners, open_receiver, wait_for_window
from bench.daemon_run import started_daemon
from bench.profile import top_costs
from bench.same_load import _fit
from bench.throughput import raw_loop


def test_the_receiver_weighs_a_post_byte_for_byte() -> None:
    body = json.dumps({"type": "heartbeat", "data": {"checks": [{"name": "c0"}] * 50}}).encode()
    with open_receiver(None) as receiver:
        host, port = receiver.url.split("//")[1].split("/")[0].split(":")
        head = (f"POST /v1/ingest HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(head.encode() + body)
            answer = client.recv(4096)
        records = receiver.records()
    assert answer.startswith(b"HTTP/1.1 202")
    assert len(records) == 1
    assert records[0]["type"] == "heartbeat"
    assert records[0]["wire_bytes"] == len(head) + len(body)
    assert records[0]["body_bytes"] == len(body)
    assert records[0]["gzip_bytes"] == len(gzip.compress(body, compresslevel=6))


def test_the_paced_raw_loop_starts_rate_checks_a_second() -> None:
    with open_listeners(None, addresses=["127.0.0.1"]) as targets:
        run = raw_loop(targets, concurrency=256, seconds=1.0, rate=200)
    # 20 ticks of 10 connects each; the last tick's may still be in flight at the end.
    assert 180 <= run["completed"] <= 200
    assert run["ok"] == run["completed"]
    assert run["cpu_s"] < run["wall_s"]  # it sleeps between ticks


def test_the_profile_summary_counts_own_time_at_the_leaf() -> None:
    collapsed = "\n".join([
        "main (bench/x.py);run (trio/_run.py);probe (agent/tcp.py);connect (agent/tcp.py) 30",
        "main (bench/x.py);run (trio/_run.py);probe (agent/tcp.py) 10",
        "main (bench/x.py);run (trio/_run.py);get_events (trio/_io.py) 20",
        "garbage line",
    ])
    costs = top_costs(collapsed, 2)
    assert costs.samples == 60
    assert costs.own == [("connect (agent/tcp.py)", 30), ("get_events (trio/_io.py)", 20)]
    # Only the agent's own frames, each counted once per sample however deep.
    assert costs.total == [("probe (agent/tcp.py)", 40), ("connect (agent/tcp.py)", 30)]


def test_the_fit_splits_cpu_into_a_fixed_part_and_a_part_per_check() -> None:
    # 5 ms of CPU a second whatever the load, plus 50 µs per check.
    runs = {rate: {"cpu_s": (0.005 + rate * 50e-6) * 20, "wall_s": 20.0} for rate in (1000, 100)}
    fixed, per_check = _fit(runs)
    assert abs(fixed - 0.005) < 1e-9
    assert abs(per_check - 50e-6) < 1e-12


def test_the_agent_worker_measures_the_daemon_after_the_start_is_delivered() -> None:
    with open_listeners(None, addresses=["127.0.0.1"]) as targets, \
            open_receiver(None) as receiver:
        with started_daemon(None, targets, receiver.url, checks=20, interval_s=1.0,
                            timeout_s=0.9, warmup_s=1.1, seconds=2.0) as worker:
            run = wait_for_window(worker, "bench.daemon_run")()
        records = receiver.records()
    # Every first run's unknown -> up went out before the window began.
    assert run["drained_after_s"] is not None
    assert sum(record["type"] == "state_change" for record in records) == 20
    assert 30 <= run["completed"] <= 50  # 20 checks every second for 2 s (edges ± 1 run)
    assert run["up"] == 20 and run["skipped"] == 0
    assert 0 < run["cpu_s"] < run["wall_s"]
