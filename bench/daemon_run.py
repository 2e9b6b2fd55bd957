"""Agent worker: the agent as ``heartwire run`` runs it, N TCP checks every interval.

The config is a real ``agent.toml`` (N ``[checks.*]`` tables and one native
destination), loaded by the same :class:`~agent.service.daemon.Daemon` that ``heartwire
run`` builds, with its logging set up the same way: scheduler, trackers, result
logging, reporting, outbox and delivery all run, as they do for a user.

The worker runs in a runtime-only install of heartwire (:mod:`bench.runtime`), as
a user's ``pip install`` has it. The benchmark writes the config beforehand
(:func:`write_config`), so that making it costs the agent no memory. ``--options``
JSON keys: ``config`` and ``state_dir`` (paths), ``warmup_s``, ``seconds`` and
optionally ``cpu`` (pin the process to that one CPU). Prints one JSON line: runs,
skips and CPU seconds of the measured window, peak RSS, the RSS once the daemon was
built (config loaded, before any check), scheduling lag percentiles, how many checks
were up at the end, and how long the start's state changes took to deliver (the
window starts after them).
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from agent.common import logs
from agent.model import Status
from agent.service.daemon import Daemon
from bench.common import (
    WINDOW_STARTED,
    cpu_seconds,
    peak_rss_kib,
    percentile,
    rss_kib,
    start_worker,
    worker_options,
)
from bench.runtime import installed


def write_config(
    directory: Path, targets: Sequence[Sequence[Any]], *, checks: int, interval_s: float,
    timeout_s: float, receiver_url: str,
) -> Path:
    """Writes an agent.toml (and its signing key) into ``directory``.

    Args:
        directory: where the config and the key go.
        targets: [host, port] pairs the checks are spread over.
        checks: how many TCP checks.
        interval_s: every check's interval.
        timeout_s: every check's timeout.
        receiver_url: the native destination.

    Returns:
        The config's path.
    """
    # Imported here: the worker process, which measures the daemon's memory, does
    # not write configs, and `heartwire run` imports none of these.
    import tomli_w

    from agent.common.keyfiles import write_private_file
    from agent.common.signing import Ed25519SigningKey

    key_file = directory / "agent.key"
    write_private_file(key_file, Ed25519SigningKey.generate().to_text(), overwrite=True)
    document = {
        "agent": {"id": "bench-agent", "max_concurrent_checks": 256},
        "defaults": {"interval": interval_s, "timeout": timeout_s},
        "checks": {
            f"c{index}": {"host": targets[index % len(targets)][0],
                          "port": targets[index % len(targets)][1]}
            for index in range(checks)
        },
        "destinations": {"central": {"kind": "native", "url": receiver_url,
                                     "signing_key_file": str(key_file)}},
    }
    path = directory / "agent.toml"
    path.write_text(tomli_w.dumps(document))
    return path


@contextlib.contextmanager
def started_daemon(
    netns: str | None, targets: Sequence[Sequence[Any]], receiver_url: str, *, checks: int,
    interval_s: float, timeout_s: float, warmup_s: float, seconds: float,
    cpu: int | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Starts this worker in ``netns`` with a fresh config and state directory.

    Yields the running worker (for :func:`bench.common.finish_worker`); the config
    and the outbox are removed afterwards.
    """
    with tempfile.TemporaryDirectory() as directory:
        config = write_config(Path(directory), targets, checks=checks, interval_s=interval_s,
                              timeout_s=timeout_s, receiver_url=receiver_url)
        options: dict[str, Any] = {"config": str(config), "state_dir": directory,
                                   "warmup_s": warmup_s, "seconds": seconds}
        if cpu is not None:
            options["cpu"] = cpu
        worker = start_worker(netns, "bench.daemon_run", options, runtime=installed())
        try:
            yield worker
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


class CollectorPauses:
    """How long the cyclic garbage collector stopped the process, by generation.

    A collection of the oldest generation walks every tracked object: with
    thousands of checks (each a task, a tracker, its last result) it is the
    longest pause the process has, and it shows as scheduling lag.
    """

    def __init__(self) -> None:
        self.pauses_s: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_s[info["generation"]].append(time.perf_counter() - self._started)

    def clear(self) -> None:
        """Forgets the pauses so far (the warm-up's)."""
        for pauses in self.pauses_s.values():
            pauses.clear()


async def measure(daemon: Daemon, options: dict[str, Any]) -> dict[str, Any]:
    """Runs the daemon through warm-up and the measured window, then stops it."""
    built_rss_kib = rss_kib()
    collector = CollectorPauses()
    gc.callbacks.append(collector)
    lags: list[float] = []
    # The scheduler reports each run's start lag to this hook (meant for benchmarks);
    # the daemon builds its scheduler without one.
    daemon.scheduler._on_lag = lags.append
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        await nursery.start(daemon.run)
        await trio.sleep(options["warmup_s"])
        drained_after_s = await _drained(daemon, started, options.get("drain_limit_s", 120.0))
        print(WINDOW_STARTED, flush=True)
        lags.clear()
        collector.clear()
        runs, skipped = daemon.scheduler.stats.runs, daemon.scheduler.stats.skipped
        cpu_start, wall_start = cpu_seconds(), trio.current_time()
        await trio.sleep(options["seconds"])
        cpu, wall = cpu_seconds() - cpu_start, trio.current_time() - wall_start
        runs = daemon.scheduler.stats.runs - runs
        skipped = daemon.scheduler.stats.skipped - skipped
        up = sum(tracker.status is Status.UP for tracker in daemon.scheduler.trackers.values())
        nursery.cancel_scope.cancel()
    gc.callbacks.remove(collector)
    oldest = collector.pauses_s[2]
    return {
        "gc_full_collections": len(oldest),
        "gc_full_max_ms": max(oldest, default=0.0) * 1000,
        "gc_young_max_ms": max(collector.pauses_s[0] + collector.pauses_s[1],
                               default=0.0) * 1000,
        "drained_after_s": drained_after_s,
        "completed": runs,
        "skipped": skipped,
        "up": up,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "built_rss_mib": built_rss_kib / 1024,
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags, default=0.0) * 1000,
    }


async def _drained(daemon: Daemon, started: float, limit_s: float) -> float | None:
    """Waits until the outbox is empty: the start's state changes are delivered.

    Every check's first run turns its status from unknown to up, one state change
    each, so the measured window starts only once they are out. Returns the seconds
    since ``started`` it took, or None if the outbox was not empty within
    ``limit_s`` (the window then starts anyway).
    """
    assert daemon.reporting is not None, "the bench config has a destination"
    outbox = daemon.reporting.outbox.sync
    with trio.move_on_after(limit_s):
        while outbox.depth().messages:  # noqa: ASYNC110 - polls a counter
            await trio.sleep(0.1)
        return trio.current_time() - started
    return None


def main() -> None:
    options = worker_options()
    logs.configure()
    daemon = Daemon(Path(options["config"]), state_dir=Path(options["state_dir"]))
    print(json.dumps(trio.run(measure, daemon, options)))


if __name__ == "__main__":
    main()
