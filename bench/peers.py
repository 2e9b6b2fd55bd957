"""Peer workers: blackbox_exporter's /probe and monitoring-plugins' check_tcp.

``--options`` JSON keys: ``peer`` ("blackbox" or "check_tcp"), ``targets``,
``concurrency``, ``seconds``. Prints one JSON line with completed checks, how many
succeeded, wall seconds and the CPU seconds the peer itself used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import children_cpu_seconds, process_cpu_seconds

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CHECK_TCP = "/usr/lib/nagios/plugins/check_tcp"
BLACKBOX_CONFIG = "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n"
BLACKBOX_ADDRESS = "127.0.0.1:19115"


async def blackbox(options: dict[str, Any]) -> dict[str, Any]:
    """Drives /probe?module=tcp_connect as Prometheus would, many scrapes at once."""
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG)
        process = await trio.lowlevel.open_process(
            [BLACKBOX, f"--config.file={config}", f"--web.listen-address={BLACKBOX_ADDRESS}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                for _ in range(100):  # up within 10 s
                    try:
                        await client.get(f"http://{BLACKBOX_ADDRESS}/-/healthy")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.1)
                counts = {"completed": 0, "ok": 0}
                targets = options["targets"]
                deadline = trio.current_time() + options["seconds"]
                cpu_start, wall_start = process_cpu_seconds(process.pid), time.monotonic()

                async def scraper(index: int) -> None:
                    while trio.current_time() < deadline:
                        host, port = targets[index % len(targets)]
                        index += 1
                        response = await client.get(
                            f"http://{BLACKBOX_ADDRESS}/probe",
                            params={"module": "tcp_connect", "target": f"{host}:{port}"},
                        )
                        counts["completed"] += 1
                        counts["ok"] += "probe_success 1" in response.text

                async with trio.open_nursery() as nursery:
                    for index in range(options["concurrency"]):
                        nursery.start_soon(scraper, index)
                wall = time.monotonic() - wall_start
                cpu = process_cpu_seconds(process.pid) - cpu_start
        finally:
            process.terminate()
            await process.wait()
    return {**counts, "wall_s": wall, "cpu_s": cpu}


def check_tcp(options: dict[str, Any]) -> dict[str, Any]:
    """One fork+exec of check_tcp per check, as Nagios runs plugins, a few at a time."""
    targets = options["targets"]
    completed = ok = index = 0
    running: list[subprocess.Popen[bytes]] = []
    cpu_start, wall_start = children_cpu_seconds(), time.monotonic()
    deadline = wall_start + options["seconds"]
    while time.monotonic() < deadline or running:
        while time.monotonic() < deadline and len(running) < options["concurrency"]:
            host, port = targets[index % len(targets)]
            index += 1
            running.append(subprocess.Popen(
                [CHECK_TCP, "-H", host, "-p", str(port), "-t", "2"], stdout=subprocess.DEVNULL
            ))
        finished = running.pop(0)
        ok += finished.wait() == 0
        completed += 1
    wall = time.monotonic() - wall_start
    return {"completed": completed, "ok": ok, "wall_s": wall,
            "cpu_s": children_cpu_seconds() - cpu_start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--options", required=True)
    options = json.loads(parser.parse_args().options)
    if options["peer"] == "blackbox":
        result = trio.run(blackbox, options)
    else:
        result = check_tcp(options)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
