"""Small inline SVG charts for the admin: line, scatter and bar charts (no JavaScript, no CDN).

Every chart has axis labels, the range of its axes written out, and a <title> on each point or
bar so hovering shows the value. Titles and labels are escaped; numbers are formatted here.
Which metrics a run page charts is `run_chart_specs`' choice, per run kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 360, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 24, 36
MAX_MARKERS = 200  # hover markers per chart; more points are drawn as a line only
FONT = 'font-family="sans-serif"'


@dataclass(frozen=True)
class ChartSpec:
    """One chart of a run page: the metric keys it may come from, first present wins."""

    title: str
    keys: tuple[str, ...]
    y_label: str


# The figures that say whether a run worked, by run kind. Keys are tried in order: the names
# logged by training/ppo and training/reward (and trl's, for runs recorded by its trainers).
RUN_CHARTS: dict[str, tuple[ChartSpec, ...]] = {
    "ppo": (
        ChartSpec("Reward-model score", ("score", "rm_score", "objective/scores"), "score"),
        ChartSpec("Gold (judge) score", ("gold_score", "gold"), "score"),
        ChartSpec("KL to the reference", ("kl", "kl_k3", "objective/kl"), "KL (nats)"),
        ChartSpec("Policy loss", ("policy_loss", "loss/policy_avg"), "loss"),
        ChartSpec("Value loss", ("value_loss", "loss/value_avg"), "loss"),
        ChartSpec("Approximate KL (old → new)", ("approx_kl", "policy/approxkl_avg"), "KL"),
        ChartSpec("Clip fraction", ("clip_fraction", "clipfrac", "policy/clipfrac_avg"), "share"),
    ),
    "reward": (
        ChartSpec("Held-out accuracy", ("eval_accuracy", "accuracy"), "accuracy"),
        ChartSpec("Held-out loss", ("eval_loss",), "loss"),
        ChartSpec("Training loss", ("loss", "train_loss"), "loss"),
    ),
    "sft": (
        ChartSpec("Training loss", ("loss", "train_loss"), "loss"),
        ChartSpec("Held-out loss", ("eval_loss",), "loss"),
    ),
    "dpo": (
        ChartSpec("Training loss", ("loss", "train_loss"), "loss"),
        ChartSpec("Reward accuracy", ("rewards/accuracies", "eval_rewards/accuracies"), "accuracy"),
        ChartSpec("Reward margin", ("rewards/margins", "eval_rewards/margins"), "margin"),
    ),
}


def fmt(value: float) -> str:
    """A number for a label: integers plainly, others to 4 significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


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


def _frame(title: str, x_label: str, y_label: str, x0, x1, y0, y1) -> list[str]:
    """The svg opening, title, axes, their labels and range."""
    name, bottom, right = escape(title), HEIGHT - BOTTOM, WIDTH - RIGHT
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{name}" class="chart" style="background:#fafafa;border:1px solid #ddd;'
        f'margin:4px">',
        f'<text x="{LEFT}" y="15" font-size="12" font-weight="bold" {FONT}>{name}</text>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" font-size="9" text-anchor="end" {FONT}>{fmt(y1)}</text>',
        f'<text x="{LEFT - 4}" y="{bottom}" font-size="9" text-anchor="end" {FONT}>{fmt(y0)}</text>',
        f'<text x="12" y="{(TOP + bottom) / 2:.0f}" font-size="10" text-anchor="middle" {FONT} '
        f'transform="rotate(-90 12 {(TOP + bottom) / 2:.0f})">{escape(y_label)}</text>',
        f'<text x="{LEFT}" y="{bottom + 12}" font-size="9" {FONT}>{escape(str(x0))}</text>',
        f'<text x="{right}" y="{bottom + 12}" font-size="9" text-anchor="end" {FONT}>'
        f"{escape(str(x1))}</text>",
        f'<text x="{(LEFT + right) / 2:.0f}" y="{HEIGHT - 6}" font-size="10" text-anchor="middle" '
        f"{FONT}>{escape(x_label)}</text>",
    ]


def _scale(points: list[tuple[float, float]]):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    xspan, yspan = (x1 - x0) or 1.0, (y1 - y0) or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            LEFT + (x - x0) / xspan * (WIDTH - LEFT - RIGHT),
            HEIGHT - BOTTOM - (y - y0) / yspan * (HEIGHT - TOP - BOTTOM),
        )

    return at, (x0, x1, y0, y1)


def _markers(points, at, x_label: str, y_label: str) -> list[str]:
    stride = max(1, math.ceil(len(points) / MAX_MARKERS))
    shown = points[::stride]
    if shown[-1] is not points[-1]:
        shown.append(points[-1])
    return [
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="#2a6fdb">'
        f"<title>{escape(x_label)} {fmt(x)}: {escape(y_label)} {fmt(y)}</title></circle>"
        for x, y in shown
        for cx, cy in [at(x, y)]
    ]


def line_chart_svg(
    points: list[tuple[float, float]], title: str, *, x_label: str = "step", y_label: str = ""
) -> str:
    """One metric over steps: a polyline, axes with their range, the value of each point on hover."""
    if len(points) < 2:
        return ""
    at, (x0, x1, y0, y1) = _scale(points)
    parts = _frame(
        title, f"{x_label} {fmt(x0)}–{fmt(x1)}", y_label or title, fmt(x0), fmt(x1), y0, y1
    )
    coords = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in (at(x, y) for x, y in points))
    parts.append(f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{coords}"/>')
    parts += _markers(points, at, x_label, y_label or title)
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(
    points: list[tuple[float, float]], title: str, *, x_label: str, y_label: str
) -> str:
    """Points (x, y) joined in order, e.g. reward against KL over a PPO run."""
    if len(points) < 2:
        return ""
    at, (x0, x1, y0, y1) = _scale(points)
    parts = _frame(title, x_label, y_label, fmt(x0), fmt(x1), y0, y1)
    coords = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in (at(x, y) for x, y in points))
    parts.append(f'<polyline fill="none" stroke="#bbb" stroke-width="1" points="{coords}"/>')
    parts += _markers(points, at, x_label, y_label)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart_svg(bars: list[tuple[str, float]], title: str, *, x_label: str, y_label: str) -> str:
    """Labelled bars (e.g. annotations per day), each bar's label and value on hover."""
    if not bars:
        return ""
    top = max(value for _, value in bars) or 1.0
    parts = _frame(title, x_label, y_label, bars[0][0], bars[-1][0], 0, top)
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    height = HEIGHT - TOP - BOTTOM
    for n, (label, value) in enumerate(bars):
        h = value / top * height
        parts.append(
            f'<rect x="{LEFT + n * slot + slot * 0.1:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" '
            f'width="{max(slot * 0.8, 1):.1f}" height="{h:.1f}" fill="#2a6fdb">'
            f"<title>{escape(label)}: {fmt(value)}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def run_charts_svg(kind: str, history: list[dict]) -> list[str]:
    """The charts a run of `kind` is judged by, from its metrics history (absent metrics skipped).

    Kinds without a chart list (e.g. generate) chart nothing: their figures are final counts.
    """
    charts = []
    for spec in RUN_CHARTS.get(kind, ()):
        for key in spec.keys:
            points = numeric_series(history, key)
            if len(points) >= 2:
                charts.append(line_chart_svg(points, spec.title, y_label=spec.y_label))
                break
    return [c for c in charts if c]


def reward_vs_kl_svg(history: list[dict]) -> str:
    """The loop's over-optimisation plot: RM score against KL, step by step ("" without both)."""
    for kl_key in ("kl_k3", "kl"):
        for score_key in ("score", "rm_score"):
            points = [
                (float(row[kl_key]), float(row[score_key]))
                for row in history
                if _number(row.get(kl_key)) and _number(row.get(score_key))
            ]
            if len(points) >= 2:
                return scatter_svg(
                    points, "Reward vs KL", x_label=f"{kl_key} (nats)", y_label="RM score"
                )
    return ""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
