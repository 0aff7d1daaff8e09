"""Reads for the browser pages (home, labeling, history); never a write."""

from __future__ import annotations

from datetime import datetime, time

from django.db.models import Count, QuerySet
from django.utils import timezone

from annotation.models import Annotation, Assignment, Project


def submitted_by_project(user) -> dict[int, int]:
    """How many comparisons the user has submitted, per project id (one grouped query)."""
    rows = (
        Assignment.objects.filter(labeler=user, status=Assignment.Status.SUBMITTED)
        .values("comparison__project")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["comparison__project"]: row["n"] for row in rows}


def start_of_today(now: datetime | None = None) -> datetime:
    """Midnight today in the site's time zone, as an aware datetime."""
    today = timezone.localdate(now)
    return timezone.make_aware(datetime.combine(today, time.min))


def annotations_today(*, user, project: Project, now: datetime | None = None) -> int:
    """The user's annotations in this project since midnight; corrections do not count again."""
    return Annotation.objects.filter(
        labeler=user,
        created_at__gte=start_of_today(now),
        comparison__project=project,
        supersedes__isnull=True,
    ).count()


def has_labeled(*, user, project: Project) -> bool:
    """Whether the user has submitted anything in this project."""
    return Annotation.objects.filter(labeler=user, comparison__project=project).exists()


def annotation_history(user, *, project: Project | None = None) -> QuerySet[Annotation]:
    """The user's own annotations, newest first, with what the history page shows."""
    annotations = Annotation.objects.filter(labeler=user)
    if project is not None:
        annotations = annotations.filter(comparison__project=project)
    return annotations.select_related(
        "comparison__project", "comparison__prompt", "superseded_by"
    ).order_by("-created_at", "-id")


def annotation_current(assignment) -> Annotation | None:
    """The assignment's answer in force: its newest annotation that no correction superseded."""
    return (
        Annotation.objects.filter(assignment=assignment, superseded_by__isnull=True)
        .order_by("-id")
        .first()
    )
