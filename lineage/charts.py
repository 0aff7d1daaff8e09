"""Small inline SVG line charts of a run's metrics, for the admin (no JavaScript, no CDN)."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT, PAD = 320, 120, 28


def numeric_series(history: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) points of one metric; the x is `step` when logged, else the row index."""
    points = []
    for index, row in enumerate(history):
        value = row.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            continue
        step = row.get("step", index)
        points.append(
            (float(step) if isinstance(step, (int, float)) else float(index), float(value))
        )
    return points


def chart_keys(history: list[dict], limit: int = 12) -> list[str]:
    """Metric names worth a chart: numeric in at least two rows, `step`-like counters left out."""
    seen: dict[str, int] = {}
    for row in history:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                seen[key] = seen.get(key, 0) + 1
    skip = {"step", "epoch_step", "global_step", "episode", "episodes"}
    return [k for k, n in seen.items() if n >= 2 and k not in skip][:limit]


def line_chart_svg(points: list[tuple[float, float]], title: str) -> str:
    """One metric as an SVG polyline with min/max labels."""
    if len(points) < 2:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    xspan, yspan = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    coords = " ".join(
        f"{PAD + (x - x0) / xspan * (WIDTH - 2 * PAD):.1f},{HEIGHT - PAD - (y - y0) / yspan * (HEIGHT - 2 * PAD):.1f}"
        for x, y in points
    )
    name = escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{name}" style="background:#fafafa;border:1px solid #ddd;margin:4px">'
        f'<text x="{PAD}" y="14" font-size="12" font-family="sans-serif">{name}</text>'
        f'<text x="2" y="{PAD + 4}" font-size="9" font-family="sans-serif">{y1:.4g}</text>'
        f'<text x="2" y="{HEIGHT - PAD}" font-size="9" font-family="sans-serif">{y0:.4g}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="9" font-family="sans-serif" '
        f'text-anchor="end">step {x1:.0f}</text>'
        f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{coords}"/></svg>'
    )


def metrics_charts_svg(history: list[dict]) -> str:
    """All charts of a run's metrics history, concatenated."""
    return "".join(line_chart_svg(numeric_series(history, k), k) for k in chart_keys(history))
