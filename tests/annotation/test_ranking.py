"""Submission validation: the pure ranking rules of `annotation.rules.ranking` (no database)."""

from __future__ import annotations

import pytest

from annotation.errors import ServiceValidationError
from annotation.rules.ranking import submission_clean, tier_of


def clean(**overrides):
    values = {
        "candidate_ids": [11, 12, 13],
        "ranking": [[11], [12], [13]],
        "allow_ties": True,
        "flag_codes": ["unhelpful", "harmful"],
        "rating_scale": 0,
        "rationale_max_length": 10,
    }
    values.update(overrides)
    return submission_clean(**values)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"ranking": []}, "ranking", "non-empty list of tiers"),
        ({"ranking": "11,12,13"}, "ranking", "non-empty list of tiers"),
        ({"ranking": [[11], [], [12, 13]]}, "ranking", "Tier 2 must be a non-empty list"),
        ({"ranking": [[11], 12, [13]]}, "ranking", "Tier 2 must be a non-empty list"),
        ({"ranking": [[11], [12], [13, "x"]]}, "ranking", "'x', which is not a candidate id"),
        ({"ranking": [[11], [12], [13, True]]}, "ranking", "True, which is not a candidate id"),
        ({"ranking": [[11], [12], [13], [99]]}, "ranking", "Candidate 99 is not part"),
        ({"ranking": [[11], [12], [12]]}, "ranking", "Candidate 12 appears more than once"),
        ({"ranking": [[11], [12]]}, "ranking", "Candidate 13 is missing"),
        ({"ranking": [[11, 12], [13]], "allow_ties": False}, "ranking", "Tier 1 is a tie"),
        ({"ranking": [[11, 12, 13]], "allow_ties": False}, "ranking", "Tier 1 is a tie"),
        ({"flags": ["harmful"]}, "flags", "map candidate ids"),
        ({"flags": {"99": ["harmful"]}}, "flags", "'99' is not a candidate"),
        ({"flags": {"x": ["harmful"]}}, "flags", "'x' is not a candidate"),
        ({"flags": {12: ["rude"]}}, "flags", "Candidate 12: unknown flag code 'rude'"),
        ({"flags": {12: "harmful"}}, "flags", "Candidate 12: flags must be a list"),
        ({"ratings": {11: 3}}, "ratings", "does not collect ratings"),
        (
            {"ratings": {11: 0}, "rating_scale": 7},
            "ratings",
            "Candidate 11: rating must be an integer from 1 to 7",
        ),
        ({"ratings": {11: 2.0}, "rating_scale": 7}, "ratings", "Candidate 11: rating must be"),
        ({"ratings": {11: True}, "rating_scale": 7}, "ratings", "Candidate 11: rating must be"),
        ({"ratings": {11: 2, "11": 3}, "rating_scale": 7}, "ratings", "Candidate 11 has two"),
        ({"ratings": {14: 2}, "rating_scale": 7}, "ratings", "14 is not a candidate"),
        ({"rationale": "x" * 11}, "rationale", "longer than 10"),
        ({"rationale": "a\x00b"}, "rationale", "NUL"),
        ({"rationale": None}, "rationale", "must be text"),
        ({"time_spent_ms": -1}, "time_spent_ms", "from 0 to"),
        ({"time_spent_ms": 2**31}, "time_spent_ms", "from 0 to"),
        ({"time_spent_ms": 1.5}, "time_spent_ms", "from 0 to"),
        ({"all_bad": "yes"}, "all_bad", "true or false"),
        # A partial tie is a preference with a tie in it; all_bad only excuses the one tier
        # holding every candidate ("all bad"), never a tie in a longer ranking.
        (
            {"ranking": [[11, 12], [13]], "allow_ties": False, "all_bad": True},
            "ranking",
            "Tier 1 is a tie",
        ),
        (
            {"ranking": [[11], [12, 13]], "allow_ties": False, "all_bad": True},
            "ranking",
            "Tier 2 is a tie",
        ),
        # Keys past Python's int() digit limit (4,300) were a ValueError, a 500.
        ({"flags": {"1" * 5000: ["harmful"]}}, "flags", "(5000 characters) is not a candidate"),
        ({"ratings": {"9" * 4301: 2}, "rating_scale": 7}, "ratings", "is not a candidate"),
        ({"flags": {"1" * 20: ["harmful"]}}, "flags", "is not a candidate"),
    ],
)
def test_submission_clean_names_what_is_wrong(overrides, field, message):
    with pytest.raises(ServiceValidationError) as exc:
        clean(**overrides)
    assert any(message in m for m in exc.value.errors[field]), exc.value.errors


def test_submission_clean_collects_every_error_at_once():
    with pytest.raises(ServiceValidationError) as exc:
        clean(ranking=[[11], [11]], flags={12: ["rude"]}, time_spent_ms=-5)
    assert set(exc.value.errors) == {"ranking", "flags", "time_spent_ms"}
    assert exc.value.errors["ranking"] == [
        "Candidate 11 appears more than once.",
        "Candidate 12 is missing from the ranking.",
        "Candidate 13 is missing from the ranking.",
    ]


def test_submission_clean_normalizes_keys():
    result = clean(
        ranking=[[13], [11, 12]],
        flags={11: ["harmful"], "11": ["unhelpful", "harmful"], "12": []},
        ratings={"13": 4, 12: 1},
        rating_scale=5,
        rationale=" ok ",
    )
    assert result.ranking == [[13], [11, 12]]
    assert result.flags == {"11": ["harmful", "unhelpful"]}
    assert result.ratings == {"13": 4, "12": 1}
    assert result.rationale == "ok"
    assert result.all_bad is False


def test_all_bad_single_tier_is_accepted_without_ties():
    result = clean(ranking=[[11, 12, 13]], allow_ties=False, all_bad=True)
    assert result.all_bad is True and result.ranking == [[11, 12, 13]]


def test_tier_of_maps_candidates_to_tiers_and_refuses_repeats():
    assert tier_of([[3], [1, 2]]) == {3: 0, 1: 1, 2: 1}
    with pytest.raises(ValueError, match="twice"):
        tier_of([[1], [2, 1]])
