"""The outbox: enqueue rate, and the time to drain an hour of results, beside baselines.

Run: .venv/bin/python -m bench.outbox [--write bench/RESULTS-outbox.md] [--hours H]

1. Enqueue rate: messages per second into the outbox (synchronous=FULL, WAL), one
   per transaction (a state change) and 500 per transaction (what the writer task
   does with a burst), beside bare ``sqlite3`` INSERTs of the same bytes with the
   same pragmas in the same run.
2. Drain: one hour of 1,000 checks every 10 s is 360,000 observations. With the
   default ``results_batch_interval`` (10 s) they are 360 ``results`` messages of
   1,000 observations each. The real delivery loop (outbox cursor, Standard
   Webhooks signature, one request per message as the protocol says) sends them
   to the recording loopback receiver the tests use; the baseline is a bare httpx
   POST loop of the same bodies to the same receiver, unsigned, no outbox.
3. The worst case the protocol allows: every observation a message of its own
   (state changes of 1,000 flapping checks). Measured on 5,000 messages, the time
   for 360,000 is extrapolated.

Every figure is printed with its ratio to the baseline run just before it.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.common.signing import Ed25519SigningKey, WebhookAuth  # noqa: E402
from agent.common.timefmt import rfc3339  # noqa: E402
from agent.config.destinations import DestinationConfig  # noqa: E402
from agent.outbound.delivery import Deliverer  # noqa: E402
from agent.outbound.messages import RESULTS, STATE_CHANGE  # noqa: E402
from agent.outbound.sinks import make_sink  # noqa: E402
from agent.outbound.spool import (  # noqa: E402
    AsyncOutbox,
    Outbox,
    open_outbox,
)
from bench.common import time_until_delivered  # noqa: E402
from tests.receiver import running_receiver  # noqa: E402

CHECKS = 1_000
INTERVAL_S = 10.0
BATCH_INTERVAL_S = 10.0
WRITER_BATCH = 500
AIM_DRAIN_S = 60.0


def observation(n: int, at: float) -> dict[str, Any]:
    """One observation the size and shape the agent writes."""
    return {"check": f"service-{n:04d}", "status": "up", "reason": "open",
            "latency_ms": 0.412, "dns_ms": None, "address": f"10.0.{n // 250}.{n % 250}:5432",
            "detail": None, "consecutive_failures": 0, "at": rfc3339(at)}


def _open(directory: Path) -> Outbox:
    return open_outbox(directory, agent_id="bench", destinations=["main"],
                       max_messages=10_000_000, max_bytes=10**12)


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10,.0f}/s"


def bench_enqueue(count: int, lines: list[str]) -> None:
    """Outbox enqueue vs bare SQLite inserts, one and 500 per transaction."""
    data = {"check": "postgres-primary", "previous": "up", "current": "down",
            "observation": observation(1, time.time())}
    for per_txn in (1, WRITER_BATCH):
        with tempfile.TemporaryDirectory() as directory:
            db = sqlite3.connect(Path(directory) / "bare.sqlite3", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE m (seq INTEGER PRIMARY KEY, id TEXT, type TEXT, body BLOB)")
            body = repr(data).encode()
            start = time.perf_counter()
            for _ in range(count // per_txn):
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO m (id, type, body) VALUES (?, ?, ?)",
                               [("msg_x", STATE_CHANGE, body)] * per_txn)
                db.execute("COMMIT")
            bare = time.perf_counter() - start
            db.close()
        with tempfile.TemporaryDirectory() as directory:
            box = _open(Path(directory))
            start = time.perf_counter()
            for _ in range(count // per_txn):
                box.enqueue_many([(STATE_CHANGE, data, None)] * per_txn)
            ours = time.perf_counter() - start
            box.close()
        lines.append(f"| enqueue, {per_txn} per transaction | {_rate(count, ours)} | "
                     f"{_rate(count, bare)} (bare SQLite INSERT) | {bare / ours:.2f} |")


def _deliverer(url: str, outbox: AsyncOutbox, types_all: bool) -> Deliverer:
    destination = DestinationConfig(name="main", kind="native", url=url, timeout_s=30,
                                    connect_timeout_s=5, send="all" if types_all else "changes")
    client = httpx.AsyncClient(auth=WebhookAuth([Ed25519SigningKey.generate()]),
                               trust_env=False, timeout=httpx.Timeout(30))
    return Deliverer("main", make_sink(destination, None), client, outbox, max_backoff_s=1,
                     rng=random.Random(0), request_deadline_s=60)


async def _drain(outbox: AsyncOutbox, url: str, count: int) -> float:
    return await time_until_delivered(_deliverer(url, outbox, types_all=True), count)


async def _bare_posts(url: str, bodies: list[bytes]) -> float:
    async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30)) as client:
        start = time.perf_counter()
        for body in bodies:
            response = await client.post(url, content=body,
                                         headers={"content-type": "application/json"})
            response.raise_for_status()
        return time.perf_counter() - start


def bench_drain(directory: Path, items: list[tuple[str, dict[str, Any], float | None]],
                observations: int, label: str, scale: float, lines: list[str]) -> float:
    """Fills an outbox with ``items``, drains it; the bare POST loop of the same bodies."""
    box = _open(directory)
    for first in range(0, len(items), WRITER_BATCH):
        box.enqueue_many(items[first:first + WRITER_BATCH])
    stored = box.pending("main", limit=len(items))
    size = sum(len(message.body) for message in stored)
    with running_receiver(ok_body=b"") as receiver:
        bare = trio.run(_bare_posts, receiver.url + "/in", [m.body for m in stored])
    with running_receiver(ok_body=b"") as receiver:
        ours = trio.run(_drain, AsyncOutbox(box), receiver.url + "/in", len(items))
        arrived = len(receiver.snapshot())
    assert arrived >= len(items), f"{arrived} of {len(items)} arrived"
    lines.append(
        f"| drain: {label} ({len(items):,} messages, {size / 1e6:,.1f} MB) | "
        f"{ours:7.2f} s = {_rate(observations, ours)} observations"
        + (f", {ours * scale:,.0f} s for 360,000" if scale != 1 else "")
        + f" | {bare:7.2f} s (bare httpx POST loop) | {bare / ours:.2f} |")
    return ours * scale


def machine() -> str:
    """One line: CPU model, cores, kernel, Python, SQLite."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def run(hours: float, singles: int) -> list[str]:
    """Every measurement; returns the Markdown table rows."""
    lines = ["| measurement | heartwire | baseline (same run) | heartwire / baseline |",
             "|---|---|---|---|"]
    bench_enqueue(2_000, lines)
    now = time.time()
    batches = int(hours * 3600 / BATCH_INTERVAL_S)
    per_batch = int(CHECKS * BATCH_INTERVAL_S / INTERVAL_S)
    hour: list[tuple[str, dict[str, Any], float | None]] = [
        (RESULTS, {"results": [observation(n, now + b * BATCH_INTERVAL_S)
                               for n in range(per_batch)]}, None)
        for b in range(batches)]
    with tempfile.TemporaryDirectory() as directory:
        batched_s = bench_drain(Path(directory), hour, batches * per_batch,
                                f"{hours:g} h of results, batched every 10 s", 1 / hours, lines)
    singles_items: list[tuple[str, dict[str, Any], float | None]] = [
        (STATE_CHANGE, {"check": f"service-{n % CHECKS:04d}", "previous": "up",
                        "current": "down", "observation": observation(n % CHECKS, now)}, None)
        for n in range(singles)]
    with tempfile.TemporaryDirectory() as directory:
        bench_drain(Path(directory), singles_items, singles, "one message per observation",
                    360_000 / singles, lines)
    verdict = "within" if batched_s <= AIM_DRAIN_S else "OVER"
    lines.append("")
    lines.append(f"An hour of results (360,000 observations) drains in {batched_s:.1f} s: "
                 f"{verdict} the aim of {AIM_DRAIN_S:g} s.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    parser.add_argument("--hours", type=float, default=1.0,
                        help="hours of results in the backlog (default 1: 360,000)")
    parser.add_argument("--singles", type=int, default=5_000,
                        help="one-per-message backlog measured for the worst case")
    args = parser.parse_args(argv)
    logging.getLogger("heartwire").setLevel(logging.ERROR)
    lines = run(args.hours, args.singles)
    command = "python -m bench.outbox " + " ".join(sys.argv[1:] if argv is None else argv)
    section = [f"## Outbox: enqueue and drain ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
               f"Machine: {machine()}.", f"Command: `{command.strip()}`.", "", *lines, ""]
    print("\n".join(section))
    if args.write:
        with args.write.open("a") as out:
            out.write("\n".join(section) + "\n")


if __name__ == "__main__":
    main()
