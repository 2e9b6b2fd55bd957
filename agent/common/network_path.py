"""The ``path`` of a ``state_change`` on the wire, and in words for a human.

The agent writes a :class:`~agent.model.NetworkPath` with :func:`path_data`; the
receiver reads it back with :func:`parse_path`, which trusts nothing (types,
counts, lengths are all checked, at most :data:`MAX_HOPS` hops), and shows it with
:func:`describe_path`: "path to 10.0.0.5: stopped after 10.2.0.1, hop 3 (no answer
beyond)".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from agent.model import PATH_ENDS, Hop, NetworkPath

MAX_HOPS = 30
DETAIL_LIMIT = 200


def path_data(path: NetworkPath) -> dict[str, Any]:
    """The path as the protocol writes it (docs/protocol.md, ``state_change.path``)."""
    return {
        "target": path.target,
        "hops": [{"hop": hop.hop, "address": hop.address, "rtt_ms": hop.rtt_ms}
                 for hop in path.hops],
        "end": path.end,
        "detail": path.detail,
    }


def _address(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string or null")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{where} must be an IP address") from None


def parse_path(value: object) -> NetworkPath:
    """A ``path`` object from a message, validated.

    Raises:
        ValueError: naming the first field that is wrong.
    """
    if not isinstance(value, Mapping):
        raise ValueError("path must be an object")
    target = _address(value.get("target"), "path.target")
    if target is None:
        raise ValueError("path.target is required")
    end = value.get("end")
    if end not in PATH_ENDS:
        raise ValueError(f"path.end must be one of {', '.join(PATH_ENDS)}")
    detail = value.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise ValueError("path.detail must be a string or null")
    hops_raw = value.get("hops")
    if not isinstance(hops_raw, list) or len(hops_raw) > MAX_HOPS:
        raise ValueError(f"path.hops must be an array of at most {MAX_HOPS} hops")
    hops = []
    for index, item in enumerate(hops_raw):
        where = f"path.hops[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be an object")
        number, rtt = item.get("hop"), item.get("rtt_ms")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_HOPS:
            raise ValueError(f"{where}.hop must be an integer from 1 to {MAX_HOPS}")
        if rtt is not None and (not isinstance(rtt, int | float) or isinstance(rtt, bool)
                                or not 0 <= rtt < 1e9):
            raise ValueError(f"{where}.rtt_ms must be a non-negative number or null")
        hops.append(Hop(number, _address(item.get("address"), f"{where}.address"),
                        None if rtt is None else float(rtt)))
    return NetworkPath(target, tuple(hops), str(end),
                       None if detail is None else detail[:DETAIL_LIMIT])


def describe_path(path: NetworkPath) -> str:
    """The path in one line: where it reached or stopped, and why."""
    answered = [hop for hop in path.hops if hop.address is not None]
    if path.end == "reached" and answered:
        count = answered[-1].hop
        return f"path to {path.target}: reached in {count} hop{'s' if count != 1 else ''}"
    why = {"unreachable": path.detail or "unreachable", "no_answer": "no answer beyond",
           "error": path.detail or "trace failed"}.get(path.end, path.end)
    if not answered:
        return f"path to {path.target}: no hop answered ({why})"
    last = answered[-1]
    return f"path to {path.target}: stopped after {last.address}, hop {last.hop} ({why})"
