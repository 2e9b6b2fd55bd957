"""Where the agent's CPU goes: a py-spy sample of a running worker, summed up.

py-spy (``pip install py-spy``) samples another process's Python stacks without
stopping it (``--nonblocking``); samples of threads waiting in the kernel are left
out, so the shares below are shares of the time the agent was on a CPU.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter, or on PATH; None if absent."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(executable: str, pid: int, *, seconds: float, rate: int) -> str:
    """Samples ``pid`` for ``seconds``; returns py-spy's collapsed stacks (raw format)."""
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "stacks.txt"
        subprocess.run(
            [executable, "record", "--pid", str(pid), "--duration", str(round(seconds)),
             "--rate", str(rate), "--format", "raw", "--nolineno", "--nonblocking",
             "--output", str(output)],
            check=True, capture_output=True, text=True,
        )
        return output.read_text()


@dataclass(frozen=True)
class Costs:
    """Samples by function: ``own`` where the function itself ran (the leaf of the
    stack), ``total`` where it was anywhere on the stack."""

    samples: int
    own: list[tuple[str, int]]
    total: list[tuple[str, int]]


def top_costs(collapsed: str, count: int, *, total_within: str = "(agent/") -> Costs:
    """The ``count`` costliest functions of py-spy's collapsed stacks.

    Each line is ``frame;frame;...;leaf N`` (outermost first). A function that
    recurses counts once per sample in ``total``, which lists only frames whose
    text contains ``total_within`` (by default the agent's own functions: the
    event loop and ``main`` are on every stack and would say nothing).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        samples += int(number)
        own[frames[-1]] += int(number)
        for frame in set(frames):
            if total_within in frame:
                total[frame] += int(number)
    return Costs(samples, own.most_common(count), total.most_common(count))
