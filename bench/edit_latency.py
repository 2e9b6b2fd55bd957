"""How long a `heartwire checks` edit takes as the number of drop-ins grows.

Every edit reads the main file and every drop-in, validates the whole would-be
config and writes one file atomically (with fsyncs), all under the directory lock,
so its cost grows with the number of checks. Run:

    .venv/bin/python bench/edit_latency.py [CHECKS ...]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from agent.config import editing

ROUNDS = 20


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def measure(checks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        main = Path(directory) / "agent.toml"
        main.write_text('# hand-written\n[agent]\nid = "bench"\n')
        for index in range(checks):
            editing.add_check(main, f"c{index}", {"host": "127.0.0.1", "port": 1 + index})
        samples: dict[str, list[float]] = {"add": [], "set": [], "remove": []}
        for round_index in range(ROUNDS):
            name = f"bench{round_index}"
            settings = {"host": "127.0.0.1", "port": 80}
            samples["add"].append(timed_ms(partial(editing.add_check, main, name, settings)))
            samples["set"].append(timed_ms(partial(editing.set_check, main, name, {"port": 81})))
            samples["remove"].append(timed_ms(partial(editing.remove_check, main, name)))
        return {action: statistics.median(values) for action, values in samples.items()}


def main(arguments: list[str]) -> None:
    sizes = [int(argument) for argument in arguments] or [10, 100, 1000]
    print(f"median of {ROUNDS} edits, milliseconds")
    print(f"{'checks':>7} {'add':>8} {'set':>8} {'remove':>8}")
    for size in sizes:
        result = measure(size)
        print(f"{size:>7} {result['add']:>8.1f} {result['set']:>8.1f} {result['remove']:>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
