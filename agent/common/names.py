"""The rules for names that end up in log fields, URLs and file names.

Check names and agent ids (the agent's ``[agent] id`` and the receiver's
``[agents.<id>]``) follow one rule, so that whatever one side accepts the other
does too. Every rule is matched against the whole string (``fullmatch``): a
pattern ending in ``$`` would also accept a trailing newline, and ``web\\n`` would
become a file named ``50-check-web\\n.toml``.
"""

from __future__ import annotations

import re
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What a heartwire receiver stores for a check's display group and its host: the
# agent refuses a longer one in its config, where the receiver would refuse every
# heartbeat that lists it.
MAX_LABEL_CHARS: Final = 256
MAX_HOST_CHARS: Final = 255
NAME_RULE: Final = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a valid check name or agent id (see :data:`NAME_RULE`)."""
    return _NAME.fullmatch(name) is not None


def shown_name(text: str) -> str:
    """A name as an error message quotes it: whole when it could be valid, else its start
    and length (a 10,000-character value must not make a 10,000-character line)."""
    if len(text) <= 64:
        return repr(text)
    return f"{text[:24]!r}... ({len(text)} characters)"


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in its 8-4-4-4-12 hexadecimal form (any case)."""
    return _UUID.fullmatch(text) is not None
