"""Project statistics for staff: progress, agreement and per-labeler figures (a selector).

The agreement figures come from `annotation.rules.agreement`, fed by one streamed query over the
latest annotations ordered by comparison; the stats API and the admin stats page both render
`project_stats(project)` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from annotation.leases import lapsed_lease_q, open_lease_q
from annotation.models import Annotation, Assignment, Comparison, ComparisonCandidate, Project
from annotation.rules.agreement import RankingRecord, project_agreement
from annotation.rules.leaderboard import ModelRow, model_leaderboard
from annotation.rules.ranking import tier_of

CHUNK_SIZE = 2000


def counted_annotations(
    project: Project, *, since: date | None = None, until: date | None = None
) -> QuerySet[Annotation]:
    """The annotations the figures count: latest versions, not rejected, in the date range.

    `since` and `until` are calendar days in the site's time zone, both included.
    """
    rows = Annotation.objects.filter(
        comparison__project=project, superseded_by__isnull=True, rejected_at__isnull=True
    )
    zone = timezone.get_current_timezone()
    if since is not None:
        rows = rows.filter(created_at__gte=datetime.combine(since, time.min, tzinfo=zone))
    if until is not None and until < date.max:  # date.max: no day after it to stop before
        end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=zone)
        rows = rows.filter(created_at__lt=end)
    return rows


def _records(project: Project, since: date | None = None, until: date | None = None):
    rows = (
        counted_annotations(project, since=since, until=until)
        .order_by("comparison_id", "id")
        .values_list(
            "id",
            "comparison_id",
            "labeler_id",
            "ranking",
            "flags",
            "all_bad",
            "time_spent_ms",
            "assignment__display_order",
            "comparison__is_gold",
            "comparison__gold_ranking",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for aid, cid, labeler, ranking, flags, all_bad, time_ms, shown, is_gold, gold in rows:
        yield RankingRecord(
            annotation_id=aid,
            comparison_id=cid,
            labeler=labeler,
            tiers=ranking,
            shown=shown or (),
            time_spent_ms=time_ms or 0,
            flagged=isinstance(flags, dict) and any(flags.values()),
            all_bad=all_bad,
            gold=gold if is_gold else None,
        )


def project_progress_figures(project: Project) -> dict[str, int]:
    """Comparison and assignment counts of a project (a handful of aggregate queries)."""
    figures = Comparison.objects.filter(project=project).aggregate(
        comparisons=Count("id"),
        complete=Count("id", filter=Q(status=Comparison.Status.COMPLETE)),
        gold_comparisons=Count("id", filter=Q(is_gold=True)),
    )
    now = timezone.now()
    assignments = Assignment.objects.filter(comparison__project=project).aggregate(
        submitted=Count("id", filter=Q(status=Assignment.Status.SUBMITTED)),
        skipped=Count("id", filter=Q(status=Assignment.Status.SKIPPED)),
        leased=Count("id", filter=open_lease_q(now)),
        expired=Count("id", filter=Q(status=Assignment.Status.EXPIRED) | lapsed_lease_q(now)),
    )
    figures.update({f"assignments_{k}": v for k, v in assignments.items()})
    return figures


def weak_figures(row: dict[str, Any], thresholds: dict[str, float] | None = None) -> list[str]:
    """The figures of one labeler's row that fall short of settings.LABELER_THRESHOLDS.

    Gold accuracy and agreement with consensus are weak below their threshold; the median
    time per task is weak below its number of seconds. A figure not measured is never weak.
    """
    limits = settings.LABELER_THRESHOLDS if thresholds is None else thresholds
    weak = []
    for name in ("gold_accuracy", "agreement_with_consensus"):
        if row.get(name) is not None and name in limits and row[name] < limits[name]:
            weak.append(name)
    median_ms = row.get("median_time_ms")
    too_fast = "median_seconds" in limits and median_ms is not None
    if too_fast and median_ms / 1000 < limits["median_seconds"]:
        weak.append("median_time_ms")
    return weak


def project_stats(
    project: Project, *, since: date | None = None, until: date | None = None
) -> dict[str, Any]:
    """Progress, agreement and per-labeler figures of a project, as JSON-ready data.

    Labelers are named by username: this is for staff, who need to know whom to coach.
    Rates are None where nothing could be measured (e.g. agreement without overlap).
    `since`/`until` (days, inclusive) restrict the annotation figures; the progress counts
    (comparisons, assignments) are the project's state now.
    """
    agreement = project_agreement(_records(project, since, until))
    users = dict(
        get_user_model()
        .objects.filter(pk__in=[s.labeler for s in agreement.labelers])
        .values_list("pk", "username")
    )
    data = agreement.as_dict()
    labelers = []
    for row in data["labelers"]:
        labeler_id = int(row["labeler"])
        labelers.append(
            {
                **row,
                "labeler": users.get(labeler_id, ""),
                "labeler_id": labeler_id,
                "weak": weak_figures(row),
            }
        )
    pairs = [
        {**row, "labelers": [users.get(int(x), "") for x in row["labelers"]]}
        for row in data["labeler_pairs"]
    ]
    progress = project_progress_figures(project)
    progress["annotations"] = agreement.annotations
    progress["labelers"] = len(labelers)
    return {
        "project": project.slug,
        "progress": progress,
        "agreement": {
            "comparisons_annotated": agreement.comparisons,
            "comparisons_shared": agreement.shared_comparisons,
            "pairwise_agreement": agreement.pairwise_agreement,
            "kendall_tau_b": agreement.kendall_tau_b,
            "krippendorff_alpha": agreement.krippendorff_alpha,
        },
        "labelers": labelers,
        "labeler_pairs": pairs,
        "thresholds": dict(settings.LABELER_THRESHOLDS),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }


def annotations_per_day(
    project: Project, *, since: date | None = None, until: date | None = None
) -> list[tuple[date, int]]:
    """(day, annotations counted that day) for every day from the first to the last, gaps as 0.

    The series reaches out to `since` and `until` where they are given, but no earlier than
    the day the project was made, nor later than today: `?since=0001-01-01` is not 739,000
    empty days.
    """
    counts = dict(
        counted_annotations(project, since=since, until=until)
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
        .order_by("day")
    )
    if not counts:
        return []
    first, last = min(counts), max(counts)
    created = timezone.localdate(project.created_at)
    first = max(since, created) if since and since < first else first
    last = until if until and until > last and until <= timezone.localdate() else last
    return [
        (first + timedelta(days=n), counts.get(first + timedelta(days=n), 0))
        for n in range((last - first).days + 1)
    ]


def model_outcomes(
    project: Project, *, since: date | None = None, until: date | None = None
) -> Iterator[tuple[str, str, str, int]]:
    """(model_a, model_b, "a" | "b" | "tie", prompt id) for every pair of candidates of
    different models each counted annotation ranks, as the export expands tiers into pairs (a
    shared tier is a tie). The prompt is the outcome's cluster: the pairs its rankings state
    are not independent games (`annotation.rules.leaderboard`). Gold comparisons stay out, as
    they do of exports: they are served over and over."""
    rows = (
        counted_annotations(project, since=since, until=until)
        .filter(comparison__is_gold=False)
        .order_by("comparison_id", "id")
        .values_list("comparison_id", "ranking", "comparison__prompt_id")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    models: dict[int, str] = {}
    loaded_up_to = 0
    for comparison_id, ranking, prompt_id in rows:
        if comparison_id > loaded_up_to:
            loaded_up_to = comparison_id + CHUNK_SIZE
            models = _candidate_models(comparison_id, loaded_up_to)
        tier = tier_of(ranking)
        ids = sorted(tier)
        for n, a in enumerate(ids):
            for b in ids[n + 1 :]:
                model_a, model_b = models.get(a, ""), models.get(b, "")
                if not model_a or not model_b or model_a == model_b:
                    continue
                if tier[a] == tier[b]:
                    yield model_a, model_b, "tie", prompt_id
                else:
                    yield model_a, model_b, "a" if tier[a] < tier[b] else "b", prompt_id


def _candidate_models(low: int, high: int) -> dict[int, str]:
    """Model label of each candidate of the comparisons low..high: one query.

    By id range alone: a join to the project made PostgreSQL scan every comparison once
    per chunk (quadratic in the project's size). Rows of other projects' comparisons in the
    range are harmless: their candidates never appear in this project's rankings."""
    rows = (
        ComparisonCandidate.objects.filter(comparison_id__gte=low, comparison_id__lte=high)
        .annotate(version=F("candidate__model_version__name"), name=F("candidate__model_name"))
        .values_list("candidate_id", "version", "name")
    )
    return {cid: version or name or "" for cid, version, name in rows}


def project_model_leaderboard(
    project: Project, *, since: date | None = None, until: date | None = None
) -> list[ModelRow]:
    """The models of a project's candidates ranked from its human labels (SPEC section 11)."""
    return model_leaderboard(model_outcomes(project, since=since, until=until))
