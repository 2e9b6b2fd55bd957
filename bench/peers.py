"""Peer workers: blackbox_exporter's /probe and monitoring-plugins' check_tcp.

``--options`` JSON keys: ``peer`` ("blackbox" or "check_tcp"), ``targets``,
``seconds``; blackbox: ``rate`` (probes per second; absent: as fast as it
answers), ``connections`` (default 16) and ``gzip`` (default true, as Prometheus
asks); check_tcp: ``concurrency``. Prints one JSON line with completed checks, how many
succeeded, wall seconds and the CPU seconds the peer itself used.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import h11
import trio

from bench.common import children_cpu_seconds, peak_rss_kib, process_cpu_seconds

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CHECK_TCP = "/usr/lib/nagios/plugins/check_tcp"
BLACKBOX_CONFIG = "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n"
BLACKBOX_HOST, BLACKBOX_PORT = "127.0.0.1", 19115
# What Prometheus sends with every scrape (2.x, enable_compression on by default):
# the exporter gzips each answer because of Accept-Encoding, and takes its probe
# timeout from the scrape timeout header.
PROMETHEUS_HEADERS = [
    ("Host", f"{BLACKBOX_HOST}:{BLACKBOX_PORT}"),
    ("User-Agent", "Prometheus/2.45.0"),
    ("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
               "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    ("Accept-Encoding", "gzip"),
    ("X-Prometheus-Scrape-Timeout-Seconds", "2"),
]


class KeepAliveScraper:
    """One keep-alive HTTP/1.1 connection to the exporter, one request at a time.

    h11 over a trio socket: a light client, so that the driver (whose CPU is not
    measured) keeps up with the offered load on a busy machine.
    """

    def __init__(self, stream: trio.SocketStream, headers: list[tuple[str, str]]) -> None:
        self.stream = stream
        self.headers = headers
        self.connection = h11.Connection(h11.CLIENT)

    async def get(self, target: str) -> bytes:
        """GETs /probe for ``target``; returns the (decompressed) body."""
        if self.connection.our_state is h11.DONE:
            self.connection.start_next_cycle()
        path = f"/probe?module=tcp_connect&target={target}"
        await self.stream.send_all(
            self.connection.send(h11.Request(method="GET", target=path, headers=self.headers))
            + self.connection.send(h11.EndOfMessage())
        )
        body, gzipped = bytearray(), False
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                self.connection.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                gzipped = (b"content-encoding", b"gzip") in event.headers
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return gzip.decompress(body) if gzipped else bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the exporter closed a keep-alive connection")


async def blackbox(options: dict[str, Any]) -> dict[str, Any]:
    """Drives /probe?module=tcp_connect as Prometheus does.

    ``connections`` keep-alive connections (Prometheus keeps one per target it
    scrapes in parallel) share one schedule: probe k is due at ``k / rate``
    seconds, the way Prometheus spreads its targets' scrapes over the interval. A
    probe whose due time has passed goes at once (how many did: ``late``). Without
    ``rate`` each connection asks again as soon as it has its answer.
    """
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG)
        process = await trio.lowlevel.open_process(
            [BLACKBOX, f"--config.file={config}",
             f"--web.listen-address={BLACKBOX_HOST}:{BLACKBOX_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            result = await _drive_blackbox(process.pid, options)
        finally:
            process.terminate()
            await process.wait()
    return result


async def _connect_when_up() -> trio.SocketStream:
    for _ in range(100):  # up within 10 s
        try:
            return await trio.open_tcp_stream(BLACKBOX_HOST, BLACKBOX_PORT)
        except OSError:
            await trio.sleep(0.1)
    raise RuntimeError("blackbox_exporter did not start listening within 10 s")


async def _drive_blackbox(pid: int, options: dict[str, Any]) -> dict[str, Any]:
    headers = [item for item in PROMETHEUS_HEADERS
               if options.get("gzip", True) or item[0] != "Accept-Encoding"]
    scrapers = [KeepAliveScraper(await _connect_when_up(), headers)
                for _ in range(options.get("connections", 16))]
    targets = [f"{host}:{port}" for host, port in options["targets"]]
    rate: float | None = options.get("rate")
    counts = {"completed": 0, "ok": 0, "late": 0, "next": 0}
    await scrapers[0].get(targets[0])  # the first answer, outside the window
    start = trio.current_time()
    deadline = start + options["seconds"]
    cpu_start = process_cpu_seconds(pid)

    async def scrape(scraper: KeepAliveScraper) -> None:
        while True:
            index = counts["next"]
            counts["next"] += 1
            due = start + index / rate if rate else start
            if due >= deadline or trio.current_time() >= deadline:
                return
            if rate and trio.current_time() > due + 0.01:
                counts["late"] += 1
            await trio.sleep_until(due)
            body = await scraper.get(targets[index % len(targets)])
            counts["completed"] += 1
            counts["ok"] += b"probe_success 1" in body

    async with trio.open_nursery() as nursery:
        for scraper in scrapers:
            nursery.start_soon(scrape, scraper)
    wall = trio.current_time() - start
    cpu = process_cpu_seconds(pid) - cpu_start
    peak_mib = peak_rss_kib(pid) / 1024
    for scraper in scrapers:
        await scraper.stream.aclose()
    return {"completed": counts["completed"], "ok": counts["ok"], "late": counts["late"],
            "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_mib}


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
