"""Consensus across the labelers of one comparison: one ranking from several.

K > 2: a Bradley-Terry fit over every pairwise outcome the rankings state (a tie is half a win
each way), by Hunter's MM algorithm with a small symmetric prior so it converges even when one
candidate beat every other every time; where MM crawls (one item unbeaten over thousands of
games, as in a model leaderboard) Newton's method finishes the fit. K = 2: a plain majority vote (the same order BT would
give, without the iterations). Pure Python: no Django, torch or numpy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from annotation.rules.ranking import Tiers, tier_of

DEFAULT_PRIOR = 0.5
DEFAULT_TIE_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Consensus:
    """The consensus ranking of one comparison and the scores behind it."""

    tiers: list[list[int]]
    scores: dict[int, float]  # BT log-strengths centred on 0, or majority win shares
    method: str  # "bradley_terry", "majority" or "single"
    n_rankings: int


def items_of(rankings: Sequence[Tiers], items: Iterable[int] | None = None) -> list[int]:
    """`items` as a list, else every item the rankings name, sorted."""
    if items is not None:
        return list(items)
    seen: dict[int, None] = {}
    for tiers in rankings:
        for tier in tiers:
            for candidate in tier:
                seen.setdefault(candidate, None)
    return sorted(seen)


def win_counts(rankings: Iterable[Tiers], items: Sequence[int]) -> list[list[float]]:
    """wins[i][j]: how often items[i] was ranked above items[j]; a tie adds 0.5 to both."""
    position = {item: n for n, item in enumerate(items)}
    wins = [[0.0] * len(items) for _ in items]
    for tiers in rankings:
        tier = tier_of(tiers)
        ranked = [(position[c], t) for c, t in tier.items() if c in position]
        for a in range(len(ranked)):
            i, ti = ranked[a]
            for b in range(a + 1, len(ranked)):
                j, tj = ranked[b]
                if ti < tj:
                    wins[i][j] += 1.0
                elif tj < ti:
                    wins[j][i] += 1.0
                else:
                    wins[i][j] += 0.5
                    wins[j][i] += 0.5
    return wins


def bradley_terry(
    rankings: Sequence[Tiers],
    *,
    items: Iterable[int] | None = None,
    prior: float = DEFAULT_PRIOR,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> dict[int, float]:
    """Bradley-Terry log-strengths (mean 0) of the items, fitted by MM (Hunter 2004).

    `prior` adds that many virtual games between every two items, split evenly: a Bayesian
    nudge towards equal strengths that keeps the maximum finite under perfect separation and
    the comparison graph connected. Items nobody ranked get the mean strength.
    """
    ordered = items_of(rankings, items)
    if not ordered:
        return {}
    strengths = fit_bradley_terry(
        win_counts(rankings, ordered), prior=prior, max_iter=max_iter, tol=tol
    )
    return dict(zip(ordered, strengths))


def fit_bradley_terry(
    wins: list[list[float]],
    *,
    prior: float = DEFAULT_PRIOR,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> list[float]:
    """Bradley-Terry log-strengths (mean 0) from a win matrix, fitted by MM (Hunter 2004).

    `wins[i][j]` is how often item i beat item j (a tie half each way). `prior` adds that many
    virtual games between every two items, split evenly (see `bradley_terry`). The matrix is
    not modified.

    Fits are remembered by their win matrix: the statistics page, the review filter and
    consensus exports fit one per comparison, and a project's comparisons repeat a few
    hundred patterns (K=4 and two labelers give at most 576), so most are looked up.
    """
    if not wins:
        return []
    if prior <= 0:
        raise ValueError("prior must be positive: without it perfect separation diverges")
    key = tuple(tuple(row) for row in wins)
    return list(_fit_bradley_terry(key, prior, max_iter, tol))


@functools.lru_cache(maxsize=20_000)
def _fit_bradley_terry(
    wins: tuple[tuple[float, ...], ...], prior: float, max_iter: int, tol: float
) -> tuple[float, ...]:
    n = len(wins)
    wins = [
        [w + (prior / 2 if i != j else 0.0) for j, w in enumerate(row)]
        for i, row in enumerate(wins)
    ]
    total_wins = [sum(row) for row in wins]
    games = [[wins[i][j] + wins[j][i] for j in range(n)] for i in range(n)]
    strength = [1.0] * n
    for _ in range(max_iter):
        updated = []
        for i in range(n):
            denominator = sum(games[i][j] / (strength[i] + strength[j]) for j in range(n) if j != i)
            updated.append(total_wins[i] / denominator if denominator else strength[i])
        # Fix the scale (BT is invariant to it): geometric mean 1, so log-strengths sum to 0.
        log_mean = sum(math.log(s) for s in updated) / n
        updated = [s / math.exp(log_mean) for s in updated]
        change = max(abs(math.log(u) - math.log(s)) for u, s in zip(updated, strength))
        strength = updated
        if change < tol:
            break
    theta = [math.log(s) for s in strength]
    if not _at_maximum(wins, theta):
        # MM crawls under near-separation with many games (one model unbeaten in thousands:
        # 17,000 iterations for 1000 games each, still 1.5 short after 1000). Newton's method
        # on the same concave likelihood finishes the fit in a handful of steps.
        theta = _newton(wins, theta)
    return tuple(theta)


def _gradient(wins: list[list[float]], theta: list[float]) -> list[float]:
    """d log L / d theta_i of the Bradley-Terry likelihood (the prior is in `wins`)."""
    n = len(theta)
    return [
        sum(
            wins[i][j] - (wins[i][j] + wins[j][i]) / (1.0 + math.exp(theta[j] - theta[i]))
            for j in range(n)
            if j != i
        )
        for i in range(n)
    ]


def _at_maximum(wins: list[list[float]], theta: list[float], rel: float = 1e-7) -> bool:
    """Whether each score equation holds to `rel` of the games its item played."""
    n = len(theta)
    gradient = _gradient(wins, theta)
    return all(
        abs(g) <= rel * (1.0 + sum(wins[i][j] + wins[j][i] for j in range(n) if j != i))
        for i, g in enumerate(gradient)
    )


def _log_likelihood(wins: list[list[float]], theta: list[float]) -> float:
    total = 0.0
    for i, row in enumerate(wins):
        for j, w in enumerate(row):
            if i != j and w:
                x = theta[i] - theta[j]  # log sigmoid(x), without overflow either way
                total += w * (-math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x)))
    return total


def _newton(wins: list[list[float]], theta: list[float], max_iter: int = 100) -> list[float]:
    """Newton ascent from `theta` with step halving; log-strengths centred on 0.

    The likelihood does not change when every strength moves by the same amount, so the last
    strength is held still while solving and the result is centred afterwards; the prior's
    games between every two items make the rest of the Hessian definite.
    """
    n = len(theta)
    theta = list(theta)
    for _ in range(max_iter):
        if _at_maximum(wins, theta, rel=1e-12):
            break
        gradient = _gradient(wins, theta)
        # Negative Hessian over the first n - 1 strengths: positive definite.
        info = [[0.0] * (n - 1) for _ in range(n - 1)]
        for i in range(n - 1):
            for j in range(n):
                if j == i:
                    continue
                p = 1.0 / (1.0 + math.exp(theta[j] - theta[i]))
                curvature = (wins[i][j] + wins[j][i]) * p * (1.0 - p)
                info[i][i] += curvature
                if j < n - 1:
                    info[i][j] -= curvature
        step = [*_solve(info, gradient[: n - 1]), 0.0]
        before = _log_likelihood(wins, theta)
        scale = 1.0
        for _ in range(40):
            trial = [t + scale * d for t, d in zip(theta, step)]
            if _log_likelihood(wins, trial) >= before:
                break
            scale /= 2
        else:
            break  # no ascent left: at the maximum to rounding
        theta = trial
    mean = sum(theta) / n
    return [t - mean for t in theta]


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """x with matrix @ x = rhs, by Gaussian elimination with partial pivoting."""
    n = len(rhs)
    a = [[*row, b] for row, b in zip(matrix, rhs)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - sum(a[r][c] * x[c] for c in range(r + 1, n))) / a[r][r]
    return x


def tiers_from_scores(
    scores: Mapping[int, float], *, tie_tolerance: float = DEFAULT_TIE_TOLERANCE
) -> list[list[int]]:
    """Tiers best first; items whose scores differ by at most `tie_tolerance` share a tier."""
    ordered = sorted(scores, key=lambda item: (-scores[item], item))
    tiers: list[list[int]] = []
    for item in ordered:
        if tiers and scores[tiers[-1][0]] - scores[item] <= tie_tolerance:
            tiers[-1].append(item)
        else:
            tiers.append([item])
    return tiers


def majority_vote(
    rankings: Sequence[Tiers], *, items: Iterable[int] | None = None
) -> dict[int, float]:
    """Share of the head-to-head outcomes each item won (ties half): the pairwise majority."""
    ordered = items_of(rankings, items)
    wins = win_counts(rankings, ordered)
    shares = {}
    for i, item in enumerate(ordered):
        played = sum(wins[i][j] + wins[j][i] for j in range(len(ordered)) if j != i)
        shares[item] = sum(wins[i]) / played if played else 0.5
    return shares


def consensus_ranking(
    rankings: Sequence[Tiers],
    *,
    items: Iterable[int] | None = None,
    prior: float = DEFAULT_PRIOR,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> Consensus:
    """The consensus of several labelers' rankings of one comparison.

    Two candidates: majority vote, an even vote is a tie. More: Bradley-Terry scores,
    sorted, equal scores tied. One ranking is its own consensus.
    """
    ordered = items_of(rankings, items)
    if not rankings:
        raise ValueError("consensus needs at least one ranking")
    if len(rankings) == 1 and {c for tier in rankings[0] for c in tier} == set(ordered):
        tiers = [sorted(tier) for tier in rankings[0]]
        scores = {c: float(-t) for c, t in tier_of(tiers).items()}
        return Consensus(tiers=tiers, scores=scores, method="single", n_rankings=1)
    if len(ordered) == 2:
        scores = majority_vote(rankings, items=ordered)
        # Win shares are exact multiples of 1/(2n), so any tolerance below that separates them.
        tiers = tiers_from_scores(scores, tie_tolerance=tie_tolerance)
        return Consensus(tiers=tiers, scores=scores, method="majority", n_rankings=len(rankings))
    scores = bradley_terry(rankings, items=ordered, prior=prior)
    tiers = tiers_from_scores(scores, tie_tolerance=tie_tolerance)
    return Consensus(tiers=tiers, scores=scores, method="bradley_terry", n_rankings=len(rankings))
