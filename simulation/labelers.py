"""Simulated labelers: rank candidates by sampling from a judge's scores (SPEC section 7).

A *noisy* labeler (a careful one at low noise) samples a Plackett-Luce order from
`scores / T`: the best candidate is drawn with probability proportional to
`exp(score / T)`, then the next among the rest, and so on. T -> 0 gives the judge's order
exactly; T -> infinity gives a uniform order. A *random* labeler ranks uniformly at random
whatever the scores; an *adversarial* one reverses the judge's order. Sampling uses the
Gumbel-max trick (order by `score / T + Gumbel noise`), which is exactly Plackett-Luce and
never overflows, even for tiny T.

Pure Python: no Django, no torch, no HTTP.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class LabelerKind(StrEnum):
    NOISY = "noisy"
    RANDOM = "random"
    ADVERSARIAL = "adversarial"


# ---------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------


def _check_scores(scores: Sequence[float]) -> list[float]:
    values = [float(s) for s in scores]
    bad = [s for s in values if not math.isfinite(s)]
    if bad:
        raise ValueError(f"scores must be finite numbers, got {bad[0]!r}")
    return values


def judge_order(scores: Sequence[float], rng: random.Random) -> list[int]:
    """Indices best first by score; equal scores are put in a random order."""
    values = _check_scores(scores)
    tiebreak = [rng.random() for _ in values]
    return sorted(range(len(values)), key=lambda i: (-values[i], tiebreak[i]))


def _gumbel(rng: random.Random) -> float:
    u = rng.random()
    while u == 0.0:  # random() is in [0, 1); log(0) would be -inf
        u = rng.random()
    return -math.log(-math.log(u))


def plackett_luce_order(
    scores: Sequence[float], temperature: float, rng: random.Random
) -> list[int]:
    """Indices best first, sampled from Plackett-Luce with utilities `scores / temperature`.

    Temperature 0 is the judge's order (ties broken at random); infinity is a uniform order.
    """
    if math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    values = _check_scores(scores)
    if temperature == 0:
        return judge_order(values, rng)
    if math.isinf(temperature):
        order = list(range(len(values)))
        rng.shuffle(order)
        return order
    # Gumbel-max: argsort of utility + i.i.d. Gumbel(0, 1) noise is a Plackett-Luce sample.
    keys = [v / temperature + _gumbel(rng) for v in values]
    return sorted(range(len(values)), key=lambda i: -keys[i])


def labeler_order(
    kind: LabelerKind | str, scores: Sequence[float], *, temperature: float, rng: random.Random
) -> list[int]:
    """The order (indices best first) a labeler of this kind gives candidates with these scores."""
    kind = LabelerKind(kind)
    if kind is LabelerKind.NOISY:
        return plackett_luce_order(scores, temperature, rng)
    if kind is LabelerKind.RANDOM:
        order = list(range(len(_check_scores(scores))))
        rng.shuffle(order)
        return order
    return judge_order(scores, rng)[::-1]


def order_to_tiers(
    order: Sequence[int],
    scores: Mapping[int, float] | Sequence[float],
    *,
    ties: bool = False,
    epsilon: float = 0.0,
) -> list[list[int]]:
    """Turn an order of candidates into tiers, best first.

    Strict (one candidate per tier) unless `ties`: then each candidate whose score is within
    `epsilon` of its tier's first joins that tier, so only near-equal neighbours tie.
    `scores[item]` is the judge's score of each item of `order`.
    """
    if not ties:
        return [[item] for item in order]
    tiers: list[list[int]] = []
    for item in order:
        if tiers and abs(scores[item] - scores[tiers[-1][0]]) <= epsilon:
            tiers[-1].append(item)
        else:
            tiers.append([item])
    return tiers


def kinds_for(labelers: int, *, random_share: float = 0.0, adversarial_share: float = 0.0) -> list:
    """The kind of each of `labelers` labelers: noisy first, then random, then adversarial.

    Shares are rounded to whole labelers (a share above 0 gets at least one labeler).
    """
    if labelers < 1:
        raise ValueError("at least one labeler is needed")
    for name, share in (("random_share", random_share), ("adversarial_share", adversarial_share)):
        if math.isnan(share) or not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share!r}")
    if random_share + adversarial_share > 1.0 + 1e-9:
        raise ValueError("random_share + adversarial_share must not exceed 1")

    def count(share: float) -> int:
        return 0 if share == 0 else max(1, round(share * labelers))

    n_random, n_adversarial = count(random_share), count(adversarial_share)
    if n_random + n_adversarial > labelers:
        raise ValueError(
            f"{labelers} labelers cannot hold {n_random} random and {n_adversarial} adversarial ones"
        )
    n_noisy = labelers - n_random - n_adversarial
    return (
        [LabelerKind.NOISY] * n_noisy
        + [LabelerKind.RANDOM] * n_random
        + [LabelerKind.ADVERSARIAL] * n_adversarial
    )


@dataclass
class SimulatedLabeler:
    """One simulated labeler: a kind, a noise temperature and its own random stream.

    `tie_epsilon` None gives strict rankings; a number ties candidates whose judge scores
    are within it, on projects that allow ties.
    """

    name: str
    kind: LabelerKind
    temperature: float
    rng: random.Random
    tie_epsilon: float | None = None

    def rank(
        self, candidate_ids: Sequence[int], scores: Sequence[float], *, allow_ties: bool = False
    ) -> list[list[int]]:
        """Tiers of candidate ids, best first, given the judge's score of each candidate.

        The random draws run over the candidates sorted by id, not in the order served:
        the display order is shuffled per (comparison, labeler) primary key, so drawing in
        it would give other labels for the same --seed in a database with other ids.
        """
        if len(candidate_ids) != len(scores):
            raise ValueError("one score per candidate is needed")
        by_id = dict(zip(candidate_ids, scores))
        ids = sorted(by_id)
        order = labeler_order(
            self.kind, [by_id[i] for i in ids], temperature=self.temperature, rng=self.rng
        )
        return order_to_tiers(
            [ids[i] for i in order],
            by_id,
            ties=allow_ties and self.tie_epsilon is not None,
            epsilon=self.tie_epsilon or 0.0,
        )


def simulated_labelers(
    names: Sequence[str],
    *,
    noise: float,
    random_share: float = 0.0,
    adversarial_share: float = 0.0,
    seed: int = 0,
    tie_epsilon: float | None = None,
) -> list[SimulatedLabeler]:
    """Labelers named `names`, kinds by share, each with a random stream seeded by (seed, i)."""
    if math.isnan(noise) or noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    kinds = kinds_for(len(names), random_share=random_share, adversarial_share=adversarial_share)
    return [
        SimulatedLabeler(
            name=name,
            kind=kind,
            temperature=noise,
            # A string seed is hashed deterministically (unlike hash()), so runs repeat.
            rng=random.Random(f"simulate:{seed}:{i}"),
            tie_epsilon=tie_epsilon,
        )
        for i, (name, kind) in enumerate(zip(names, kinds))
    ]
