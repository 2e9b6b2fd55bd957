"""A fixed log-bucket latency histogram: how hourly rollups keep p50 and p95 incrementally.

A percentile cannot be updated from a running count, minimum and maximum alone, and
keeping every latency of an hour to sort it later would make a rollup as large as
the raw rows. Instead each hourly rollup row holds one counter per bucket of this
fixed layout; an observation adds one to one counter (a single ``UPDATE``), and
rows merge by adding counters (a day is the sum of its hours).

Layout (``BUCKETS`` = 42 counters, ``b0`` .. ``b41``):

* ``b0``: latencies below ``FLOOR_MS`` (0.1 ms), zero included;
* ``b1`` .. ``b40``: ``[FLOOR_MS * RATIO**(i-1), FLOOR_MS * RATIO**i)`` with
  ``RATIO`` = √2, so ``b40`` ends at 0.1 ms * 2**20 ≈ 105 s;
* ``b41``: everything above (a probe's timeout bounds it in practice).

A percentile is reported as the geometric middle of the bucket it falls in,
clamped to the minimum and maximum seen, so it is within a factor of 2**(1/4)
(about 19 %) of the exact value: plenty to tell 3 ms from 30 ms on a chart, and
the same layout in every row, so any two rows merge exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

FLOOR_MS: Final = 0.1
RATIO: Final = math.sqrt(2.0)
BUCKETS: Final = 42
_LOG_RATIO: Final = math.log(RATIO)


def bucket_of(latency_ms: float) -> int:
    """The bucket index (0 .. BUCKETS-1) a latency is counted in."""
    if not latency_ms >= FLOOR_MS:  # also catches NaN
        return 0
    if math.isinf(latency_ms):
        return BUCKETS - 1
    index = math.floor(math.log(latency_ms / FLOOR_MS) / _LOG_RATIO) + 1
    return min(index, BUCKETS - 1)


def bucket_bounds(index: int) -> tuple[float, float]:
    """The ``[low, high)`` milliseconds of one bucket (``high`` is inf for the last)."""
    if index == 0:
        return 0.0, FLOOR_MS
    low = FLOOR_MS * RATIO ** (index - 1)
    high = math.inf if index == BUCKETS - 1 else FLOOR_MS * RATIO**index
    return low, high


def quantile(counts: Sequence[int], q: float, low: float, high: float) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) of a histogram, clamped to ``[low, high]``.

    Args:
        counts: the BUCKETS counters.
        q: 0.5 for the median, 0.95 for p95.
        low: the smallest latency counted (the row's minimum).
        high: the largest latency counted (the row's maximum).

    Returns:
        The estimate in milliseconds, or None for an empty histogram.
    """
    return quantiles(counts, (q,), low, high)[0]


def quantiles(counts: Sequence[int], qs: Sequence[float], low: float,
              high: float) -> list[float | None]:
    """Several quantiles of one histogram in one pass (``qs`` ascending)."""
    total = sum(counts)
    if total <= 0:
        return [None] * len(qs)
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    found: list[float | None] = []
    seen = 0
    for index, count in enumerate(counts):
        if not count:
            continue
        seen += count
        while len(found) < len(ranks) and seen >= ranks[len(found)]:
            found.append(_representative(index, low, high))
        if len(found) == len(ranks):
            break
    return found


def _representative(index: int, low: float, high: float) -> float:
    bottom, top = bucket_bounds(index)
    if index == 0:
        middle = bottom
    elif math.isinf(top):
        middle = high
    else:
        middle = math.sqrt(bottom * top)
    return min(max(middle, low), high)


def merge(rows: Sequence[Sequence[int]]) -> list[int]:
    """Adds histograms bucket by bucket."""
    merged = [0] * BUCKETS
    for row in rows:
        for index, count in enumerate(row):
            merged[index] += count
    return merged
