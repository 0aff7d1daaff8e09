"""A ranking and what makes a submitted one valid: pure rules, no Django, torch or numpy.

A ranking is a list of tiers, best first; each tier is a list of candidate ids and a tier with
several ids is a tie. `submission_clean` checks a labeler's whole submission (ranking, flags,
ratings, rationale, time) against the comparison's candidates and the project's settings;
`annotation.services.labeling.ranking_submit` calls it under the comparison's row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from annotation.errors import ServiceValidationError

Tiers = Sequence[Sequence[int]]

# PositiveIntegerField holds up to 2**31 - 1 on every backend; larger would be a 500.
TIME_SPENT_MAX_MS = 2**31 - 1

# A candidate id is a 64-bit primary key: at most 19 digits. Longer keys are not ids, and
# int() of 4,300+ digits raises ValueError (Python's int/str conversion limit) -- a 500.
CANDIDATE_ID_MAX_DIGITS = 19


def tier_of(tiers: Tiers) -> dict[int, int]:
    """Map each candidate id to the index of its tier (0 = best); duplicates are an error."""
    index: dict[int, int] = {}
    for position, tier in enumerate(tiers):
        for candidate in tier:
            if candidate in index:
                raise ValueError(f"candidate {candidate} appears twice in ranking {tiers!r}")
            index[candidate] = position
    return index


@dataclass(frozen=True)
class CleanSubmission:
    """A validated submission, normalized for storage (string candidate-id keys)."""

    ranking: list[list[int]]
    flags: dict[str, list[str]]
    ratings: dict[str, int]
    all_bad: bool
    rationale: str
    time_spent_ms: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _candidate_id(key: Any) -> int | None:
    """A flags/ratings key as a candidate id: JSON gives "12", Python callers give 12."""
    if _is_int(key):
        return key
    if (
        isinstance(key, str)
        and 0 < len(key) <= CANDIDATE_ID_MAX_DIGITS
        and key.isascii()
        and key.isdigit()
    ):
        return int(key)
    return None


def _key_shown(key: Any) -> str:
    """A flags/ratings key for an error message, cut short so a huge key is not echoed back."""
    shown = repr(key)
    return shown if len(shown) <= 40 else f"{shown[:30]}... ({len(str(key))} characters)"


def _clean_ranking(
    ranking: Any, candidate_ids: list[int], *, allow_ties: bool, all_bad: bool
) -> list[str]:
    if not isinstance(ranking, list) or not ranking:
        return ["The ranking must be a non-empty list of tiers (lists of candidate ids)."]
    errors: list[str] = []
    seen: list[int] = []
    for position, tier in enumerate(ranking, start=1):
        if not isinstance(tier, list) or not tier:
            errors.append(f"Tier {position} must be a non-empty list of candidate ids.")
            continue
        for item in tier:
            if not _is_int(item):
                errors.append(f"Tier {position} holds {item!r}, which is not a candidate id.")
            else:
                seen.append(item)
    known = set(candidate_ids)
    for item in dict.fromkeys(seen):
        if item not in known:
            errors.append(f"Candidate {item} is not part of this comparison.")
        elif seen.count(item) > 1:
            errors.append(f"Candidate {item} appears more than once.")
    for item in candidate_ids:
        if item not in seen:
            errors.append(f"Candidate {item} is missing from the ranking.")
    # "Both/all bad" is one tier holding every candidate with all_bad set: it states no
    # preference, so it is accepted even where ties are off (SPEC section 2, pairwise).
    all_bad_tier = all_bad and len(ranking) == 1
    if not allow_ties and not all_bad_tier:
        for position, tier in enumerate(ranking, start=1):
            if isinstance(tier, list) and len(tier) > 1:
                errors.append(f"Tier {position} is a tie; this project does not allow ties.")
    return errors


def submission_clean(
    *,
    candidate_ids: list[int],
    ranking: Any,
    flags: Any = None,
    ratings: Any = None,
    all_bad: Any = False,
    rationale: Any = "",
    time_spent_ms: Any = 0,
    allow_ties: bool,
    flag_codes: list[str],
    rating_scale: int,
    rationale_max_length: int,
    ranked: bool = True,
) -> CleanSubmission:
    """Check a submission against a comparison's candidates and its project's settings.

    `ranked=False` is a demonstration project's submission: nothing is ranked (the ranking
    must be empty or absent, and is stored as []); the written answer is checked by
    `annotation.rules.answers`.
    """
    errors: dict[str, list[str]] = {}

    def add(field: str, messages: list[str]) -> None:
        if messages:
            errors.setdefault(field, []).extend(messages)

    if not isinstance(all_bad, bool):
        add("all_bad", ["all_bad must be true or false."])
        all_bad = False
    if ranked:
        add(
            "ranking",
            _clean_ranking(ranking, candidate_ids, allow_ties=allow_ties, all_bad=all_bad),
        )
    elif ranking not in (None, []):
        add(
            "ranking",
            [
                "A demonstration project takes a written answer, not a ranking; send ranking [] "
                "or leave it out."
            ],
        )
        ranking = []
    else:
        ranking = []

    clean_flags: dict[str, list[str]] = {}
    if flags is None:
        flags = {}
    if not isinstance(flags, dict):
        add("flags", ["flags must map candidate ids to lists of flag codes."])
        flags = {}
    for key, codes in flags.items():
        cid = _candidate_id(key)
        if cid is None or cid not in candidate_ids:
            add("flags", [f"{_key_shown(key)} is not a candidate of this comparison."])
            continue
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            add("flags", [f"Candidate {cid}: flags must be a list of codes."])
            continue
        unknown = [c for c in codes if c not in flag_codes]
        if unknown:
            add("flags", [f"Candidate {cid}: unknown flag code {c!r}." for c in unknown])
            continue
        if codes:
            # Merge "3" and 3 if a caller sent both; keep first-seen order, drop repeats.
            merged = clean_flags.setdefault(str(cid), [])
            merged.extend(c for c in codes if c not in merged)

    clean_ratings: dict[str, int] = {}
    if ratings is None:
        ratings = {}
    if not isinstance(ratings, dict):
        add("ratings", ["ratings must map candidate ids to integer scores."])
        ratings = {}
    if ratings and rating_scale == 0:
        add("ratings", ["This project does not collect ratings."])
        ratings = {}
    for key, value in ratings.items():
        cid = _candidate_id(key)
        if cid is None or cid not in candidate_ids:
            add("ratings", [f"{_key_shown(key)} is not a candidate of this comparison."])
        elif not _is_int(value) or not 1 <= value <= rating_scale:
            add(
                "ratings", [f"Candidate {cid}: rating must be an integer from 1 to {rating_scale}."]
            )
        elif clean_ratings.get(str(cid), value) != value:
            add("ratings", [f"Candidate {cid} has two different ratings."])
        else:
            clean_ratings[str(cid)] = value

    if not isinstance(rationale, str):
        add("rationale", ["rationale must be text."])
        rationale = ""
    elif len(rationale) > rationale_max_length:
        add("rationale", [f"rationale is longer than {rationale_max_length} characters."])
    elif "\x00" in rationale:
        # PostgreSQL text cannot hold NUL; reject it here rather than fail with a 500.
        add("rationale", ["rationale must not contain NUL characters."])

    if not _is_int(time_spent_ms) or not 0 <= time_spent_ms <= TIME_SPENT_MAX_MS:
        add("time_spent_ms", [f"time_spent_ms must be an integer from 0 to {TIME_SPENT_MAX_MS}."])

    if errors:
        first = next(iter(errors.values()))[0]
        raise ServiceValidationError(f"Invalid submission: {first}", errors)
    return CleanSubmission(
        ranking=[list(tier) for tier in ranking],
        flags=clean_flags,
        ratings=clean_ratings,
        all_bad=all_bad,
        rationale=rationale.strip(),
        time_spent_ms=time_spent_ms,
    )
