"""Reads behind the assignment engine: which comparisons a labeler may lease, and in what order.

"Open lease" means `status = leased AND expires_at > now` everywhere, so a lease that ran out
frees its slot whether or not housekeeping has marked it expired yet.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from django.db.models import (
    BooleanField,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from annotation.models import Assignment, Comparison, Project


def open_leases(
    comparison: Any, now: datetime, *, exclude_assignment: int | None = None
) -> Coalesce:
    """Number of unexpired leases on a comparison (a pk or OuterRef), as a subquery."""
    leases = Assignment.objects.filter(
        comparison=comparison, status=Assignment.Status.LEASED, expires_at__gt=now
    )
    if exclude_assignment is not None:
        leases = leases.exclude(pk=exclude_assignment)
    counted = leases.order_by().values("comparison").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def queue_for(*, project: Project, labeler, gold: bool, now: datetime) -> QuerySet[Comparison]:
    """Comparisons this labeler may lease now, in serving order (fewest submitted, oldest).

    Walks `comparison_queue_idx` in order and stops at the first row with room that the
    labeler never had; each row costs two index probes, so the query does not grow with the
    project (only with the open leases and skips at the head of the queue).
    """
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), labeler=labeler)
    return (
        Comparison.objects.filter(
            project=project,
            status=Comparison.Status.OPEN,
            # A plain `is_gold=False` renders as `NOT is_gold`, which SQLite cannot match to
            # the index column: the ORDER BY would then sort every open comparison.
            is_gold=Value(gold, output_field=BooleanField()),
        )
        .filter(~Exists(seen))
        .alias(reserved=F("submitted_count") + open_leases(OuterRef("pk"), now))
        .filter(reserved__lt=F("required"))
        .order_by("submitted_count", "id")
    )


def comparison_has_room(
    comparison_id: int, now: datetime, *, exclude_assignment: int | None = None
) -> bool:
    """Whether one more annotation fits: open, and submitted + open leases < required.

    Callers hold the comparison's row lock, so the answer stays true until they commit.
    """
    status, submitted, required, leases = (
        Comparison.objects.filter(pk=comparison_id)
        .annotate(leases=open_leases(comparison_id, now, exclude_assignment=exclude_assignment))
        .values_list("status", "submitted_count", "required", "leases")
        .get()
    )
    return status == Comparison.Status.OPEN and submitted + leases < required


def is_member(project: Project, user) -> bool:
    """Staff may label any project; everyone else only the projects they belong to."""
    return bool(user.is_staff) or project.members.filter(pk=user.pk).exists()


def display_order_for(comparison: Comparison, labeler) -> list[int]:
    """The candidate order one labeler sees: a shuffle seeded by (comparison, labeler).

    Seeded rather than drawn from the OS so the order can be reproduced when auditing
    position bias; across labelers it is a uniform random permutation all the same.
    """
    order = list(comparison.candidate_ids)
    random.Random(f"display:{comparison.pk}:{labeler.pk}").shuffle(order)
    return order
