"""Choosing among several URLs of one destination: the first that answers.

A destination with several receivers (``url = ["https://c1/...", "https://c2/..."]``)
sends each message to the first URL in the configured order that is not resting;
a URL that failed rests for ``rest_s`` and is then tried first again, so traffic
returns to the preferred receiver once it is back. When every URL rests, all are
tried in order anyway: a message is never held back by the resting alone.

The order of messages and the outbox cursor belong to the destination, not to a
URL: a message is acknowledged once, whichever receiver took it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

# How long a URL that failed is passed over before it is tried first again.
DEFAULT_REST_S: Final = 30.0


class Failover:
    """The URLs of one destination and when each last failed.

    Args:
        urls: the URLs, preferred first.
        clock: a monotonic clock in seconds (trio.current_time in the agent).
        rest_s: how long a failed URL is passed over.
    """

    def __init__(self, urls: Sequence[str], clock: Callable[[], float],
                 rest_s: float = DEFAULT_REST_S) -> None:
        self.urls = tuple(urls)
        self.clock = clock
        self.rest_s = rest_s
        self._failed_at: dict[str, float] = {}

    def order(self) -> list[str]:
        """The URLs to try for the next message, in turn."""
        now = self.clock()
        awake = [url for url in self.urls
                 if now - self._failed_at.get(url, -float("inf")) >= self.rest_s]
        return awake + [url for url in self.urls if url not in awake]

    def failed(self, url: str) -> None:
        """``url`` did not take a message: it rests."""
        self._failed_at[url] = self.clock()

    def answered(self, url: str) -> None:
        """``url`` took a message."""
        self._failed_at.pop(url, None)
