"""Reads behind the admin's review screens: annotations and comparisons as texts, not ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from annotation.models import Annotation, Candidate, Comparison


@dataclass
class RankedCandidate:
    """One candidate as a ranking placed it: its tier (1 = best), text and the labeler's marks."""

    tier: int
    tied: bool
    candidate_id: int
    text: str
    model: str
    flags: list[str] = field(default_factory=list)
    rating: int | None = None


def candidates_of(comparison: Comparison) -> dict[int, Candidate]:
    """The comparison's candidates by id, in canonical (built) order."""
    by_id = {
        c.pk: c
        for c in Candidate.objects.filter(pk__in=comparison.candidate_ids).select_related(
            "model_version"
        )
    }
    return {cid: by_id[cid] for cid in comparison.candidate_ids if cid in by_id}


def ranked(
    tiers, candidates: dict[int, Candidate], *, flags=None, ratings=None
) -> list[RankedCandidate]:
    """A ranking's tiers, best first, as candidate texts with flags and ratings."""
    flags, ratings = flags or {}, ratings or {}
    rows = []
    for position, tier in enumerate(tiers or [], start=1):
        for cid in tier:
            candidate = candidates.get(cid)
            rows.append(
                RankedCandidate(
                    tier=position,
                    tied=len(tier) > 1,
                    candidate_id=cid,
                    text=candidate.text if candidate else f"(unknown candidate {cid})",
                    model=candidate.model_label if candidate else "",
                    flags=list(flags.get(str(cid), [])),
                    rating=ratings.get(str(cid)),
                )
            )
    return rows


def annotation_ranked(annotation: Annotation) -> list[RankedCandidate]:
    """One annotation's ranking as texts."""
    return ranked(
        annotation.ranking,
        candidates_of(annotation.comparison),
        flags=annotation.flags,
        ratings=annotation.ratings,
    )


def comparison_review(comparison: Comparison) -> dict:
    """A comparison's candidates (rows) against every annotation (columns), for the admin."""
    candidates = candidates_of(comparison)
    annotations = list(
        Annotation.objects.filter(comparison=comparison, superseded_by__isnull=True)
        .select_related("labeler")
        .order_by("id")
    )
    gold = {}
    for position, tier in enumerate(comparison.gold_ranking or [], start=1):
        for cid in tier:
            gold[cid] = position
    rows = []
    for cid, candidate in candidates.items():
        cells = []
        for annotation in annotations:
            tier = next((i for i, t in enumerate(annotation.ranking, start=1) if cid in t), None)
            cells.append(
                {
                    "tier": tier,
                    "flags": (annotation.flags or {}).get(str(cid), []),
                    "rating": (annotation.ratings or {}).get(str(cid)),
                    "rejected": annotation.rejected_at is not None,
                }
            )
        rows.append(
            {
                "candidate": candidate,
                "gold": gold.get(cid) if comparison.is_gold else None,
                "cells": cells,
            }
        )
    return {"annotations": annotations, "rows": rows, "is_gold": comparison.is_gold}


def annotations_disagreeing(*, below: float = 0.5, project_id: int | None = None) -> list[int]:
    """Ids of counted annotations whose agreement with their comparison's consensus is below.

    The consensus pools every counted (current, not rejected) annotation of the comparison,
    as the statistics and export filters do; a comparison with a single annotation has no
    consensus to disagree with. Streams the annotations ordered by comparison.
    """
    from itertools import groupby

    from annotation.rules.agreement import agreement_with_consensus

    rows = Annotation.objects.filter(superseded_by__isnull=True, rejected_at__isnull=True)
    if project_id is not None:
        rows = rows.filter(comparison__project_id=project_id)
    stream = (
        rows.order_by("comparison_id", "id")
        .values_list("comparison_id", "id", "ranking")
        .iterator(chunk_size=2000)
    )
    found: list[int] = []
    for _, group in groupby(stream, key=lambda row: row[0]):
        rankings = {aid: ranking for _, aid, ranking in group}
        for aid, score in agreement_with_consensus(rankings).items():
            if score is not None and score < below:
                found.append(aid)
    return found
