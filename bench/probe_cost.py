"""What a protocol probe costs over a bare TCP connect, on loopback.

Starts a private redis-server and an in-process TLS server (certificate from
trustme, a test dependency), then runs each probe ROUNDS times one after another
and reports the median and 95th percentile wall time and the CPU time per probe
of this process (for ``tls`` that includes the server's half of the handshake,
which runs in the same process). Run:

    .venv/bin/python bench/probe_cost.py [ROUNDS]
"""

from __future__ import annotations

import functools
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trustme

from agent.checks import redis, tcp, tls
from agent.common.tables import Table
from agent.model import Observation, Outcome, Target

DEFAULT_ROUNDS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(
    name: str, probe: Callable[[Target], Awaitable[Observation]], target: Target, rounds: int
) -> None:
    walls: list[float] = []
    cpu_started = time.process_time()
    for _ in range(rounds):
        started = time.perf_counter()
        observation = await probe(target)
        walls.append((time.perf_counter() - started) * 1000)
        assert observation.outcome is Outcome.OK, observation
    cpu_ms = (time.process_time() - cpu_started) * 1000 / rounds
    p95 = statistics.quantiles(walls, n=20)[-1]
    print(f"{name:<8} median {statistics.median(walls):6.3f} ms  p95 {p95:6.3f} ms  "
          f"cpu {cpu_ms:6.3f} ms/probe")


async def run_all(rounds: int, redis_port: int, directory: str) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = Path(directory) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def hold(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            await stream.receive_some(16)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_ssl_over_tcp, hold, 0, server_context, host="127.0.0.1"
        ))
        tls_port = listeners[0].transport_listener.socket.getsockname()[1]
        for _ in range(100):  # redis-server takes a moment to listen
            probed = await tcp.probe(Target("127.0.0.1", redis_port), timeout=1)
            if probed.outcome is Outcome.OK:
                break
            await trio.sleep(0.05)
        tls_options = tls.read_options(Table({"ca_file": str(ca_file)}, "bench"))
        await measure("tcp", lambda t: tcp.probe(t, timeout=5),
                      Target("127.0.0.1", redis_port), rounds)
        await measure("redis", lambda t: redis.probe(t, timeout=5),
                      Target("127.0.0.1", redis_port, options={"tls": None}), rounds)
        await measure("tls", lambda t: tls.probe(t, timeout=5),
                      Target("127.0.0.1", tls_port, options=tls_options), rounds)
        nursery.cancel_scope.cancel()


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        redis_port = free_port()
        redis_server = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--dir", directory], stdout=subprocess.DEVNULL,
        )
        try:
            trio.run(run_all, rounds, redis_port, directory)
        finally:
            redis_server.terminate()
            redis_server.wait(timeout=10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROUNDS)
