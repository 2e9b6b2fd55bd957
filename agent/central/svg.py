"""Inline SVG drawn on the server: a response-time chart and a row of daily uptime bars.

The status page has no JavaScript, so every chart is markup: a few ``<polyline>``
elements and ``<rect>`` elements with a ``<title>`` each (the browser shows it as
a tooltip). Sizes are a fixed ``viewBox`` scaled by CSS, so they fit a phone.
"""

from __future__ import annotations

import datetime
import functools
import html
from collections.abc import Sequence
from typing import Final

CHART_W: Final = 360
CHART_H: Final = 48
BAR_W: Final = 3
BAR_GAP: Final = 1
BAR_H: Final = 24


def _e(value: object) -> str:
    return html.escape(str(value))


def milliseconds(value: float) -> str:
    """A latency for people: ``0.41 ms``, ``12 ms``, ``1.2 s``."""
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2g} ms" if value < 1 else f"{value:.1f} ms"


def uptime_class(uptime: float | None) -> str:
    """The colour class of an uptime percentage."""
    if uptime is None:
        return "none"
    if uptime >= 99.9:
        return "good"
    if uptime >= 99.0:
        return "fair"
    if uptime >= 95.0:
        return "poor"
    return "bad"


def latency_chart(
    points: Sequence[tuple[float, float | None, float | None]],
    start: float,
    end: float,
    label: str,
) -> str:
    """A response-time chart: p95 as a light line, p50 as a dark one.

    Args:
        points: ``(time, p50 ms, p95 ms)``, oldest first; None where nothing was measured
            (the line breaks there).
        start: the time at the left edge.
        end: the time at the right edge.
        label: what the chart shows, for screen readers and the tooltip.
    """
    values = [value for _, p50, p95 in points for value in (p50, p95) if value is not None]
    if not values or end <= start:
        return (f'<svg class="chart empty" viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
                f'aria-label="{_e(label)}: no measurements"><title>{_e(label)}: no '
                f'measurements</title><text x="{CHART_W // 2}" y="{CHART_H // 2 + 4}" '
                'text-anchor="middle">no measurements yet</text></svg>')
    top = max(values) * 1.15 or 1.0
    span = end - start

    def xy(moment: float, value: float) -> str:
        x = (moment - start) / span * CHART_W
        y = CHART_H - 2 - value / top * (CHART_H - 4)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" preserveAspectRatio="none" '
             f'role="img" aria-label="{_e(label)}"><title>{_e(label)}, top of the scale '
             f"{_e(milliseconds(top))}</title>"]
    for index, css in ((2, "p95"), (1, "p50")):
        segment: list[str] = []
        segments: list[list[str]] = []
        for point in points:
            value = point[index]
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(xy(point[0], value))
        if segment:
            segments.append(segment)
        for run in segments:
            if len(run) == 1:
                x, y = run[0].split(",")
                parts.append(f'<circle class="{css}" cx="{x}" cy="{y}" r="1.8"/>')
            else:
                parts.append(f'<polyline class="{css}" points="{" ".join(run)}"/>')
    parts.append("</svg>")
    return "".join(parts)


@functools.lru_cache(maxsize=512)
def _day(midnight: int) -> str:
    # Every check's bars cover the same days: format each once.
    return datetime.datetime.fromtimestamp(midnight, tz=datetime.UTC).strftime("%Y-%m-%d")


def uptime_bars(days: Sequence[tuple[int, float | None, float | None]]) -> str:
    """One bar per UTC day (oldest left), coloured by that day's uptime; a run of
    days without data is one wide bar.

    Args:
        days: ``(midnight, uptime %, unknown %)``; None where nothing is known.
    """
    width = len(days) * (BAR_W + BAR_GAP) - BAR_GAP
    parts = [f'<svg class="bars" viewBox="0 0 {max(width, 1)} {BAR_H}" '
             'preserveAspectRatio="none" role="img" '
             f'aria-label="uptime of the last {len(days)} days">']
    index = 0
    while index < len(days):
        midnight, uptime, unknown = days[index]
        run = 1
        if uptime is None and unknown is None:
            # Days without data, one bar for the run: a new check's 90 empty days
            # would otherwise weigh more than the rest of its card.
            while index + run < len(days) and days[index + run][1:] == (None, None):
                run += 1
            last = _day(days[index + run - 1][0])
            words = f"{_day(midnight)}: no data" if run == 1 else \
                f"{_day(midnight)} to {last}: no data"
        elif uptime is None:
            words = f"{_day(midnight)}: not known"
        else:
            words = f"{_day(midnight)}: {uptime:g}% up"
            if unknown:
                words += f", {unknown:g}% not known"
        # The words are dates and numbers: nothing to escape.
        parts.append(f'<rect class="{uptime_class(uptime)}" x="{index * (BAR_W + BAR_GAP)}" '
                     f'width="{run * (BAR_W + BAR_GAP) - BAR_GAP}" height="{BAR_H}">'
                     f"<title>{words}</title></rect>")
        index += run
    parts.append("</svg>")
    return "".join(parts)
