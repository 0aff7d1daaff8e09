"""Pairs from tiers, weights, margins and the pair rows of an export (no database)."""

from __future__ import annotations

import math
from itertools import combinations

import pytest

from annotation.datafiles.rows import CandidateText, pair_rows, ranking_row
from annotation.rules.pairs import index_pairs, ordered_pairs


def _weights(tiers, pairing="all_pairs") -> list[float]:
    candidates = {c: CandidateText(f"text {c}") for tier in tiers for c in tier}
    rows = pair_rows(
        prompt="p",
        candidates=candidates,
        tiers=tiers,
        pairing=pairing,
        split="train",
        comparison_id=1,
        annotation_id=1,
        labeler="L",
    )
    return [r["weight"] for r in rows]


@pytest.mark.parametrize("k", range(2, 10))
def test_all_pairs_of_a_strict_ranking_is_every_pair_best_first(k):
    tiers = [[c] for c in range(10, 10 + k)]
    pairs = ordered_pairs(tiers, "all_pairs")
    assert len(pairs) == math.comb(k, 2)
    assert {(chosen, rejected) for chosen, rejected, _ in pairs} == set(
        combinations(range(10, 10 + k), 2)
    )
    for chosen, rejected, gap in pairs:
        assert gap == rejected - chosen  # ids equal positions here: gap = tier gap
    assert math.fsum(_weights(tiers)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", range(2, 10))
def test_best_vs_rest_pairs_the_winner_with_each_other(k):
    tiers = [[c] for c in range(k)]
    assert ordered_pairs(tiers, "best_vs_rest") == [(0, j, j) for j in range(1, k)]
    assert math.fsum(_weights(tiers, "best_vs_rest")) == pytest.approx(1.0)


def test_ties_never_pair_inside_a_tier_and_margin_is_the_tier_gap():
    tiers = [[1, 2], [3], [4, 5]]
    assert sorted(ordered_pairs(tiers, "all_pairs")) == [
        (1, 3, 1),
        (1, 4, 2),
        (1, 5, 2),
        (2, 3, 1),
        (2, 4, 2),
        (2, 5, 2),
        (3, 4, 1),
        (3, 5, 1),
    ]
    assert sorted(ordered_pairs(tiers, "best_vs_rest")) == [
        (1, 3, 1),
        (1, 4, 2),
        (1, 5, 2),
        (2, 3, 1),
        (2, 4, 2),
        (2, 5, 2),
    ]
    assert set(_weights(tiers)) == {1 / 8}


def test_pairwise_cases():
    assert ordered_pairs([[7], [3]]) == [(7, 3, 1)]
    assert _weights([[7], [3]]) == [1.0]
    assert ordered_pairs([[7, 3]]) == []  # a tie states no preference
    assert _weights([[7, 3]]) == []


def test_all_bad_single_tier_yields_no_pairs():
    for k in range(2, 10):
        assert ordered_pairs([list(range(k))], "all_pairs") == []
        assert ordered_pairs([list(range(k))], "best_vs_rest") == []


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        ordered_pairs([[1], [2, 1]])
    with pytest.raises(ValueError, match="unknown pairing"):
        ordered_pairs([[1], [2]], "every_pair")


@pytest.mark.parametrize(
    "tier_index", [[0, 1, 2], [1, 0, 1, 2], [0, 0], [2, 0, 1, 1], [0, 2, 2, 1, 0], []]
)
def test_index_pairs_are_ordered_pairs_by_position(tier_index):
    # What reward training used to write out by hand: every (better, worse) position pair.
    expected = [
        (i, j, tier_index[j] - tier_index[i])
        for i in range(len(tier_index))
        for j in range(len(tier_index))
        if tier_index[i] < tier_index[j]
    ]
    assert index_pairs(tier_index) == expected


CANDIDATES = {
    1: CandidateText("one", "m1"),
    2: CandidateText("two", "m2"),
    3: CandidateText("three", ""),
}


def test_pair_rows_for_chat_prompts_use_assistant_messages():
    prompt = [{"role": "user", "content": "count"}]
    rows = pair_rows(
        prompt=prompt,
        candidates=CANDIDATES,
        tiers=[[2], [1, 3]],
        pairing="all_pairs",
        split="train",
        comparison_id=5,
        annotation_id=9,
        labeler="L1",
    )
    assert rows == [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "two"}],
            "rejected": [{"role": "assistant", "content": "one"}],
            "margin": 1.0,
            "weight": 0.5,
            "split": "train",
            "comparison_id": 5,
            "annotation_id": 9,
            "labeler": "L1",
            "chosen_model": "m2",
            "rejected_model": "m1",
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "two"}],
            "rejected": [{"role": "assistant", "content": "three"}],
            "margin": 1.0,
            "weight": 0.5,
            "split": "train",
            "comparison_id": 5,
            "annotation_id": 9,
            "labeler": "L1",
            "chosen_model": "m2",
            "rejected_model": "",
        },
    ]


def test_pair_rows_for_text_prompts_are_strings():
    rows = pair_rows(
        prompt="count",
        candidates=CANDIDATES,
        tiers=[[3], [2], [1]],
        pairing="best_vs_rest",
        split="test",
        comparison_id=1,
        annotation_id=2,
        labeler="L",
    )
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        ("three", "two", 1.0),
        ("three", "one", 2.0),
    ]


def test_ranking_row_indexes_tiers_into_the_canonical_order():
    row = ranking_row(
        prompt="count",
        candidates=CANDIDATES,
        tiers=[[3], [1, 2]],
        split="train",
        comparison_id=1,
        annotation_id=2,
        labeler="L",
        order=[2, 3, 1],
    )
    assert row["completions"] == ["two", "three", "one"]
    assert row["candidate_ids"] == [2, 3, 1]
    assert row["tiers"] == [[1], [2, 0]]
    assert row["models"] == ["m2", "", "m1"]
    assert row["weight"] == 1.0
    with pytest.raises(ValueError, match="exactly"):
        ranking_row(
            prompt="count",
            candidates=CANDIDATES,
            tiers=[[3], [1]],
            split="train",
            comparison_id=1,
            annotation_id=2,
            labeler="L",
            order=[2, 3, 1],
        )
