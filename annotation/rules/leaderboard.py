"""A model leaderboard from head-to-head outcomes (SPEC section 11, "Model leaderboard").

Each outcome is one judgement between two models' answers to the same prompt:
`(model_a, model_b, result)` with `result` "a" (a's answer preferred), "b" or "tie", and
optionally a fourth item, its cluster: outcomes of one cluster (the pairs one prompt's
rankings state) are not independent games. Per model: games played, wins, losses, ties, the
win rate counting a tie as half a win, its 95% interval, and a Bradley-Terry strength fitted
over all models at once (so beating a strong model counts for more than beating a weak one).

The interval is Wilson's score interval, on the effective number of games where outcomes
come in clusters: a K=4 comparison of two models' answers, ranked by three labelers, states
12 games that largely agree, and counted as 12 independent ones the "95%" interval covered
the true rate 67% of the time (simulated). The effective number is p(1-p) over the ratio
estimator's between-cluster variance (Kish's design effect), at most the games played.

The labeling app feeds it the pairs human rankings state between candidates of different
models (`annotation.selectors.stats.model_leaderboard_for`); the loop's report feeds it the
simulated labelers' verdicts. Pure Python: no Django, torch or numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from annotation.rules.consensus import DEFAULT_PRIOR, fit_bradley_terry

RESULTS = ("a", "b", "tie")
Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model's line of the leaderboard."""

    model: str
    comparisons: int  # outcomes this model took part in: wins + losses + ties
    wins: int
    losses: int
    ties: int
    win_rate: float  # (wins + ties / 2) / comparisons
    ci_low: float  # 95% Wilson score interval of win_rate
    ci_high: float
    strength: float  # Bradley-Terry log-strength, mean 0 over the models listed


def wilson_interval(successes: float, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / n` (ties may make successes fractional).

    Counting a tie as half a success and using the binomial variance over-states the spread a
    little when there are ties (a tie is less uncertain than a coin flip): the interval errs wide.
    """
    if n <= 0:
        raise ValueError("a Wilson interval needs at least one outcome")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_wilson_interval(
    clusters: Iterable[tuple[float, int]], *, z: float = Z_95
) -> tuple[float, float]:
    """Wilson interval of sum(successes) / sum(games) over clusters of `(successes, games)`.

    Games of one cluster may agree more than independent ones would: the interval is taken
    on the effective number of games (see the module's docstring). Clusters of one game
    each are independent games, and give `wilson_interval` itself.
    """
    clusters = [(float(s), int(g)) for s, g in clusters if g > 0]
    games = sum(g for _, g in clusters)
    if games <= 0:
        raise ValueError("an interval needs at least one outcome")
    score = sum(s for s, _ in clusters)
    if all(g == 1 for _, g in clusters):
        return wilson_interval(score, games, z=z)
    p, m = score / games, len(clusters)
    if m == 1:
        effective = 1.0  # one cluster: nothing to tell its games' agreement from
    else:
        residuals = sum((s - p * g) ** 2 for s, g in clusters)
        variance = m / (m - 1) * residuals / games**2
        if variance > 0:
            effective = min(float(games), p * (1 - p) / variance)
        else:  # every cluster at the same rate: all won or all lost, or exactly p in each
            effective = float(m) if p in (0.0, 1.0) else float(games)
    effective = max(effective, 1.0)
    return wilson_interval(p * effective, effective, z=z)


def model_leaderboard(outcomes: Iterable[tuple], *, prior: float = DEFAULT_PRIOR) -> list[ModelRow]:
    """Leaderboard rows, strongest first, from `(model_a, model_b, result[, cluster])`.

    `result` is "a", "b" or "tie"; `cluster` (any hashable: a prompt's id) groups the
    outcomes that are not independent, for the interval; without it each outcome is its
    own. An outcome between a model and itself says nothing about either and is skipped. `prior` is the Bradley-Terry prior of `consensus.fit_bradley_terry`
    (virtual games between every two models: keeps a model that never wins, or never loses,
    at a finite strength). Raises ValueError on an unknown result or an empty model name.
    Rows are sorted by strength, then win rate, then name.
    """
    index: dict[str, int] = {}
    wins: list[list[float]] = []
    counts: list[list[int]] = []  # per model: wins, losses, ties
    # per model: cluster -> [score, games]
    by_cluster: dict[str, dict[object, list[float]]] = {}
    for n, outcome in enumerate(outcomes):
        try:
            model_a, model_b, result, *rest = outcome
            (cluster,) = rest or [("outcome", n)]
        except (TypeError, ValueError):
            raise ValueError(
                f"outcome {n}: expected (model_a, model_b, result[, cluster]), got {outcome!r}"
            ) from None
        if result not in RESULTS:
            raise ValueError(f"outcome {n}: result {result!r} is not one of {', '.join(RESULTS)}")
        if not model_a or not model_b:
            raise ValueError(f"outcome {n}: a model name is empty")
        if model_a == model_b:
            continue
        i, j = (_slot(index, wins, counts, model) for model in (model_a, model_b))
        score_a = 1.0 if result == "a" else 0.0 if result == "b" else 0.5
        for model, score in ((model_a, score_a), (model_b, 1.0 - score_a)):
            entry = by_cluster.setdefault(model, {}).setdefault(cluster, [0.0, 0])
            entry[0] += score
            entry[1] += 1
        if result == "a":
            wins[i][j] += 1.0
            counts[i][0] += 1
            counts[j][1] += 1
        elif result == "b":
            wins[j][i] += 1.0
            counts[j][0] += 1
            counts[i][1] += 1
        else:
            wins[i][j] += 0.5
            wins[j][i] += 0.5
            counts[i][2] += 1
            counts[j][2] += 1
    strengths = fit_bradley_terry(wins, prior=prior) if len(index) > 1 else [0.0] * len(index)
    rows = []
    for model, i in index.items():
        won, lost, tied = counts[i]
        games = won + lost + tied
        score = won + tied / 2
        low, high = clustered_wilson_interval((s, int(g)) for s, g in by_cluster[model].values())
        rows.append(
            ModelRow(
                model=model,
                comparisons=games,
                wins=won,
                losses=lost,
                ties=tied,
                win_rate=score / games,
                ci_low=low,
                ci_high=high,
                strength=strengths[i],
            )
        )
    rows.sort(key=lambda row: (-row.strength, -row.win_rate, row.model))
    return rows


def _slot(
    index: dict[str, int], wins: list[list[float]], counts: list[list[int]], model: str
) -> int:
    """The row of `model` in the matrices, growing them for a model seen the first time."""
    if model not in index:
        index[model] = len(index)
        for row in wins:
            row.append(0.0)
        wins.append([0.0] * len(index))
        counts.append([0, 0, 0])
    return index[model]
