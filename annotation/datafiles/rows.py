"""The rows of an export's tables, built from one ranking (SPEC section 5).

`pair_rows` gives the pairs-file rows and `ranking_row` the rankings-file row of one ranking;
`annotation.datafiles.export.ExportWriter` writes exactly these rows (its JSONL fast path
builds the same bytes without them). Pure Python: no Django, torch or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from annotation.rules.pairs import ordered_pairs
from annotation.rules.ranking import Tiers, tier_of


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
    extra_pairs: int = 0,
) -> list[dict]:
    """The pairs-file rows (SPEC section 5) of one ranking; weights sum to 1 over them.

    `prompt` is the list of chat messages for chat projects and a string for plain-text ones;
    chosen and rejected follow the same shape so trl reads the file as conversational or
    standard data respectively. `extra_pairs` more rows of the same annotation (its edit's
    pairs) share the weight: each row gets 1 / (pairs + extra_pairs).
    """
    raw = ordered_pairs(tiers, pairing)
    if not raw:
        return []
    weight = 1.0 / (len(raw) + extra_pairs)
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
