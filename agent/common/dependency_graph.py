"""Cycles in a "depends on" graph: one found, named in order, for a config error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

# A check's parents: a handful in practice; each costs a lookup when it alerts.
MAX_DEPENDS_ON: Final = 16


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> the nodes it depends on), or None when there is none.

    Iterative (a config may hold thousands of checks: no recursion limit to hit);
    cost linear in nodes and edges. Edges to nodes outside ``graph`` are ignored.

    Returns:
        The nodes of one cycle, its first node repeated at the end
        (``["a", "b", "a"]``), or None.
    """
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending = [iter(graph[start])]
        while pending:
            step = next(pending[-1], None)
            if step is None:
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if step in on_path:
                return [*path[path.index(step):], step]
            if step in done or step not in graph:
                continue
            path.append(step)
            on_path.add(step)
            pending.append(iter(graph[step]))
    return None
