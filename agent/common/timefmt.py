"""Times on the wire and on pages: RFC 3339 in UTC, to the millisecond.

Every timestamp the agent sends (``timestamp``, ``at``, ``started_at``) and every one
the receiver shows or passes on (incidents, status page, alert channels) is written
here, so that all of them read alike and sort as text.
"""

from __future__ import annotations

import datetime


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as ``2026-01-01T12:00:00.000Z`` (UTC, milliseconds)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
