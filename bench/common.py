"""What the benchmarks share: a private network namespace, listeners, CPU clocks.

Every benchmark runs inside a network namespace it creates, so hammering loopback
(tens of thousands of TIME_WAIT sockets, the ephemeral port range) never touches
the host's own network stack, which other programs share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.outbound.delivery import Deliverer
    from bench.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Listener addresses: several destinations multiply the ephemeral ports available
# (the kernel picks ports per destination), and TIME_WAIT reuse does the rest.
LISTEN_ADDRESSES = [f"127.0.1.{index}" for index in range(1, 17)]
DNS_ADDRESS = "127.0.0.53"


def run(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs a command, failing loudly with its output when it fails."""
    return subprocess.run(list(args), check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def open_netns(name: str) -> Iterator[str]:
    """A fresh network namespace with loopback up and a resolv.conf of its own."""
    run(["ip", "netns", "add", name])
    etc = Path("/etc/netns") / name
    try:
        etc.mkdir(parents=True, exist_ok=True)
        # `ip netns exec` bind-mounts these over /etc/resolv.conf and /etc/hosts.
        (etc / "resolv.conf").write_text(f"nameserver {DNS_ADDRESS}\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        in_ns = ["ip", "netns", "exec", name]
        run([*in_ns, "ip", "link", "set", "lo", "up"])
        run([*in_ns, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])
        run([*in_ns, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])
        run([*in_ns, "sysctl", "-q", "-w", "net.core.somaxconn=8192"])
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


@dataclass
class DelayedPath:
    """Two namespaces joined through the delay line (see :func:`open_delayed_path`)."""

    client: str
    server: str
    server_address: str
    line: subprocess.Popen[str]

    def lateness(self) -> dict[str, float]:
        """How late the delay line released SYNs since the last call (its own error)."""
        assert self.line.stdin is not None and self.line.stdout is not None
        self.line.stdin.write("stats\n")
        self.line.stdin.flush()
        return json.loads(self.line.stdout.readline())  # type: ignore[no-any-return]


@contextlib.contextmanager
def open_delayed_path(name: str, delay_ms: float) -> Iterator[DelayedPath]:
    """A client and a server namespace joined through a user-space delay line."""
    client, server = f"{name}c", f"{name}s"
    links = [(client, "hwc0", "10.77.0.1/24", "10.77.1.0/24"),
             (server, "hws0", "10.77.1.1/24", "10.77.0.0/24")]
    with open_netns(client), open_netns(server):
        for netns, device, address, _ in links:
            run(in_netns(netns, ["ip", "tuntap", "add", "dev", device, "mode", "tun"]))
            run(in_netns(netns, ["ip", "addr", "add", address, "dev", device]))
            # A thousand SYNs at once must not overflow the device queue (500).
            run(in_netns(netns, ["ip", "link", "set", device, "txqueuelen", "10000", "up"]))
        line = subprocess.Popen(
            [PYTHON, "-m", "bench.delayline", "--client", client, "hwc0",
             "--server", server, "hws0", "--delay-ms", str(delay_ms)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert line.stdout is not None
            if line.stdout.readline().strip() != "ready":
                raise RuntimeError("the delay line did not start")
            for netns, device, _, peer in links:
                run(in_netns(netns, ["ip", "route", "add", peer, "dev", device]))
            yield DelayedPath(client, server, "10.77.1.1", line)
        finally:
            assert line.stdin is not None
            line.stdin.close()
            line.wait(timeout=5)


def in_netns(name: str | None, args: Sequence[str]) -> list[str]:
    """``args`` run inside the namespace (None: in this process's own, for tests)."""
    return ["ip", "netns", "exec", name, *args] if name is not None else list(args)


@contextlib.contextmanager
def open_listeners(
    netns: str | None, *, dns: bool = False, addresses: Sequence[str] = tuple(LISTEN_ADDRESSES)
) -> Iterator[list[tuple[str, int]]]:
    """Accept-and-close listeners (and the bench DNS zone) in their own process."""
    args = [PYTHON, "-m", "bench.listeners"]
    for address in addresses:
        args += ["--address", address]
    if dns:
        args += ["--dns", DNS_ADDRESS]
    process = subprocess.Popen(
        in_netns(netns, args), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        bound = json.loads(process.stdout.readline())
        yield [(host, port) for host, port in bound]
    finally:
        _close_by_stdin(process)


def _close_by_stdin(process: subprocess.Popen[str]) -> None:
    """Stops a helper process that serves until its stdin closes."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


@dataclass
class Receiver:
    """A running :mod:`bench.receiver`: its URL, and what it weighed so far."""

    url: str
    process: subprocess.Popen[str]

    def records(self) -> list[dict[str, Any]]:
        """One record per request received: type, wire, body and gzipped bytes."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())  # type: ignore[no-any-return]


@contextlib.contextmanager
def open_receiver(netns: str | None, address: str = "127.0.0.1") -> Iterator[Receiver]:
    """A native destination that weighs each request, in its own process."""
    process = subprocess.Popen(
        in_netns(netns, [PYTHON, "-m", "bench.receiver", "--address", address]),
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        yield Receiver(json.loads(process.stdout.readline())["url"], process)
    finally:
        _close_by_stdin(process)


def start_worker(
    netns: str | None, module: str, options: dict[str, Any], *, runtime: Runtime | None = None,
) -> subprocess.Popen[str]:
    """Starts ``python -m module --options JSON`` in the namespace.

    With ``runtime``, the worker runs in that runtime-only install of heartwire
    (see :mod:`bench.runtime`) instead of this process's venv.
    """
    command = runtime.worker_command(module) if runtime is not None else [PYTHON, "-m", module]
    env = runtime.worker_env() if runtime is not None else None
    return subprocess.Popen(
        in_netns(netns, [*command, "--options", json.dumps(options)]), cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def finish_worker(process: subprocess.Popen[str], module: str) -> dict[str, Any]:
    """Waits for a worker and returns the JSON line it printed last."""
    stdout, stderr = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{stderr}")
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# What a worker prints on a line of its own when its measured window begins.
WINDOW_STARTED = "window started"


def wait_for_window(
    process: subprocess.Popen[str], module: str
) -> Callable[[], dict[str, Any]]:
    """Blocks until a worker's measured window began; returns how to await its result.

    Its stderr is read meanwhile by a thread: a worker blocked on a full pipe (its
    logs) would stall, and the stall would be measured.
    """
    assert process.stdout is not None and process.stderr is not None
    stderr = process.stderr
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    reader.start()

    def finish() -> dict[str, Any]:
        assert process.stdout is not None
        rest = process.stdout.read()
        process.wait(timeout=900)
        reader.join(timeout=10)
        process.stdout.close()
        stderr.close()
        if process.returncode != 0:
            raise RuntimeError(f"{module} failed:\n{''.join(errors)}")
        return json.loads(rest.strip().splitlines()[-1])  # type: ignore[no-any-return]

    for line in process.stdout:
        if line.strip() == WINDOW_STARTED:
            return finish
    finish()
    raise RuntimeError(f"{module} ended without starting its measured window")


def run_worker(
    netns: str, module: str, options: dict[str, Any], *, runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Runs a worker (see :func:`start_worker`) to the end; returns its JSON line."""
    return finish_worker(start_worker(netns, module, options, runtime=runtime), module)


def worker_options() -> dict[str, Any]:
    """A worker's ``--options`` JSON; pins the process to ``options["cpu"]`` if given."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", required=True)
    options: dict[str, Any] = json.loads(parser.parse_args().options)
    if "cpu" in options:
        os.sched_setaffinity(0, {options["cpu"]})
    return options


def cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU time of the children this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _status_kib(field: str, pid: int | None) -> int:
    with open(f"/proc/{'self' if pid is None else pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def rss_kib() -> int:
    """This process's resident set size now, in KiB (from /proc)."""
    return _status_kib("VmRSS:", None)


def peak_rss_kib(pid: int | None = None) -> int:
    """The peak resident set size of this process (or ``pid``) since its exec, in KiB.

    ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: the latter keeps the peak of the
    process image that exec replaced, and a worker started by a forking parent
    would carry the parent's peak in its own figure.
    """
    return _status_kib("VmHWM:", pid)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def time_until_delivered(deliverer: Deliverer, count: int) -> float:
    """Runs ``deliverer`` until it delivered ``count`` messages; the seconds it took.

    Delivery is imported here, not at the top: the network-namespace workers import
    this module too and should not pay for httpx.
    """
    import trio

    from agent.outbound.delivery import Delivery

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Delivery([deliverer]).run)
        while deliverer.stats.delivered < count:  # noqa: ASYNC110 - polls a counter
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return time.perf_counter() - start
