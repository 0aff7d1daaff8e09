"""Project statistics for staff: progress, agreement and per-labeler figures (a selector).

The agreement figures come from `annotation.rules.agreement`, fed by one streamed query over the
latest annotations ordered by comparison; the stats API and the admin stats page both render
`project_stats(project)` unchanged.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django.utils import timezone

from annotation.leases import lapsed_lease_q, open_lease_q
from annotation.models import Annotation, Assignment, Comparison, Project
from annotation.rules.agreement import RankingRecord, project_agreement

CHUNK_SIZE = 2000


def _records(project: Project):
    rows = (
        Annotation.objects.filter(
            comparison__project=project, superseded_by__isnull=True, rejected_at__isnull=True
        )
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


def project_stats(project: Project) -> dict[str, Any]:
    """Progress, agreement and per-labeler figures of a project, as JSON-ready data.

    Labelers are named by username: this is for staff, who need to know whom to coach.
    Rates are None where nothing could be measured (e.g. agreement without overlap).
    """
    agreement = project_agreement(_records(project))
    users = dict(
        get_user_model()
        .objects.filter(pk__in=[s.labeler for s in agreement.labelers])
        .values_list("pk", "username")
    )
    data = agreement.as_dict()
    labelers = []
    for row in data["labelers"]:
        labeler_id = int(row["labeler"])
        labelers.append({**row, "labeler": users.get(labeler_id, ""), "labeler_id": labeler_id})
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
    }
