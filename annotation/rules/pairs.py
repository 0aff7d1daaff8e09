"""From a ranking to preference pairs: which pairs a ranking states (SPEC section 5).

The export's pair rows, the consensus-free reward training data and the K-wise loss all
expand rankings here, so "which pairs does this ranking state, and how many tiers apart" has
one answer. Pure Python: no Django, torch or numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from annotation.rules.ranking import Tiers, tier_of

Pairing = Literal["all_pairs", "best_vs_rest"]

PAIRINGS: tuple[str, ...] = ("all_pairs", "best_vs_rest")


def validate_pairing(pairing: str) -> None:
    """Raise ValueError unless `pairing` is one of PAIRINGS."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}: use one of {', '.join(PAIRINGS)}")


def ordered_pairs(
    tiers: Tiers, pairing: str = "all_pairs", *, check: bool = True
) -> list[tuple[int, int, int]]:
    """(chosen, rejected, tier gap) for every preference the ranking states under `pairing`.

    `all_pairs` pairs every candidate with every candidate of every lower tier and never two of
    one tier (InstructGPT: C(K, 2) pairs for a strict ranking). `best_vs_rest` pairs the top
    tier with every lower candidate (K - 1 pairs for a strict ranking). A ranking with a single
    tier (everything tied) states no preference and yields no pairs. `check=False` skips the
    validation for callers that already validated the ranking and the pairing.
    """
    if check:
        validate_pairing(pairing)
        tier_of(tiers)  # duplicate ids would silently produce contradictory pairs
    pairs: list[tuple[int, int, int]] = []
    upper_tiers = tiers[:1] if pairing == "best_vs_rest" else tiers
    for i, upper in enumerate(upper_tiers):
        for j in range(i + 1, len(tiers)):
            for chosen in upper:
                for rejected in tiers[j]:
                    pairs.append((chosen, rejected, j - i))
    return pairs


def index_pairs(tier_index: Sequence[int]) -> list[tuple[int, int, int]]:
    """`ordered_pairs` (all pairs) of a ranking given as each position's tier, by position.

    Reward training stores a ranking as `tier_index[i]` = tier of completion i; the triples
    come sorted by (better, worse) position, the order its batches are built in.
    """
    tiers: list[list[int]] = [[] for _ in range(max(tier_index, default=-1) + 1)]
    for position, tier in enumerate(tier_index):
        tiers[tier].append(position)
    return sorted(ordered_pairs(tiers, check=False))
