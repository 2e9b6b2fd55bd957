"""The one retry policy: exponential backoff with full jitter.

Used by the agent's delivery loops and the receiver's notification dispatch, so a
fleet of agents (or receivers) that failed together does not retry together.
"""
import random


def backoff_delay(attempt: int, *, cap_s: float, rng: random.Random,
                  base_s: float = 1.0) -> float:
    """Full jitter: uniform between 0 and ``min(cap, base * 2**(attempt-1))``.

    Args:
        attempt: the number of failed attempts so far (1 for the first failure).
        cap_s: the largest delay ever returned.
        rng: the source of jitter (seeded in tests).
        base_s: the first retry's ceiling.
    """
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 1) - 1, 62))
    return rng.uniform(0.0, ceiling)
