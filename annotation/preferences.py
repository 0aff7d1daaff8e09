"""From a ranking to preference pairs: the pure core of the export (SPEC section 5).

A ranking is a list of tiers, best first; each tier is a list of candidate ids and a tier with
several ids is a tie. Nothing here touches Django, torch or numpy, so the web app can export
without the ML stack installed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

Tiers = Sequence[Sequence[int]]
Pairing = Literal["all_pairs", "best_vs_rest"]
Split = Literal["train", "test"]

PAIRINGS: tuple[str, ...] = ("all_pairs", "best_vs_rest")
DEFAULT_TEST_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Pair:
    """One preference: `chosen` was ranked above `rejected`, `margin` tiers apart."""

    chosen: int
    rejected: int
    margin: float
    weight: float


def validate_pairing(pairing: str) -> None:
    """Raise ValueError unless `pairing` is one of PAIRINGS."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}: use one of {', '.join(PAIRINGS)}")


def tier_of(tiers: Tiers) -> dict[int, int]:
    """Map each candidate id to the index of its tier (0 = best); duplicates are an error."""
    index: dict[int, int] = {}
    for position, tier in enumerate(tiers):
        for candidate in tier:
            if candidate in index:
                raise ValueError(f"candidate {candidate} appears twice in ranking {tiers!r}")
            index[candidate] = position
    return index


def ordered_pairs(
    tiers: Tiers, pairing: str = "all_pairs", *, check: bool = True
) -> list[tuple[int, int, int]]:
    """(chosen, rejected, tier gap) for every preference the ranking states under `pairing`.

    `all_pairs` pairs every candidate with every candidate of every lower tier and never two of
    one tier (InstructGPT: C(K, 2) pairs for a strict ranking). `best_vs_rest` pairs the top
    tier with every lower candidate (K - 1 pairs for a strict ranking). `check=False` skips
    the validation for callers that already validated the ranking and the pairing.
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


def expand_pairs(tiers: Tiers, pairing: str = "all_pairs") -> list[Pair]:
    """The weighted pairs of one ranking: margin = tier gap, weights sum to 1 per ranking.

    A ranking with a single tier (everything tied, e.g. an `all_bad` answer that ranks
    nothing above anything) states no preference and yields no pairs.
    """
    raw = ordered_pairs(tiers, pairing)
    if not raw:
        return []
    weight = 1.0 / len(raw)
    return [Pair(chosen, rejected, float(gap), weight) for chosen, rejected, gap in raw]


def prompt_messages(prompt: str | Sequence[Mapping]) -> list[dict[str, str]]:
    """The prompt as chat messages: a plain string is one user message (as Prompt stores it)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def prompt_digest(prompt: str | Sequence[Mapping]) -> bytes:
    """sha256 of the canonical JSON of the prompt's role/content messages."""
    canonical = json.dumps(
        prompt_messages(prompt), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def split_for_prompt(
    prompt: str | Sequence[Mapping], *, test_fraction: float = DEFAULT_TEST_FRACTION
) -> Split:
    """`train` or `test`, a pure function of the prompt so one prompt never straddles splits.

    The first 8 bytes of the prompt digest give a uniform bucket in [0, 1); the prompt is in
    test when the bucket falls below `test_fraction`. The same prompt text lands in the same
    split in every export and every project, which keeps evaluation sets stable over rounds.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    bucket = int.from_bytes(prompt_digest(prompt)[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


class CandidateText(NamedTuple):
    """What a row needs of a candidate: its text and the label of the model that wrote it.

    A NamedTuple, not a frozen dataclass: exports build one per candidate row and a frozen
    dataclass's __init__ costs several times more.
    """

    text: str
    model: str = ""


def completion_value(text: str, *, chat: bool) -> str | list[dict[str, str]]:
    """A completion as trl expects it: one assistant message for chat prompts, else the text."""
    return [{"role": "assistant", "content": text}] if chat else text


def pair_rows(
    *,
    prompt: str | list[dict[str, str]],
    candidates: Mapping[int, CandidateText],
    tiers: Tiers,
    pairing: str,
    split: str,
    comparison_id: int,
    annotation_id: int | None,
    labeler: str,
) -> list[dict]:
    """The pairs-file rows (SPEC section 5) of one ranking; weights sum to 1 over them.

    `prompt` is the list of chat messages for chat projects and a string for plain-text ones;
    chosen and rejected follow the same shape so trl reads the file as conversational or
    standard data respectively.
    """
    # Plain tuples, not Pair objects: this runs once per annotation of every export.
    raw = ordered_pairs(tiers, pairing)
    if not raw:
        return []
    weight = 1.0 / len(raw)
    chat = not isinstance(prompt, str)
    # One value per candidate, shared by every row that names it: the JSONL writer encodes
    # each shared object once per batch.
    value = {c: completion_value(candidates[c].text, chat=chat) for tier in tiers for c in tier}
    return [
        {
            "prompt": prompt,
            "chosen": value[chosen],
            "rejected": value[rejected],
            "margin": float(gap),
            "weight": weight,
            "split": split,
            "comparison_id": comparison_id,
            "annotation_id": annotation_id,
            "labeler": labeler,
            "chosen_model": candidates[chosen].model,
            "rejected_model": candidates[rejected].model,
        }
        for chosen, rejected, gap in raw
    ]


def ranking_row(
    *,
    prompt: str | list[dict[str, str]],
    candidates: Mapping[int, CandidateText],
    tiers: Tiers,
    split: str,
    comparison_id: int,
    annotation_id: int | None,
    labeler: str,
    order: Sequence[int] | None = None,
) -> dict:
    """The rankings-file row of one ranking: completions in `order`, tiers as their indexes.

    `order` is the comparison's canonical candidate order (not the labeler's display order, and
    not the ranking, so a K-wise loss cannot learn from positions); default: ascending ids.
    """
    named = tier_of(tiers)
    ids = list(order) if order is not None else sorted(named)
    index = {c: i for i, c in enumerate(ids)}
    if index.keys() != named.keys():
        raise ValueError(f"ranking {tiers!r} does not name exactly the candidates {ids}")
    return {
        "prompt": prompt,
        "completions": [candidates[c].text for c in ids],
        "candidate_ids": ids,
        "tiers": [[index[c] for c in tier] for tier in tiers],
        "weight": 1.0,
        "split": split,
        "comparison_id": comparison_id,
        "annotation_id": annotation_id,
        "labeler": labeler,
        "models": [candidates[c].model for c in ids],
    }
