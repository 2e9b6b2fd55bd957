"""A real agent process against a destination that answers every request wrongly.

``heartwire run`` checks live TCP listeners on loopback and delivers to four native
destinations on one broken server (tests/hostile/broken_http.py). Each request
gets the next broken answer of the catalogue (corrupt gzip, bad chunking,
non-ASCII and huge headers, redirects, endless bodies, resets, garbage, and every
status code from 100 to 599); then the server turns honest. Meanwhile:

* the agent stays up, and logs no traceback (every broken answer is an ordinary,
  translated delivery failure);
* its checks keep their schedule (the observations it reports come at their
  interval throughout);
* once the server is honest, every committed message reaches every destination
  exactly once after deduplication, in order, each gap counted.

Bounded: the whole scenario takes about 7 s (hard limit 50 s).
"""

from __future__ import annotations

import datetime
import itertools
import json
from pathlib import Path
from typing import Any

import trio

from agent.common.signing import Ed25519SigningKey
from agent.outbound.messages import RESULTS
from tests.faults.delivery_support import (
    RunningAgent,
    assert_exactly_once_in_order,
    committed_messages,
    first_seen,
)
from tests.hostile.broken_http import CATALOGUE, every_status, start_broken_destination

DESTINATIONS = 4
CHECKS = 10
CHECK_INTERVAL_S = 1.0
# A check's observations may be further apart than its interval by this much (a
# busy machine, a slot wait), never more: a check stuck behind delivery would be.
SCHEDULE_SLACK_S = 1.5
SCENARIO_LIMIT_S = 50.0


def _config(directory: Path, url: str, target_port: int) -> Path:
    key = directory / "agent.key"
    key.write_text(Ed25519SigningKey.generate().to_text())
    key.chmod(0o600)
    checks = "".join(f"""
[checks.c{n}]
host = "127.0.0.1"
port = {target_port}
interval = "{CHECK_INTERVAL_S}s"
timeout = "500ms"
""" for n in range(CHECKS))
    destinations = "".join(f"""
[destinations.d{n}]
kind = "native"
url = "{url}/d{n}"
signing_key_file = "{key}"
send = "all"
timeout = "1s"
connect_timeout = "500ms"
""" for n in range(DESTINATIONS))
    config = directory / "agent.toml"
    config.write_text(f"""
[agent]
id = "hostile-agent"
state_dir = "{directory / 'state'}"

[central]
heartbeat_interval = "1s"
results_batch_interval = "50ms"
max_backoff = "10ms"
{checks}{destinations}""")
    return config


def _observation_times(received: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per check, the wall times (seconds since the epoch) of its observations."""
    times: dict[str, list[float]] = {}
    for body in first_seen(received):
        if body["type"] != RESULTS:
            continue
        for result in body["data"]["results"]:
            at = datetime.datetime.fromisoformat(result["at"].replace("Z", "+00:00"))
            times.setdefault(result["check"], []).append(at.timestamp())
    return {check: sorted(seen) for check, seen in times.items()}


async def _accept_and_close(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def test_an_agent_survives_every_broken_answer_and_then_delivers_everything_once(
    tmp_path: Path,
) -> None:
    plan = [*CATALOGUE, *every_status()]
    known: dict[int, str] = {}
    with trio.fail_after(SCENARIO_LIMIT_S):
        async with trio.open_nursery() as nursery:
            targets = await nursery.start(trio.serve_tcp, _accept_and_close, 0)
            target_port = targets[0].socket.getsockname()[1]
            server = await start_broken_destination(nursery, plan)
            config = _config(tmp_path, server.url, target_port)
            agent = RunningAgent(config, tmp_path / "agent.log")
            state = tmp_path / "state"
            try:
                while True:
                    committed = await trio.to_thread.run_sync(committed_messages, state)
                    known.update(committed.messages)
                    assert agent.proc.poll() is None, agent.log()
                    if server.honest.is_set() and committed.last_seq and \
                            not committed.messages:
                        break  # honest, and every destination is done with everything
                    await trio.sleep(0.2)
                through = committed.last_seq
                assert agent.proc.poll() is None, agent.log()
            finally:
                code = await trio.to_thread.run_sync(agent.stop)
            nursery.cancel_scope.cancel()

    log = agent.log()
    assert code == 0, log
    assert server.served == plan
    assert "Traceback" not in log and "unexpected" not in log, log
    for n in range(DESTINATIONS):
        received = [json.loads(r.body) for r in server.requests if r.path == f"/d{n}"]
        assert_exactly_once_in_order(received, through=through, known_types=known,
                                     exact_counts=False)
    # The checks kept their schedule all along: no gap between two observations of a
    # check is much longer than its interval.
    received = [json.loads(r.body) for r in server.requests if r.path == "/d0"]
    times = _observation_times(received)
    assert sorted(times) == [f"c{n}" for n in range(CHECKS)]
    for check, seen in times.items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
        assert max(gaps) <= CHECK_INTERVAL_S + SCHEDULE_SLACK_S, (check, max(gaps))
