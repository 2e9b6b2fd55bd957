"""How long the outbox blocks: one commit per message, synchronous FULL vs NORMAL.

Run: .venv/bin/python bench/bench_outbox.py [COUNT]

Prints the median and 99th percentile time of one ``enqueue`` (one transaction)
called directly, of the same call through ``trio.to_thread`` (what the agent does,
so the time is spent in a worker thread, not on the loop that runs the checks), and
of a batch of 100 in one transaction.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from agent.outbound.spool import AsyncOutbox, open_outbox


def _report(label: str, samples: list[float]) -> None:
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<44} median {statistics.median(samples) * 1e3:7.3f} ms   "
          f"p99 {p99 * 1e3:7.3f} ms   n={len(samples)}")


def main(count: int) -> None:
    for synchronous in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory() as directory:
            box = open_outbox(Path(directory), agent_id="bench", destinations=["a"],
                              max_messages=10**6, max_bytes=10**9)
            box._db.execute(f"PRAGMA synchronous={synchronous}")
            data = {"check": "postgres-primary", "pad": "x" * 300}
            samples = []
            for _ in range(count):
                start = time.perf_counter()
                box.enqueue_many([("state_change", data, None)])
                samples.append(time.perf_counter() - start)
            _report(f"enqueue, direct, synchronous={synchronous}", samples)

            async def threaded(box_async: AsyncOutbox, data: dict[str, str]) -> list[float]:
                out = []
                for _ in range(count):
                    start = time.perf_counter()
                    await box_async.enqueue_many([("state_change", data, None)])
                    out.append(time.perf_counter() - start)
                return out

            _report(f"enqueue via trio.to_thread, {synchronous}",
                    trio.run(threaded, AsyncOutbox(box), data))
            samples = []
            for _ in range(max(1, count // 10)):
                start = time.perf_counter()
                box.enqueue_many([("results", data, None)] * 100)
                samples.append(time.perf_counter() - start)
            _report(f"100 messages in one transaction, {synchronous}", samples)
            box.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
