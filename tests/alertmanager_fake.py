"""A loopback server speaking Alertmanager's API v2 for alerts (api/v2/openapi.yaml).

``POST /api/v2/alerts`` takes ``postableAlerts`` (a JSON array of objects with
required ``labels``, a map of strings, and optional ``annotations``, ``startsAt``,
``endsAt`` as RFC 3339 date-times and ``generatorURL``), validates it as
Alertmanager does (at least one label, valid label names, start before end) and
answers 200 with an empty body, or 400 with a JSON string. Alerts are kept by
their label set, like Alertmanager's fingerprint: a later post of the same labels
updates annotations and ``endsAt``. ``GET /api/v2/alerts`` lists them with
``status.state`` ``active`` while ``endsAt`` is in the future of the fake's clock.
A ``refuse`` status makes every post answer that status instead.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _time(value: object, field: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field} in body must be of type date-time")
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{field} in body must be of type date-time")
    return moment


class FakeAlertmanager:
    """The server's state; use :func:`running_alertmanager`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.posts: list[list[dict[str, Any]]] = []
        self.alerts: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        self.refuse: int | None = None
        self.authorization: list[str | None] = []
        self.lock = threading.Lock()
        self.url = ""

    def accept(self, body: bytes) -> tuple[int, bytes]:
        """Validates and stores one post; the status and body of the answer."""
        if self.refuse is not None:
            return self.refuse, b'"refused by the test"'
        try:
            alerts = json.loads(body)
            if not isinstance(alerts, list):
                raise ValueError("body must be an array of postableAlert")
            for alert in alerts:
                self._validate(alert)
        except ValueError as exc:
            return 400, json.dumps(str(exc)).encode()
        with self.lock:
            self.posts.append(alerts)
            for alert in alerts:
                key = tuple(sorted(alert["labels"].items()))
                kept = self.alerts.setdefault(key, {"startsAt": alert.get("startsAt")})
                kept.update(labels=alert["labels"], annotations=alert.get("annotations", {}),
                            endsAt=alert.get("endsAt"), generatorURL=alert.get("generatorURL"))
        return 200, b""

    @staticmethod
    def _validate(alert: object) -> None:
        if not isinstance(alert, dict):
            raise ValueError("postableAlert must be an object")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise ValueError("labels in body is required")
        for name, value in {**labels, **alert.get("annotations", {})}.items():
            if not _LABEL_NAME.match(name) or not isinstance(value, str):
                raise ValueError(f"invalid label set: {name!r}")
        starts = _time(alert["startsAt"], "startsAt") if "startsAt" in alert else None
        ends = _time(alert["endsAt"], "endsAt") if "endsAt" in alert else None
        if starts and ends and ends < starts:
            raise ValueError("start time must be before end time")
        extra = set(alert) - {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
        if extra:
            raise ValueError(f"unknown fields {sorted(extra)}")

    def listing(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts with their state by the fake's clock."""
        now = datetime.datetime.fromtimestamp(self.clock(), tz=datetime.UTC)
        with self.lock:
            return [{**alert, "status": {"state": "active" if alert["endsAt"] is None
                                         or _time(alert["endsAt"], "endsAt") > now
                                         else "resolved"}}
                    for alert in self.alerts.values()]


@contextmanager
def running_alertmanager(clock: Callable[[], float]) -> Iterator[FakeAlertmanager]:
    """The fake on 127.0.0.1 and an ephemeral port; its ``url`` is the base URL."""
    fake = FakeAlertmanager(clock)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(min(length, 1 << 20))
            if self.path != "/api/v2/alerts":
                self._answer(404, b'"not found"')
                return
            if self.headers.get("content-type") != "application/json":
                self._answer(400, b'"content type must be application/json"')
                return
            fake.authorization.append(self.headers.get("authorization"))
            self._answer(*fake.accept(body))

        def do_GET(self) -> None:
            self._answer(200, json.dumps(fake.listing()).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
