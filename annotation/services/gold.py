"""Gold comparisons: staff rank a comparison once, and labelers are scored against it.

A gold ranking is validated exactly like a labeler's submission (`submission_clean`: every
candidate of the comparison once, ties only where the project allows them), so a gold
ranking naming a candidate that is not in the comparison, or leaving one out, is refused.
The API (`POST/DELETE /api/v1/comparisons/{id}/gold/`), the admin's gold page and
`import_gold SLUG FILE` all come here. The check constraint `comparison_gold_has_ranking`
backs the pairing of the flag and the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from annotation.datafiles.jsonl import JsonlError, iter_jsonl
from annotation.errors import ImportFileError, ServiceValidationError
from annotation.models import Comparison, Project
from annotation.rules.ranking import submission_clean
from annotation.services.imports import record_id


def gold_ranking_clean(*, comparison: Comparison, project: Project, ranking) -> list[list[int]]:
    """The ranking as stored, or ServiceValidationError saying what is wrong with it."""
    clean = submission_clean(
        candidate_ids=list(comparison.candidate_ids),
        ranking=ranking,
        allow_ties=project.allow_ties,
        flag_codes=[],
        rating_scale=0,
        rationale_max_length=0,
    )
    return clean.ranking


def comparison_gold_set(*, comparison: Comparison, ranking) -> Comparison:
    """Mark a comparison gold with this ranking (replacing an earlier gold ranking)."""
    with transaction.atomic():
        locked = (
            Comparison.objects.select_for_update().select_related("project").get(pk=comparison.pk)
        )
        locked.gold_ranking = gold_ranking_clean(
            comparison=locked, project=locked.project, ranking=ranking
        )
        locked.is_gold = True
        locked.save(update_fields=["gold_ranking", "is_gold"])
    return locked


def comparison_gold_clear(*, comparison: Comparison) -> Comparison:
    """Remove the gold mark and ranking; the comparison is served as regular work again."""
    with transaction.atomic():
        locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
        locked.is_gold = False
        locked.gold_ranking = None
        locked.save(update_fields=["gold_ranking", "is_gold"])
    return locked


@dataclass(frozen=True)
class GoldImportResult:
    marked: int


def gold_import_file(*, project: Project, path: str | Path) -> GoldImportResult:
    """Mark the comparisons of a .jsonl file gold: rows `{"comparison_id", "ranking"}`.

    All or nothing: every line is checked before the first write, the first bad one raises
    ImportFileError (`file:line: reason`) and nothing is stored.
    """
    rows: list[tuple[int, int, object]] = []
    try:
        for line, raw in iter_jsonl(path):
            if not isinstance(raw, dict):
                raise ImportFileError(path, line, 'expected an object {"comparison_id", "ranking"}')
            unknown = sorted(set(raw) - {"comparison_id", "ranking"})
            if unknown:
                raise ImportFileError(path, line, f"unknown field {unknown[0]!r}")
            try:
                cid = record_id(raw.get("comparison_id"), "comparison_id")
            except ValueError as exc:
                raise ImportFileError(path, line, str(exc)) from None
            if "ranking" not in raw:
                raise ImportFileError(path, line, "'ranking' is missing")
            rows.append((line, cid, raw["ranking"]))
    except JsonlError as exc:
        raise ImportFileError(path, exc.line, exc.message) from None
    except OSError as exc:
        raise ImportFileError(path, None, f"cannot read the file ({exc.strerror})") from None
    if not rows:
        raise ImportFileError(path, None, "the file holds no rows")
    with transaction.atomic():
        comparisons = {
            c.pk: c
            for c in Comparison.objects.select_for_update()
            .filter(project=project, pk__in=[cid for _, cid, _ in rows])
            .order_by("pk")  # one lock order for concurrent imports
        }
        seen: dict[int, int] = {}
        cleaned: list[tuple[Comparison, list[list[int]]]] = []
        for line, cid, ranking in rows:
            if cid in seen:
                raise ImportFileError(
                    path, line, f"comparison {cid} already appears on line {seen[cid]}"
                )
            seen[cid] = line
            comparison = comparisons.get(cid)
            if comparison is None:
                raise ImportFileError(
                    path, line, f"comparison {cid} is not in project {project.slug}"
                )
            try:
                clean = gold_ranking_clean(comparison=comparison, project=project, ranking=ranking)
            except ServiceValidationError as exc:
                message = exc.detail.removeprefix("Invalid submission: ")
                raise ImportFileError(path, line, f"comparison {cid}: {message}") from None
            cleaned.append((comparison, clean))
        for comparison, clean in cleaned:
            comparison.is_gold = True
            comparison.gold_ranking = clean
        Comparison.objects.bulk_update([c for c, _ in cleaned], ["is_gold", "gold_ranking"])
    return GoldImportResult(marked=len(cleaned))
