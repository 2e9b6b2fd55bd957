"""One-shot start-up: ``heartwire check`` of one TCP target beside ``python -c "import trio"``.

Both commands run as whole processes, in turn (A B A B ...), after a warm-up each,
and each run's wall time, CPU time and peak RSS come from the kernel's own
accounting of the finished child (``os.wait4``). The ratio is taken pair by pair and
its median quoted, so that a drift of the machine's speed during the run cancels.

The kernel counts in a child's peak RSS what it had before ``exec``, a copy of its
parent's: so this runs in a small process of its own (``python -m bench.startup``,
as ``python -m bench`` starts it), whose own peak is printed as the floor under
which no figure here can go.

Both run from a runtime-only install of heartwire (:mod:`bench.runtime`), as a
user's ``pip install heartwire`` has it, not from the development venv.

Bytecode is compiled once into a private cache (``PYTHONPYCACHEPREFIX``) for both
commands, as an installed package ships it: a source checkout run with
PYTHONDONTWRITEBYTECODE would otherwise recompile the agent on every start.

    python -m bench.startup [--runs N] [--json] [--runtime DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import peak_rss_kib
from bench.runtime import Runtime, existing, prepare

RUNS = 15
WARMUP = 2


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """One finished process: wall and CPU seconds, peak RSS in MiB, exit code."""

    wall_s: float
    cpu_s: float
    peak_mib: float
    returncode: int


def run_once(command: Sequence[str], env: dict[str, str], cwd: Path) -> ProcessRun:
    """Runs ``command`` to its end; its figures from the kernel's accounting of it."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ProcessRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                      process.returncode)


@contextmanager
def _accepting_listener() -> Iterator[int]:
    """A loopback port that accepts and closes, in a thread, until the block ends."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def measure(runtime: Runtime, runs: int = RUNS) -> dict[str, float]:
    """Median figures of both commands and of their pairwise ratios.

    Both run from ``runtime``, a runtime-only install (:mod:`bench.runtime`), in a
    scratch directory, so that neither finds the source tree on its path.
    """
    python = str(runtime.python)
    heartwire_command = [str(runtime.heartwire)]
    with tempfile.TemporaryDirectory(prefix="hw-startup-") as scratch, \
            _accepting_listener() as port:
        config = Path(scratch) / "agent.toml"
        config.write_text(f'[checks.web]\nhost = "127.0.0.1"\nport = {port}\n')
        config.chmod(0o600)
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONDONTWRITEBYTECODE", "JOURNAL_STREAM", "PYTHONPATH",
                              "VIRTUAL_ENV")}
        env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
        check = [*heartwire_command, "check", "--config", str(config)]
        trio_only = [python, "-c", "import trio"]
        where = Path(scratch)
        for _ in range(WARMUP):
            first = run_once(check, env, where)
            run_once(trio_only, env, where)
        if first.returncode != 0:
            raise RuntimeError(f"heartwire check exited {first.returncode}")
        pairs = [(run_once(check, env, where), run_once(trio_only, env, where))
                 for _ in range(runs)]

    return {
        "runs": runs,
        "check_wall_ms": statistics.median(a.wall_s * 1000 for a, _ in pairs),
        "trio_wall_ms": statistics.median(b.wall_s * 1000 for _, b in pairs),
        "wall_ratio": statistics.median(a.wall_s / b.wall_s for a, b in pairs),
        "check_cpu_ms": statistics.median(a.cpu_s * 1000 for a, _ in pairs),
        "trio_cpu_ms": statistics.median(b.cpu_s * 1000 for _, b in pairs),
        "cpu_ratio": statistics.median(a.cpu_s / max(1e-6, b.cpu_s) for a, b in pairs),
        "check_peak_mib": statistics.median(a.peak_mib for a, _ in pairs),
        "trio_peak_mib": statistics.median(b.peak_mib for _, b in pairs),
        # Its own image's peak (VmHWM), which the children share until exec; its
        # ru_maxrss would be the peak of whatever process started it.
        "floor_mib": peak_rss_kib() / 1024,
    }


def report(figures: dict[str, float]) -> list[str]:
    """The Markdown lines of the start-up section."""
    return [
        f"- `heartwire check` of one TCP target (up), whole process, median of "
        f"{figures['runs']:.0f} pairs run in turn: wall **{figures['check_wall_ms']:.0f} ms**, "
        f"CPU {figures['check_cpu_ms']:.0f} ms, peak RSS **{figures['check_peak_mib']:.1f} MiB** "
        f"(aim ≤ 25)",
        f"- baseline `python -c \"import trio\"`: wall {figures['trio_wall_ms']:.0f} ms, CPU "
        f"{figures['trio_cpu_ms']:.0f} ms, peak RSS {figures['trio_peak_mib']:.1f} MiB",
        f"- ratio check / import trio, pair by pair: wall **{figures['wall_ratio']:.2f}x** "
        f"(aim ≤ 1.5x), CPU {figures['cpu_ratio']:.2f}x; the measuring process's own peak "
        f"RSS (the floor of these figures): {figures['floor_mib']:.1f} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup")
    parser.add_argument("--runs", type=int, default=RUNS, help="pairs counted")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--runtime", type=Path, metavar="DIR",
                        help="a runtime-only install bench.runtime made (default: make one)")
    args = parser.parse_args()
    runtime = existing(args.runtime) if args.runtime else prepare()
    figures = measure(runtime, args.runs)
    if args.json:
        print(json.dumps(figures))
    else:
        print("\n".join([f"- {runtime.describe()}", *report(figures)]))


if __name__ == "__main__":
    main()
