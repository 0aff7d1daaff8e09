"""Read-side queries: what a page or endpoint shows, never a write."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from annotation.models import Assignment, Comparison, Project


def projects_for_user(user) -> QuerySet[Project]:
    """Active projects the user labels (staff see every active project), with progress counts."""
    projects = Project.objects.filter(active=True)
    if not user.is_staff:
        projects = projects.filter(members=user)
    return projects.annotate(
        comparisons_total=Count("comparisons", distinct=True),
        comparisons_complete=Count(
            "comparisons", filter=Q(comparisons__status=Comparison.Status.COMPLETE), distinct=True
        ),
    ).order_by("slug")


def project_progress(project: Project, user=None) -> dict:
    """Progress figures of SPEC section 3: `comparisons`, `complete`, and `mine` when a user is given."""
    counts = Comparison.objects.filter(project=project).aggregate(
        comparisons=Count("id"), complete=Count("id", filter=Q(status=Comparison.Status.COMPLETE))
    )
    if user is not None:
        counts["mine"] = Assignment.objects.filter(
            comparison__project=project, labeler=user, status=Assignment.Status.SUBMITTED
        ).count()
    return counts
