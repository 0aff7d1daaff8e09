"""Pairs from tiers, weights, margins and the prompt-hash split (no database)."""

from __future__ import annotations

import hashlib
import math
from itertools import combinations

import pytest

from annotation.preferences import (
    CandidateText,
    expand_pairs,
    ordered_pairs,
    pair_rows,
    prompt_digest,
    ranking_row,
    split_for_prompt,
)


@pytest.mark.parametrize("k", range(2, 10))
def test_all_pairs_of_a_strict_ranking_is_every_pair_best_first(k):
    tiers = [[c] for c in range(10, 10 + k)]
    pairs = expand_pairs(tiers, "all_pairs")
    assert len(pairs) == math.comb(k, 2)
    assert {(p.chosen, p.rejected) for p in pairs} == set(combinations(range(10, 10 + k), 2))
    for p in pairs:
        assert p.margin == p.rejected - p.chosen  # ids equal positions here: gap = tier gap
    assert math.fsum(p.weight for p in pairs) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", range(2, 10))
def test_best_vs_rest_pairs_the_winner_with_each_other(k):
    tiers = [[c] for c in range(k)]
    pairs = expand_pairs(tiers, "best_vs_rest")
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [
        (0, j, float(j)) for j in range(1, k)
    ]
    assert math.fsum(p.weight for p in pairs) == pytest.approx(1.0)


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
    weights = {p.weight for p in expand_pairs(tiers)}
    assert weights == {1 / 8}


def test_pairwise_cases():
    assert [(p.chosen, p.rejected, p.margin, p.weight) for p in expand_pairs([[7], [3]])] == [
        (7, 3, 1.0, 1.0)
    ]
    assert expand_pairs([[7, 3]]) == []  # a tie states no preference


def test_all_bad_single_tier_yields_no_pairs():
    for k in range(2, 10):
        assert expand_pairs([list(range(k))], "all_pairs") == []
        assert expand_pairs([list(range(k))], "best_vs_rest") == []


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        expand_pairs([[1], [2, 1]])
    with pytest.raises(ValueError, match="unknown pairing"):
        expand_pairs([[1], [2]], "every_pair")


def test_prompt_digest_is_sha256_of_canonical_messages():
    expected = hashlib.sha256(b'[{"content":"hi","role":"user"}]').digest()
    assert prompt_digest("hi") == expected
    # Plain text hashes like the one user message it is stored as; extra keys are ignored.
    assert prompt_digest([{"role": "user", "content": "hi", "name": "x"}]) == expected


def test_split_is_stable_and_close_to_the_fraction():
    prompts = [f"prompt number {i}" for i in range(3000)]
    splits = [split_for_prompt(p, test_fraction=0.1) for p in prompts]
    assert splits == [split_for_prompt(p, test_fraction=0.1) for p in prompts]
    assert 210 <= splits.count("test") <= 390  # 300 expected, sd ~16
    assert split_for_prompt("x", test_fraction=0.0) == "train"
    assert split_for_prompt("x", test_fraction=1.0) == "test"
    # A larger fraction only moves prompts from train to test, never back.
    wider = [split_for_prompt(p, test_fraction=0.3) for p in prompts]
    assert all(w == "test" for s, w in zip(splits, wider) if s == "test")
    with pytest.raises(ValueError):
        split_for_prompt("x", test_fraction=1.5)


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
