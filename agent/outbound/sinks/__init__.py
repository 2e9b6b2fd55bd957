"""Destination protocols: how one outbox message becomes HTTP requests.

A sink is pure translation: it turns a message into requests and judges whether a
2xx response really recorded it. Sending, retries and cursors are the delivery
loop's job (``agent/outbound/delivery.py``), the same for every sink.

    native        the signed JSON protocol (docs/protocol.md)
    healthchecks  Healthchecks.io ping API (hosted or self-hosted)
    uptime-kuma   Uptime Kuma push monitors
    gatus         Gatus external endpoints
    betterstack   Better Stack heartbeat URLs
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from agent.config.destinations import DestinationConfig
from agent.outbound.sinks.base import Answer, CheckStatus, Sink
from agent.outbound.sinks.healthchecks import HealthchecksSink
from agent.outbound.sinks.native import NativeSink
from agent.outbound.sinks.pings import BetterStackSink, GatusSink, UptimeKumaSink

SinkFactory = Callable[[DestinationConfig, str | None], Sink]

SINKS: Final[dict[str, SinkFactory]] = {
    "native": NativeSink,
    "healthchecks": HealthchecksSink,
    "uptime-kuma": UptimeKumaSink,
    "gatus": GatusSink,
    "betterstack": BetterStackSink,
}


def make_sink(destination: DestinationConfig, secret: str | None) -> Sink:
    """The sink for a destination; ``secret`` is its bearer token or ping key, if any."""
    return SINKS[destination.kind](destination, secret)


__all__ = ["SINKS", "Answer", "CheckStatus", "Sink", "make_sink"]
