"""Latency worker: handshake times reported through the delay line.

``--options`` JSON keys: ``mode`` ("agent" or "raw"), ``target`` ([host, port]),
``concurrency``, ``rounds``. Prints one JSON line with every latency in ms.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import time
from typing import Any

import trio

from agent.config.loader import CheckConfig
from agent.schedule.scheduler import run_all_once


async def agent_round(target: tuple[str, int], concurrency: int) -> list[float]:
    """``concurrency`` checks at once, as ``heartwire check`` runs them."""
    checks = [
        CheckConfig(name=f"l{index}", host=target[0], port=target[1], timeout_s=5.0)
        for index in range(concurrency)
    ]
    results = await run_all_once(checks, max_concurrent=concurrency)
    return [r.observation.latency_ms for r in results if r.observation.latency_ms is not None]


def raw_round(target: tuple[str, int], concurrency: int) -> list[float]:
    """The baseline: the same connects from a bare selectors loop."""
    selector = selectors.DefaultSelector()
    for _ in range(concurrency):
        sock = socket.socket()
        sock.setblocking(False)
        started = time.monotonic()
        if sock.connect_ex(target) == errno.EINPROGRESS:
            selector.register(sock, selectors.EVENT_WRITE, started)
        else:
            sock.close()
    latencies = []
    while selector.get_map():
        for key, _ in selector.select(timeout=5):
            ended = time.monotonic()
            done = key.fileobj
            assert isinstance(done, socket.socket)
            selector.unregister(done)
            if done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                latencies.append((ended - key.data) * 1000)
            done.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", required=True)
    options: dict[str, Any] = json.loads(parser.parse_args().options)
    target = (options["target"][0], options["target"][1])
    latencies: list[float] = []
    for _ in range(options["rounds"]):
        if options["mode"] == "agent":
            latencies += trio.run(agent_round, target, options["concurrency"])
        else:
            latencies += raw_round(target, options["concurrency"])
        time.sleep(0.2)
    print(json.dumps({"latencies_ms": latencies}))


if __name__ == "__main__":
    main()
