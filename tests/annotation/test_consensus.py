"""Bradley-Terry / majority consensus and agreement with it (no database)."""

from __future__ import annotations

import math
import random

import pytest

from annotation.rules.agreement import agreement_with_consensus, kendall_tau_b, pairwise_agreement
from annotation.rules.consensus import (
    bradley_terry,
    consensus_ranking,
    majority_vote,
    tiers_from_scores,
    win_counts,
)


def plackett_luce(rng: random.Random, utilities: dict[int, float], noise: float) -> list[list[int]]:
    """One strict ranking sampled from Plackett-Luce with logits utilities / noise."""
    left = dict(utilities)
    ranking = []
    while left:
        items = list(left)
        weights = [math.exp(left[i] / noise) for i in items]
        pick = rng.choices(items, weights=weights)[0]
        ranking.append([pick])
        del left[pick]
    return ranking


def test_win_counts_count_ties_as_half():
    wins = win_counts([[[1], [2, 3]], [[3], [1], [2]]], [1, 2, 3])
    assert wins == [[0.0, 2.0, 1.0], [0.0, 0.0, 0.5], [1.0, 1.5, 0.0]]


def test_two_item_bradley_terry_matches_the_closed_form():
    # With 2 items the MM fixed point is p_a / p_b = W_a / W_b; prior 0.5 adds 0.25 to each.
    scores = bradley_terry([[[1], [2]]] * 3, prior=0.5)
    assert scores[1] - scores[2] == pytest.approx(math.log(3.25 / 0.25), abs=1e-6)
    assert scores[1] + scores[2] == pytest.approx(0.0, abs=1e-12)


def test_perfect_separation_converges_to_finite_scores_in_order():
    scores = bradley_terry([[[1], [2], [3], [4]]] * 20)
    assert all(math.isfinite(s) for s in scores.values())
    assert scores[1] > scores[2] > scores[3] > scores[4]


def test_a_cycle_gives_equal_scores_and_one_tier():
    rankings = [[[1], [2], [3]], [[2], [3], [1]], [[3], [1], [2]]]
    scores = bradley_terry(rankings)
    assert max(scores.values()) - min(scores.values()) < 1e-6
    assert consensus_ranking(rankings).tiers == [[1, 2, 3]]


def _score_equations(wins, strengths, prior=0.5):
    """Gradient of the prior-augmented Bradley-Terry log-likelihood: 0 at the fit."""
    n = len(wins)
    w = [[wins[i][j] + (prior / 2 if i != j else 0) for j in range(n)] for i in range(n)]
    return [
        sum(
            w[i][j] - (w[i][j] + w[j][i]) / (1 + math.exp(strengths[j] - strengths[i]))
            for j in range(n)
            if j != i
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(("games", "unbeaten"), [(1000, 5.5295), (100_000, None)])
def test_the_fit_reaches_the_maximum_when_one_item_never_loses(games, unbeaten):
    # A beats B and C every time, B and C split: MM crawls here, and it used to stop at its
    # 1000th iteration far short (5.10 for 5.53 at 1000 games; 5.34 for 8.6 at 100,000).
    from annotation.rules.consensus import fit_bradley_terry

    wins = [[0, games, games], [0, 0, games / 2], [0, games / 2, 0]]
    strengths = fit_bradley_terry(wins, prior=0.5)
    assert max(abs(g) for g in _score_equations(wins, strengths)) < 1e-6 * games
    assert sum(strengths) == pytest.approx(0.0, abs=1e-9)
    if unbeaten is not None:
        assert strengths[0] == pytest.approx(unbeaten, abs=1e-3)  # a BFGS fit's value


def test_a_fit_mm_finishes_is_left_as_it_was():
    # The usual case (a few labelers' rankings): MM converges and Newton adds nothing.
    from annotation.rules.consensus import _newton, fit_bradley_terry

    wins = [[0, 2, 1.5], [0, 0, 2], [0.5, 0, 0]]
    strengths = fit_bradley_terry(wins, prior=0.5)
    prior_wins = [
        [w + (0.25 if i != j else 0) for j, w in enumerate(row)] for i, row in enumerate(wins)
    ]
    assert _newton(prior_wins, list(strengths)) == pytest.approx(strengths, abs=1e-9)


def test_prior_must_be_positive():
    with pytest.raises(ValueError, match="prior"):
        bradley_terry([[[1], [2]]], prior=0)


def test_tiers_from_scores_groups_equal_scores():
    assert tiers_from_scores({1: 0.5, 2: 2.0, 3: 0.5, 4: -1.0}) == [[2], [1, 3], [4]]


def test_single_ranking_is_its_own_consensus():
    result = consensus_ranking([[[3], [1, 2]]])
    assert result.tiers == [[3], [1, 2]]
    assert result.method == "single"


def test_shared_ties_survive_bradley_terry():
    result = consensus_ranking([[[1, 2], [3]], [[1, 2], [3]], [[2, 1], [3]]])
    assert result.method == "bradley_terry"
    assert result.tiers == [[1, 2], [3]]


def test_pairwise_consensus_is_majority():
    a_wins, b_wins, tie = [[1], [2]], [[2], [1]], [[1, 2]]
    result = consensus_ranking([a_wins, a_wins, b_wins])
    assert result.method == "majority"
    assert result.tiers == [[1], [2]]
    assert result.scores == pytest.approx({1: 2 / 3, 2: 1 / 3})
    assert consensus_ranking([a_wins, b_wins]).tiers == [[1, 2]]
    assert consensus_ranking([b_wins, tie]).tiers == [[2], [1]]
    assert majority_vote([tie, tie]) == {1: 0.5, 2: 0.5}


def test_consensus_recovers_a_planted_order_from_noisy_labels():
    rng = random.Random(7)
    truth = list(range(6))
    utilities = {item: -0.6 * rank for rank, item in enumerate(truth)}
    recovered = 0
    individual_tau = []
    consensus_tau = []
    for _ in range(30):
        rankings = [plackett_luce(rng, utilities, noise=1.0) for _ in range(15)]
        result = consensus_ranking(rankings)
        individual_tau += [kendall_tau_b(r, [[i] for i in truth]) for r in rankings]
        consensus_tau.append(kendall_tau_b(result.tiers, [[i] for i in truth]))
        recovered += [c for tier in result.tiers for c in tier] == truth
    mean_individual = sum(individual_tau) / len(individual_tau)
    mean_consensus = sum(consensus_tau) / len(consensus_tau)
    # Single labelers are noisy; pooling fifteen of them should be close to the truth.
    assert mean_individual < 0.6
    assert mean_consensus > 0.85
    assert recovered >= 10


def test_pairwise_agreement_hand_values():
    strict = [[1], [2], [3]]
    assert pairwise_agreement(strict, strict) == 1.0
    assert pairwise_agreement(strict, [[1], [3], [2]]) == pytest.approx(2 / 3)
    assert pairwise_agreement(strict, [[1, 2], [3]]) == pytest.approx(2 / 3)
    assert pairwise_agreement(strict, [[3], [2], [1]]) == 0.0
    assert pairwise_agreement([[1, 2]], [[2, 1]]) == 1.0  # a tie agrees with a tie
    assert pairwise_agreement([[1]], [[1]]) is None


def test_agreement_with_consensus():
    forward, backward = [[1], [2], [3]], [[3], [2], [1]]
    # A and B agree, C disagrees: the pooled consensus is forward.
    result = agreement_with_consensus({"A": forward, "B": forward, "C": backward})
    assert result == {"A": 1.0, "B": 1.0, "C": 0.0}
    # Two labelers who disagree on one pair: the consensus ties that pair, each keeps 2/3.
    result = agreement_with_consensus({"A": forward, "B": [[1], [3], [2]]})
    assert result == pytest.approx({"A": 2 / 3, "B": 2 / 3})
    # A lone ranking has nothing to agree with.
    assert agreement_with_consensus({"A": forward}) == {"A": None}
    assert agreement_with_consensus({"A": forward}, leave_one_out=True) == {"A": None}


def test_agreement_with_leave_one_out_consensus():
    forward, backward = [[1], [2], [3]], [[3], [2], [1]]
    # A is measured against the consensus of B (forward) and C (backward): a full tie.
    result = agreement_with_consensus(
        {"A": forward, "B": forward, "C": backward}, leave_one_out=True
    )
    assert result == {"A": 0.0, "B": 0.0, "C": 0.0}
    result = agreement_with_consensus(
        {"A": forward, "B": forward, "D": forward, "C": backward}, leave_one_out=True
    )
    assert result == {"A": 1.0, "B": 1.0, "D": 1.0, "C": 0.0}


def test_a_remembered_fit_is_the_same_fit_and_cannot_be_changed_by_a_caller():
    from annotation.rules.consensus import _fit_bradley_terry, fit_bradley_terry

    wins = [[0.0, 2.0, 1.5], [0.0, 0.0, 1.0], [0.5, 1.0, 0.0]]
    fresh = list(_fit_bradley_terry.__wrapped__(tuple(map(tuple, wins)), 0.5, 1000, 1e-9))
    first = fit_bradley_terry(wins)
    first[0] = 99.0  # a caller changing its list
    assert fit_bradley_terry(wins) == fresh
    assert wins == [[0.0, 2.0, 1.5], [0.0, 0.0, 1.0], [0.5, 1.0, 0.0]]
    assert fit_bradley_terry(wins, prior=2.0) != fresh  # the prior is part of the key
