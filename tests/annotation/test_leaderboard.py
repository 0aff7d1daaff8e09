"""The model leaderboard from head-to-head outcomes (no database)."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest

from annotation.rules.leaderboard import (
    ModelRow,
    clustered_wilson_interval,
    model_leaderboard,
    wilson_interval,
)


def by_model(rows: list[ModelRow]) -> dict[str, ModelRow]:
    return {row.model: row for row in rows}


def test_counts_and_win_rate_count_a_tie_as_half():
    rows = by_model(
        model_leaderboard(
            [
                ("big", "small", "a"),
                ("big", "small", "a"),
                ("small", "big", "tie"),
                ("small", "big", "a"),
            ]
        )
    )
    big, small = rows["big"], rows["small"]
    assert (big.comparisons, big.wins, big.losses, big.ties) == (4, 2, 1, 1)
    assert (small.comparisons, small.wins, small.losses, small.ties) == (4, 1, 2, 1)
    assert big.win_rate == pytest.approx(2.5 / 4)
    assert small.win_rate == pytest.approx(1.5 / 4)
    assert big.strength > 0 > small.strength
    assert big.strength + small.strength == pytest.approx(0, abs=1e-9)


def test_the_rows_carry_the_fields_of_the_api():
    (row, _) = model_leaderboard([("x", "y", "a")])
    assert list(asdict(row)) == [
        "model",
        "comparisons",
        "wins",
        "losses",
        "ties",
        "win_rate",
        "ci_low",
        "ci_high",
        "strength",
    ]


def test_a_model_that_never_wins_ranks_last_at_a_finite_strength():
    outcomes = [("a", "b", "a")] * 5 + [("b", "c", "a")] * 5 + [("c", "a", "b")] * 5
    rows = model_leaderboard(outcomes)
    assert [row.model for row in rows] == ["a", "b", "c"]
    loser = rows[-1]
    assert (loser.wins, loser.losses, loser.win_rate) == (0, 10, 0.0)
    assert loser.ci_low == 0.0 and 0 < loser.ci_high < 0.35
    assert all(math.isfinite(row.strength) for row in rows)
    assert sum(row.strength for row in rows) == pytest.approx(0, abs=1e-9)


def test_strength_rewards_beating_a_strong_model():
    # p and q each won their one game, but p beat the strong model and q the weak one.
    outcomes = [("strong", "weak", "a")] * 10 + [("p", "strong", "a"), ("q", "weak", "a")]
    rows = by_model(model_leaderboard(outcomes))
    assert rows["p"].win_rate == rows["q"].win_rate == 1.0
    assert rows["p"].strength > rows["q"].strength


def test_two_models_match_the_closed_form_bradley_terry():
    # Two items: exp(s_a - s_b) = W_a / W_b, each with the prior's 0.25 virtual win added.
    rows = by_model(model_leaderboard([("a", "b", "a")] * 3 + [("a", "b", "b")], prior=0.5))
    assert rows["a"].strength - rows["b"].strength == pytest.approx(math.log(3.25 / 1.25))


def test_all_ties_give_equal_strengths_and_a_half_win_rate():
    rows = model_leaderboard([("a", "b", "tie")] * 6)
    assert [row.win_rate for row in rows] == [0.5, 0.5]
    assert rows[0].strength == pytest.approx(rows[1].strength)
    assert [row.model for row in rows] == ["a", "b"]  # equal: by name


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10, z = 1.96: the textbook interval (0.490, 0.943).
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    low, high = wilson_interval(0, 4)
    assert low == 0.0 and high == pytest.approx(0.4899, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_the_interval_narrows_with_more_outcomes_and_holds_the_rate():
    few = by_model(model_leaderboard([("a", "b", "a"), ("a", "b", "b")] * 2))["a"]
    many = by_model(model_leaderboard([("a", "b", "a"), ("a", "b", "b")] * 200))["a"]
    assert few.ci_low < many.ci_low <= many.win_rate <= many.ci_high < few.ci_high


def test_self_play_is_skipped_and_nothing_gives_an_empty_board():
    assert model_leaderboard([]) == []
    assert model_leaderboard([("a", "a", "a")]) == []
    rows = by_model(model_leaderboard([("a", "a", "tie"), ("a", "b", "a")]))
    assert rows["a"].comparisons == 1


@pytest.mark.parametrize(
    "outcome, message",
    [
        (("a", "b", "win"), "outcome 1: result 'win'"),
        (("a", "", "a"), "outcome 1: a model name is empty"),
        (("a", "b"), "outcome 1: expected"),
    ],
)
def test_bad_outcomes_name_their_position(outcome, message):
    with pytest.raises(ValueError, match=message):
        model_leaderboard([("a", "b", "a"), outcome])


def test_a_single_pass_generator_is_enough():
    rows = model_leaderboard(("m1", "m2", r) for r in ["a", "b", "a"])
    assert by_model(rows)["m1"].wins == 2


def test_clusters_of_one_game_are_independent_games():
    assert clustered_wilson_interval([(1.0, 1), (0.0, 1), (0.5, 1)]) == wilson_interval(1.5, 3)
    rows = model_leaderboard([("a", "b", "a", 1), ("a", "b", "b", 2), ("a", "b", "a", 3)])
    assert (by_model(rows)["a"].ci_low, by_model(rows)["a"].ci_high) == wilson_interval(2, 3)


def test_games_of_one_cluster_count_as_fewer_independent_ones():
    # 10 prompts, 12 games each that all go one way per prompt: 10 independent results, not
    # 120. Counted as 120 the interval was far too narrow.
    outcomes = [
        ("a", "b", "a" if prompt < 6 else "b", prompt) for prompt in range(10) for _ in range(12)
    ]
    row = by_model(model_leaderboard(outcomes))["a"]
    assert row.win_rate == pytest.approx(0.6) and row.comparisons == 120
    assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(6, 10), abs=0.02)
    unclustered = by_model(model_leaderboard(o[:3] for o in outcomes))["a"]
    assert unclustered.ci_high - unclustered.ci_low < (row.ci_high - row.ci_low) / 2
    # A model that won everything in 5 prompts: the interval of 5 wins, not of 60.
    sweep = by_model(model_leaderboard([("a", "b", "a", p) for p in range(5) for _ in range(12)]))
    assert (sweep["a"].ci_low, sweep["a"].ci_high) == pytest.approx(wilson_interval(5, 5))


def test_the_interval_covers_95_percent_when_annotations_state_several_pairs():
    # K=4 (two answers of each model), three labelers: a comparison states 12 correlated
    # games. Per game the "95%" interval covered the true rate about 67% of the time.
    import random

    rng = random.Random(0)

    def comparison():
        qa = [rng.gauss(0.3, 1) for _ in range(2)]
        qb = [rng.gauss(0.0, 1) for _ in range(2)]
        out = []
        for _ in range(3):
            ka = [q / 0.3 - math.log(-math.log(rng.random())) for q in qa]
            kb = [q / 0.3 - math.log(-math.log(rng.random())) for q in qb]
            out += [a > b for a in ka for b in kb]
        return out

    truth = sum(sum(comparison()) for _ in range(20000)) / (20000 * 12)
    reps, hits = 200, 0
    for _ in range(reps):
        outcomes = [
            ("A", "B", "a" if won else "b", prompt) for prompt in range(30) for won in comparison()
        ]
        row = by_model(model_leaderboard(outcomes))["A"]
        hits += row.ci_low <= truth <= row.ci_high
    assert hits / reps >= 0.90
