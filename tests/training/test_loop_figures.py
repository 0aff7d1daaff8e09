"""The pure figures of a loop report: early stopping, data-scaled defaults, intervals,
labeler agreement, over-optimization and shortcut flags (no Django, no models)."""

import math

import pytest

from training.evaluation import (
    bootstrap_mean_ci,
    heldout_gold_figures,
    labeler_agreement,
    near_duplicate_share,
    overoptimization,
    pearson,
    win_indicators,
)
from training.reward.schedule import accuracy_warnings, early_stopping, scaled_defaults

# ------------------------------------------------------------------ early stopping


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    evals = [(0.70, 0.6), (0.78, 0.5), (0.76, 0.5)]
    state = early_stopping(evals, patience=2)
    assert (state.best_index, state.is_best, state.stop) == (1, False, False)
    state = early_stopping([*evals, (0.77, 0.4)], patience=2)
    assert (state.best_index, state.stop) == (1, True)


def test_early_stopping_breaks_accuracy_ties_on_loss_and_marks_the_new_best():
    state = early_stopping([(0.8, 0.5), (0.8, 0.4)], patience=1)
    assert (state.best_index, state.is_best, state.stop) == (1, True, False)
    # an equal accuracy with a higher loss is no improvement
    assert early_stopping([(0.8, 0.4), (0.8, 0.5)], patience=1).stop


def test_early_stopping_without_patience_never_stops_and_missing_figures_rank_last():
    state = early_stopping([(None, None), (0.6, float("nan")), (0.55, 0.1)], patience=0)
    assert (state.best_index, state.stop) == (1, False)
    assert early_stopping([], patience=2).best_index is None
    with pytest.raises(ValueError, match="patience"):
        early_stopping([(0.5, 1.0)], patience=-1)


def test_scaled_defaults_follow_the_data_size():
    small_epochs, small_lr = scaled_defaults(400, 16)
    large_epochs, large_lr = scaled_defaults(16000, 16)
    assert small_epochs == 16 and small_lr == pytest.approx(5e-4)
    assert large_epochs == 3 and large_lr == pytest.approx(5e-4 * math.sqrt(1000 / 16000))
    assert scaled_defaults(10, 16)[0] == 20  # capped
    assert scaled_defaults(400, 16, lora=True)[1] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="training pair"):
        scaled_defaults(0, 16)


def test_accuracy_warnings_near_chance_and_below_the_labelers():
    assert accuracy_warnings(0.90, 0.92) == []
    (near,) = accuracy_warnings(0.53, None)
    assert "chance" in near and "0.530" in near
    (below,) = accuracy_warnings(0.70, 0.93)
    assert "0.700" in below and "0.930" in below
    assert len(accuracy_warnings(0.52, 0.9)) == 2
    assert accuracy_warnings(None, 0.9) == []


# ------------------------------------------------------------------ labeler agreement


def test_labeler_agreement_counts_strict_orders_of_the_first_and_ties_of_the_second_as_half():
    # two labelers, 3 candidates: a orders 1>2>3; b orders 1>3 and ties 2=3... b: [[1], [2, 3]]
    a, b = [[1], [2], [3]], [[1], [2, 3]]
    result = labeler_agreement([[a, b]])
    # a→b: pairs (1,2) agree, (1,3) agree, (2,3) b ties: 1/2 → 2.5 of 3
    # b→a: b orders (1,2), (1,3) strictly, (2,3) tied → left out: 2 of 2
    assert (result.agree, result.pairs) == (4.5, 5)
    opposite = labeler_agreement([[[[1], [2]], [[2], [1]]]])
    assert opposite.rate == 0.0
    assert labeler_agreement([[[[1], [2]]]]).pairs == 0  # one labeler: nothing to compare


# ------------------------------------------------------------------ intervals


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data():
    diffs = [0.1, -0.05, 0.2, 0.0, 0.15, 0.05] * 4
    low, high = bootstrap_mean_ci(diffs, seed=1)
    assert low < sum(diffs) / len(diffs) < high
    wide = bootstrap_mean_ci(diffs[:6], seed=1)
    assert wide[1] - wide[0] > high - low
    assert bootstrap_mean_ci([0.3] * 10) == (pytest.approx(0.3), pytest.approx(0.3))
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))
    assert bootstrap_mean_ci(diffs, seed=3) == bootstrap_mean_ci(diffs, seed=3)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_ci(diffs, level=1.5)


def test_win_indicators_count_ties_half():
    assert win_indicators([0.9, 0.5, 0.1], [0.1, 0.5, 0.9]) == [1.0, 0.5, 0.0]


def test_heldout_gold_figures_with_one_answer_per_prompt():
    figures = heldout_gold_figures([[0.2, 0.5, 0.9]], [[0.6, 0.5, 0.3]], seed=1)
    assert figures["gold_before"] == pytest.approx(1.6 / 3)
    assert figures["gold_after"] == pytest.approx(1.4 / 3)
    assert figures["win_rate_vs_start"] == pytest.approx(0.5)  # a win, a tie, a loss
    low, high = figures["gold_ci"]
    assert low <= figures["gold_after"] - figures["gold_before"] <= high
    assert figures["gold_ci"] == pytest.approx(bootstrap_mean_ci([0.4, 0.0, -0.6], seed=1))
    assert figures["win_rate_ci"] == list(bootstrap_mean_ci([1.0, 0.5, 0.0], seed=1))


def test_heldout_gold_figures_average_answer_sets_and_pit_every_answer_against_every_other():
    before = [[0.5, 1.0], [1.0, 0.0]]  # two answer sets of the start policy, two prompts
    after = [[1.0, 0.0], [1.0, 0.5], [1.0, 1.0]]  # three of the new policy
    figures = heldout_gold_figures(before, after)
    # Prompt 0: before 0.5 and 1.0, after 1.0 three times: 3 wins and 3 ties of 6 pairs.
    # Prompt 1: before 1.0 and 0.0; after 0.0 (a loss, a tie), 0.5 (a loss, a win),
    # 1.0 (a tie, a win): 2.0 of 6.
    assert figures["win_rate_vs_start"] == pytest.approx(((3 + 1.5) / 6 + 3 / 6) / 2)
    assert figures["gold_before"] == pytest.approx((0.75 + 0.5) / 2)
    assert figures["gold_after"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="same prompts"):
        heldout_gold_figures([[0.5, 1.0]], [[1.0]])
    with pytest.raises(ValueError, match="at least one answer set"):
        heldout_gold_figures([], [[1.0]])


def test_more_answers_per_prompt_narrow_the_intervals_of_the_same_policies():
    """What eval_samples buys: two policies of equal quality whose single answers are coin
    flips give a wide interval from one set and a narrow one, near zero, from many."""
    import random

    rng = random.Random(0)

    def answer_sets(n):
        return [[float(rng.random() < 0.5) for _ in range(48)] for _ in range(n)]

    one = heldout_gold_figures(answer_sets(1), answer_sets(1))
    many = heldout_gold_figures(answer_sets(16), answer_sets(16))
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(many["gold_ci"]) < width(one["gold_ci"]) / 2
    assert width(many["win_rate_ci"]) < width(one["win_rate_ci"]) / 2
    assert many["gold_ci"][0] < 0 < many["gold_ci"][1]


# ------------------------------------------------------------------ over-optimization


def _history(gold, rm):
    return [{"step": i + 1, "gold_score": g, "score": r} for i, (g, r) in enumerate(zip(gold, rm))]


def test_overoptimization_flags_rm_rising_while_gold_falls_at_the_end():
    steps = 12
    rm = [0.1 * i for i in range(steps)]
    gold = [0.5 + 0.05 * i for i in range(6)] + [0.75 - 0.06 * i for i in range(6)]
    flag = overoptimization(_history(gold, rm))
    assert flag.flagged and flag.gold_slope < 0 < flag.rm_slope
    assert 5 <= flag.gold_peak_step <= 8  # the running mean peaks a little after the raw peak


def test_overoptimization_not_flagged_when_both_rise_or_without_gold():
    rising = [0.1 * i for i in range(12)]
    assert not overoptimization(_history(rising, rising)).flagged
    flag = overoptimization([{"step": 1, "score": 1.0}])
    assert (flag.flagged, flag.gold_peak_step) == (False, None)
    few = overoptimization(_history([0.5, 0.4], [0.1, 0.2]))
    assert not few.flagged and few.gold_slope is None and few.gold_peak_step == 1


# ------------------------------------------------------------------ shortcut flags


def test_pearson_correlation():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) is None
    assert pearson([1, 2], [1, 2]) is None
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def test_near_duplicate_share():
    texts = [
        "thank you so much for the lovely flowers today",
        "Thank you so much, for the lovely flowers today!",  # the same words
        "The capital of France is Paris.",
        "Seven.",
    ]
    assert near_duplicate_share(texts) == pytest.approx(0.5)
    assert near_duplicate_share(["a b c", "d e f"]) == 0.0
    assert near_duplicate_share(["same answer here"] * 3) == 1.0
    assert near_duplicate_share(["", ""]) == 1.0
    assert math.isnan(near_duplicate_share([]))
