"""Scale of one agent: 10,000 TCP checks every 10 s on one core.

The daemon ``heartwire run`` builds (:mod:`bench.daemon_run`), pinned to one CPU,
with one native destination that weighs what it receives (:mod:`bench.receiver`).
Beside it, in another process, a bare trio timer measures the machine's own wakeup
noise in the same minute.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench.common import Receiver, finish_worker, start_worker, wait_for_window
from bench.daemon_run import started_daemon

Say = Callable[[str], None]
CHECKS = 10_000
INTERVAL_S = 10.0
# The reference receiver's default body limit ([server] max_body_bytes).
CENTRAL_MAX_BODY_BYTES = 8 * 1024 * 1024


def one_agent_at_scale(netns: str, targets: list[Any], receiver: Receiver, *, quick: bool,
                       say: Say) -> None:
    """The section "Scale of one agent" (see the module docstring)."""
    # Every first run falls within the first interval; the drain of their state
    # changes is waited for on top (see bench.daemon_run).
    warmup_s, seconds = INTERVAL_S + 1.0, (10.0 if quick else 60.0)
    cpu = max(os.sched_getaffinity(0))
    with started_daemon(netns, targets, receiver.url, checks=CHECKS, interval_s=INTERVAL_S,
                        timeout_s=2.0, warmup_s=warmup_s, seconds=seconds, cpu=cpu) as worker:
        finish = wait_for_window(worker, "bench.daemon_run")
        # The CPU's own wakeup noise, in another process on the same CPU, during the
        # same window.
        timer = start_worker(netns, "bench.footprint", {"mode": "timer", "warmup_s": 0.0,
                                                        "seconds": seconds - 1.0, "cpu": cpu})
        run = finish()
    floor = finish_worker(timer, "bench.footprint")
    beats = [record for record in receiver.records() if record["type"] == "heartbeat"]
    share = run["cpu_s"] / run["wall_s"]
    drained = (f"the start's {CHECKS:,} state changes (every check's first run turns it from "
               f"unknown to up; one POST each) were delivered {run['drained_after_s']:.0f} s "
               f"after the start" if run["drained_after_s"] is not None
               else f"the start's {CHECKS:,} state changes were **not all delivered** within "
                    f"the time allowed")
    say(f"{CHECKS:,} TCP checks every {INTERVAL_S:g} s ({CHECKS / INTERVAL_S:,.0f} checks/s) "
        f"through the `heartwire run` daemon, pinned to CPU {cpu}, one native destination; "
        f"{drained}; then {seconds:g} s measured.")
    say("")
    say(f"- runs in the window: {run['completed']:,} (planned "
        f"{CHECKS * seconds / INTERVAL_S:,.0f}), skipped {run['skipped']:,}; "
        f"{run['up']:,} of {CHECKS:,} checks up at the end")
    say(f"- CPU: **{share:.1%} of one core**, {run['cpu_s'] / max(1, run['completed']) * 1000:.3f} "
        f"CPU-s per 1,000 checks")
    say(f"- peak RSS: **{run['peak_rss_mib']:.1f} MiB** ({run['built_rss_mib']:.1f} MiB once "
        f"the config of {CHECKS:,} checks is loaded, before the first check)")
    say(f"- scheduling lag (actual minus planned start): p50 {run['lag_p50_ms']:.2f} ms, "
        f"**p99 {run['lag_p99_ms']:.2f} ms**, max {run['lag_max_ms']:.2f} ms; a bare trio "
        f"timer waking every 10 ms in another process on the same CPU, same window: p50 "
        f"{floor['lag_p50_ms']:.2f} ms, p99 {floor['lag_p99_ms']:.2f} ms, max "
        f"{floor['lag_max_ms']:.2f} ms")
    say(f"- full collections of the garbage collector in the window: "
        f"{run['gc_full_collections']}, the longest {run['gc_full_max_ms']:.0f} ms (wall time, "
        f"which on a shared CPU includes time other processes had it)")
    if not beats:
        say("- heartbeat: **none arrived** at the receiver")
        return
    beat = beats[-1]
    say(f"- one heartbeat (the last of {len(beats)}; the default `heartbeat_interval` of 30 s) "
        f"on the wire: **{beat['wire_bytes']:,} bytes** (body {beat['body_bytes']:,}, "
        f"{beat['body_bytes'] / CHECKS:.0f} per check); gzip-compressed body "
        f"**{beat['gzip_bytes']:,} bytes** ({beat['body_bytes'] / beat['gzip_bytes']:.0f}x "
        f"smaller). The agent sends it uncompressed: neither it nor `heartwire central` "
        f"speaks `Content-Encoding: gzip` today. At this size per check, `heartwire "
        f"central`'s default body limit (8 MiB) is reached at about "
        f"{CENTRAL_MAX_BODY_BYTES // max(1, beat['body_bytes'] // CHECKS):,} checks")
