"""Small pieces of wording the commands share."""

from __future__ import annotations

import unicodedata

# Characters that would break a one-line message or steer a terminal: C0/C1
# controls (newline, ESC), format characters (bidi overrides), line/paragraph
# separators and lone surrogates (undecodable bytes of a command-line argument).
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# An error message longer than this is cut in the middle (a 100 KB argument
# echoed back helps nobody).
MAX_MESSAGE_CHARS = 1000


def counted(count: int, noun: str) -> str:
    """``1 check``, ``2 checks``, ``0 checks``: a count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one safe line: control characters escaped, at most ``limit`` characters.

    Example: ``"a\\nb\\x1b[31m"`` → ``"a\\\\nb\\\\x1b[31m"``; a longer text keeps its
    start and end around ``… (N more characters) …``.
    """
    if len(text) > limit:
        keep = limit // 2
        text = f"{text[:keep]}… ({len(text) - 2 * keep} more characters) …{text[-keep:]}"
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _UNPRINTABLE_CATEGORIES:
        return char
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
