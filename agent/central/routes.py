"""The read-only routes added to the receiver's five: history, check pages, metrics.

====  ==========================================  ======================================
GET   ``/api/v1/checks/<agent>/<check>/history``  one check's points (history_api.py)
GET   ``/checks/<agent>/<check>``                 one check's page (page.py)
GET   ``/metrics``                                Prometheus text format (metrics.py)
GET   ``/api/v1/maintenance``                     the maintenance windows active now
====  ==========================================  ======================================

:meth:`Routes.get` answers a path it knows and returns None for any other, so
app.py keeps its own table and asks this one last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from agent.central.history import History
from agent.central.history_api import history_json
from agent.central.maintenance import Maintenance
from agent.central.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.central.metrics import Metrics
from agent.central.page import StatusPage
from agent.central.storage import Storage
from agent.common.timefmt import rfc3339

CHECKS_PREFIX: Final = "/api/v1/checks/"
CHECK_PAGE_PREFIX: Final = "/checks/"
METRICS_PATH: Final = "/metrics"
MAINTENANCE_PATH: Final = "/api/v1/maintenance"
HTML: Final = b"text/html; charset=utf-8"
HISTORY_SUFFIX: Final = "/history"
JSON: Final = b"application/json"


@dataclass(frozen=True, slots=True)
class Page:
    """One answer: status, body and its content type."""

    status: int
    body: bytes
    content_type: bytes


def json_page(status: int, value: object) -> Page:
    """A JSON answer, formatted like app.py's."""
    return Page(status, json.dumps(value, indent=1).encode() + b"\n", JSON)


def split_check_path(rest: str) -> tuple[str, str] | None:
    """``<agent>/<check>`` into its two names (neither may hold a '/'), else None."""
    agent, sep, check = rest.partition("/")
    if not sep or not agent or not check or "/" in check:
        return None
    return agent, check


class Routes:
    """The extra GET routes.

    Args:
        storage: the store.
        history: observations, rollups and uptime.
        page: renders the check pages.
        metrics: renders ``/metrics``.
    """

    def __init__(self, storage: Storage, history: History, page: StatusPage,
                 metrics: Metrics) -> None:
        self.storage = storage
        self.history = history
        self.page = page
        self.metrics = metrics
        self.maintenance: Maintenance | None = None

    def get(self, path: str, query_string: bytes, now: float) -> Page | None:
        """The answer to ``GET path?query_string`` at ``now``, or None when the path is
        not ours. Blocking (it reads the store): the app runs it in its reader thread."""
        if path == MAINTENANCE_PATH:
            windows = self.maintenance.windows(now) if self.maintenance is not None else []
            return json_page(200, {"maintenance": [
                {"id": window.id, "agent": window.agent, "checks": list(window.checks) or None,
                 "starts_at": rfc3339(window.starts_at), "ends_at": rfc3339(window.ends_at),
                 "reason": window.reason} for window in windows]})
        if path == METRICS_PATH:
            return Page(200, self.metrics.render(now).encode(), METRICS_CONTENT_TYPE)
        if path.startswith(CHECKS_PREFIX) and path.endswith(HISTORY_SUFFIX):
            names = split_check_path(path[len(CHECKS_PREFIX):-len(HISTORY_SUFFIX)])
            if names is None:
                return json_page(404, {"error": "not_found", "message": f"no route {path}"})
            return json_page(*history_json(self.history, self.storage, *names, query_string,
                                           now))
        if path.startswith(CHECK_PAGE_PREFIX):
            names = split_check_path(path[len(CHECK_PAGE_PREFIX):])
            html = self.page.check_page(*names, now) if names is not None else None
            if html is None:
                return Page(404, b"<!DOCTYPE html><title>not found</title><p>No such check. "
                            b'<a href="/">All checks</a></p>\n', HTML)
            return Page(200, html.encode(), HTML)
        return None
