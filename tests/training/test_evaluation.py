"""Agreement with the judge (pure): each tie rule by hand, and the report's definitions."""

from __future__ import annotations

import math

import pytest

from training.evaluation import (
    agreement_with_judge,
    pairs_agreement_with_judge,
    ranking_agreement_with_judge,
)


def test_agreement_with_judge_by_hand():
    judge = [1.0, -2.0, 0.0, 3.0, 0.5]
    ordering = [2.0, 1.0, 1.0, 0.0, -1.0]  # agree, disagree, judge tie, ordering tie, disagree
    excluded = agreement_with_judge(judge, ordering, judge_ties="exclude")
    assert (excluded.agree, excluded.pairs) == (1.5, 4)
    half = agreement_with_judge(judge, ordering, judge_ties="half")
    assert (half.agree, half.pairs) == (2.0, 5)
    assert half.rate == pytest.approx(0.4)
    assert math.isnan(agreement_with_judge([0.0], [1.0], judge_ties="exclude").rate)


def test_the_tie_rule_is_required_and_checked():
    with pytest.raises(TypeError):
        agreement_with_judge([1.0], [1.0])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="judge_ties"):
        agreement_with_judge([1.0], [1.0], judge_ties="skip")  # type: ignore[arg-type]


def test_an_ordering_tie_counts_half_whichever_way_the_pair_is_written():
    forward = agreement_with_judge([1.0], [0.0], judge_ties="exclude")
    backward = agreement_with_judge([-1.0], [0.0], judge_ties="exclude")
    assert forward == backward and forward.agree == 0.5


def test_pairs_and_rankings_use_the_same_rule():
    def judge(prompts, responses):
        return [float(len(r)) for r in responses]

    pairs = [
        {"prompt": "p", "chosen": "ccc", "rejected": "a"},
        {"prompt": "p", "chosen": "a", "rejected": "ccc"},
        {"prompt": "p", "chosen": [{"role": "assistant", "content": "bb"}], "rejected": "aa"},
    ]
    assert pairs_agreement_with_judge(judge, pairs, judge_ties="half").rate == pytest.approx(0.5)
    assert pairs_agreement_with_judge(judge, pairs, judge_ties="exclude").rate == 0.5
    assert math.isnan(pairs_agreement_with_judge(judge, [], judge_ties="half").rate)
    scores = {1: 3.0, 2: 1.0, 3: 1.0}
    ranking = ranking_agreement_with_judge([[2], [1, 3]], scores, judge_ties="half")
    # (2,1) disagrees, (2,3) the judge ties: 1/2, (1,3) the ranking ties: 1/2.
    assert (ranking.agree, ranking.pairs) == (1.0, 3)


def test_report_definitions_name_every_agreement_figure():
    from training.loop import REPORT_DEFINITIONS

    assert set(REPORT_DEFINITIONS) == {
        "rm_accuracy",
        "rm_accuracy_vs_labels",
        "rm_selection_split",
        "label_agreement_with_judge",
        "labeler_agreement",
        "labeler_win_rate",
        "win_rate_vs_start",
        "win_rate_ci",
        "gold_ci",
        "kl_heldout",
        "overoptimization",
        "best_gold_step",
        "rm_length_correlation",
        "near_duplicate_share",
        "strategy",
    }
    for name in ("labeler_agreement", "labeler_win_rate", "win_rate_vs_start"):
        assert "1/2" in REPORT_DEFINITIONS[name] or "tie" in REPORT_DEFINITIONS[name], name
    assert "1/2" in REPORT_DEFINITIONS["label_agreement_with_judge"]
    assert "left out" in REPORT_DEFINITIONS["rm_accuracy"]
    assert "validation" in REPORT_DEFINITIONS["rm_selection_split"]
