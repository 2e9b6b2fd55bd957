"""The ``Retry-After`` header (RFC 9110 §10.2.3), read the way a hostile peer may send it.

One parser for the agent's delivery and the receiver's channels. A header is
delta-seconds (ASCII digits only: ``"²".isdigit()`` is true but is no number) or an
HTTP-date; anything else, or a value too large to mean anything, is ignored rather
than raised, so a bad header can only cost the sender its hint.
"""
import email.utils

# A value past this is a typo or a lie; the callers cap the wait far lower anyway.
_MAX_DIGITS = 12


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None if it says nothing usable.

    Args:
        value: the header's value, or None when absent.
        now: seconds since the epoch, for an HTTP-date.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= _MAX_DIGITS else None
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
