"""heartwire as users install it: a fresh venv with ``pip install .`` and nothing else.

The development venv holds the test and lint tools as well (pytest, hypothesis,
mypy, import-linter with click, rich and pygments), and some of them are imported
by heartwire's own dependencies when present: httpx's ``__init__`` imports its
command line, which imports click, rich and pygments when they are installed. A
user's ``pip install heartwire`` (or the .deb, whose dependencies are the same
runtime set) has none of them, so the memory and start-up benchmarks run
heartwire from such an install, made here under ``build/`` for each benchmark run.

Workers that are part of the benchmark (``bench.daemon_run``, ``bench.footprint``)
run with that venv's Python in isolated-path mode (``-P``) and a ``PYTHONPATH``
holding only the ``bench`` package, so that ``agent`` is the installed copy and
not the source tree.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO

RUNTIME_DIR = REPO / "build" / "bench-runtime"


@dataclass(frozen=True, slots=True)
class Runtime:
    """A runtime-only install of heartwire.

    Attributes:
        python: the venv's interpreter.
        heartwire: the installed ``heartwire`` command.
        bench_path: a directory holding only the ``bench`` package (for ``PYTHONPATH``).
        packages: ``name==version`` of everything installed in the venv.
    """

    python: Path
    heartwire: Path
    bench_path: Path
    packages: tuple[str, ...]

    def worker_command(self, module: str) -> list[str]:
        """``python -P -m module`` in this install (the source tree not on the path)."""
        return [str(self.python), "-P", "-m", module]

    def worker_env(self) -> dict[str, str]:
        """The environment for :meth:`worker_command`: ``bench`` importable, ``agent`` not."""
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PYTHONPATH"] = str(self.bench_path)
        return env

    def describe(self) -> str:
        """One line for the report: how heartwire was installed, and with what."""
        return ("heartwire from a runtime-only install: a fresh venv with `pip install .` "
                "(no test or lint extras), holding " + ", ".join(self.packages))


def prepare(directory: Path = RUNTIME_DIR) -> Runtime:
    """Makes a fresh venv in ``directory`` and installs the working tree into it.

    The directory is removed first, so that a dependency dropped from
    pyproject.toml is not left behind from an earlier run.
    """
    shutil.rmtree(directory, ignore_errors=True)
    venv = directory / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(REPO)], check=True, cwd=directory, stderr=subprocess.DEVNULL)
    bench_path = directory / "path"
    bench_path.mkdir()
    (bench_path / "bench").symlink_to(REPO / "bench", target_is_directory=True)
    return existing(directory)


def existing(directory: Path = RUNTIME_DIR) -> Runtime:
    """The install :func:`prepare` made in ``directory``.

    Raises:
        FileNotFoundError: there is none.
    """
    directory = directory.absolute()  # the commands run from other directories
    python = directory / "venv" / "bin" / "python"
    heartwire = python.with_name("heartwire")
    if not heartwire.exists():
        raise FileNotFoundError(f"no runtime install in {directory}: run bench.runtime.prepare()")
    frozen = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--exclude-editable",
         "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    packages = tuple(line for line in frozen
                     if line.split("==")[0].lower() not in ("pip", "setuptools"))
    return Runtime(python, heartwire, directory / "path", packages)


@functools.cache
def installed() -> Runtime:
    """The install this process prepared (made once, on first use)."""
    return prepare()
