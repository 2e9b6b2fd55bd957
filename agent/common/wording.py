"""Small pieces of wording the commands share."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``1 check``, ``2 checks``, ``0 checks``: a count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
