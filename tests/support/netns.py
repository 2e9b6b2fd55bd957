"""Network namespaces the tests create (as root), and running trio code inside one.

:func:`network_namespace` makes a namespace with its loopback up and removes it
afterwards. :func:`run_in_namespace` runs an async function with ``trio.run`` in a
thread that has entered the namespace (``setns`` changes only the calling thread),
so every socket the probe opens lives there, and sysctls read through /proc are
the namespace's own: a test can set ``net.ipv4.ping_group_range`` without touching
the machine's. :func:`call_in_namespace` does the same for a plain function.

:func:`routed_path` builds client — router — server with veth pairs, so that a
path trace meets a real router and a link that can be cut.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
import trio

from tests.servers import require

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
# How long a function run in a namespace may take before the test gives up.
RUN_TIMEOUT_S = 60.0


def ip(*args: str) -> None:
    """Runs ``ip ARGS`` and fails the test with its message when it fails."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def require_namespaces() -> None:
    """Skips unless this process may create network namespaces (root, ip(8))."""
    require("ip")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")


@contextlib.contextmanager
def network_namespace(label: str) -> Iterator[str]:
    """A fresh network namespace (loopback up), deleted when the block ends."""
    require_namespaces()
    name = f"hw-{label}-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name)


def sysctl(namespace: str, key: str, value: str) -> None:
    """Sets ``key`` inside ``namespace`` only."""
    subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", f"{key}={value}"],
                   check=True)


def call_in_namespace(namespace: str, function: Callable[[], T]) -> T:
    """``function()`` in a thread inside ``namespace``; its result or exception."""
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns: {os.strerror(code)}")
            finally:
                os.close(fd)
            outcome.append(function())
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT_S)
    if thread.is_alive():
        raise TimeoutError(f"still running in {namespace} after {RUN_TIMEOUT_S:g}s")
    if failure:
        raise failure[0]
    return outcome[0]


def run_in_namespace(namespace: str, function: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(function)`` in a thread inside ``namespace``; its result or exception."""
    return call_in_namespace(namespace, lambda: trio.run(function))


@dataclass(frozen=True)
class RoutedPath:
    """client (10.91.1.2) — router (10.91.1.1 | 10.91.2.1) — server (10.91.2.2).

    Attributes:
        client: the namespace probes run in.
        router: the namespace between the two links.
        server: the namespace of the target.
        router_address: the router's address on the client's side.
        server_address: the target's address.
    """

    client: str
    router: str
    server: str
    router_address: str = "10.91.1.1"
    server_address: str = "10.91.2.2"

    def cut_behind_router(self) -> None:
        """Removes the router's link to the server: its route there goes with it."""
        ip("-n", self.router, "link", "del", "to-server")


@contextlib.contextmanager
def routed_path() -> Iterator[RoutedPath]:
    """Three namespaces joined by two veth links, routed through the middle one."""
    with (
        network_namespace("client") as client,
        network_namespace("router") as router,
        network_namespace("server") as server,
    ):
        ip("link", "add", "to-router", "netns", client, "type", "veth",
           "peer", "to-client", "netns", router)
        ip("link", "add", "to-server", "netns", router, "type", "veth",
           "peer", "to-router", "netns", server)
        ip("-n", client, "addr", "add", "10.91.1.2/24", "dev", "to-router")
        ip("-n", router, "addr", "add", "10.91.1.1/24", "dev", "to-client")
        ip("-n", router, "addr", "add", "10.91.2.1/24", "dev", "to-server")
        ip("-n", server, "addr", "add", "10.91.2.2/24", "dev", "to-router")
        for namespace, device in ((client, "to-router"), (router, "to-client"),
                                  (router, "to-server"), (server, "to-router")):
            ip("-n", namespace, "link", "set", device, "up")
        ip("-n", client, "route", "add", "default", "via", "10.91.1.1")
        ip("-n", server, "route", "add", "default", "via", "10.91.2.1")
        sysctl(router, "net.ipv4.ip_forward", "1")
        yield RoutedPath(client, router, server)
