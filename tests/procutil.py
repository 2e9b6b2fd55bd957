"""Running heartwire as a real process and reading its log lines, with bounds."""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
from pathlib import Path


class AgentProcess:
    """``python -m agent ARGS`` with its stderr read line by line."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.lines: list[str] = []

    def wait_for_line(self, pattern: str, timeout_s: float = 15.0) -> str:
        """The first log line (old or new) matching ``pattern``; fails after the timeout."""
        regex = re.compile(pattern)
        for line in self.lines:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout_s
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = self.proc.stderr.readline()
            if not line:
                break  # the process ended
            self.lines.append(line.rstrip("\n"))
            if regex.search(line):
                return line
        raise AssertionError(f"no log line matching {pattern!r}; got:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
