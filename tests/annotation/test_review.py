"""Review: rejecting an annotation keeps it, drops it from exports and stats, reopens its slot."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.errors import ConflictError, ServiceValidationError
from annotation.models import Annotation, Assignment, Comparison
from annotation.selectors.stats import counted_annotations, project_stats
from annotation.services.exports import ExportOptions, export_create
from annotation.services.labeling import assignment_next, assignment_skip, ranking_submit
from annotation.services.review import (
    annotation_reject,
    annotation_restore,
    annotations_reject,
    annotations_reject_since,
)

pytestmark = pytest.mark.django_db


def label(project, user):
    """Lease and submit one comparison (strict ranking in display order)."""
    assignment = assignment_next(project=project, labeler=user)
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=user,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    return annotation


@pytest.fixture
def team(make_project, make_labeler, make_comparisons):
    project = make_project("rev", num_candidates=3, overlap=1)
    users = [make_labeler(n, projects=[project]) for n in ("ann", "ben", "cat")]
    (comparison,) = make_comparisons(project, 1)
    return project, users, comparison


def test_reject_reopens_the_slot_and_keeps_the_annotation(team, staff_user):
    project, (ann, ben, _), comparison = team
    annotation = label(project, ann)
    comparison.refresh_from_db()
    assert (comparison.status, comparison.submitted_count) == ("complete", 1)
    assert assignment_next(project=project, labeler=ben) is None

    result = annotation_reject(annotation=annotation, reason="random clicking", by=staff_user)

    assert result.changed
    annotation.refresh_from_db()
    assert annotation.rejected_at is not None and annotation.rejected_by == staff_user
    assert annotation.rejection_reason == "random clicking"
    comparison.refresh_from_db()
    assert (comparison.status, comparison.submitted_count) == ("open", 0)
    assert comparison.completed_at is None
    assert Assignment.objects.get(pk=annotation.assignment_id).status == "rejected"
    # The slot goes to someone else, never back to the rejected labeler.
    assert assignment_next(project=project, labeler=ann) is None
    assert assignment_next(project=project, labeler=ben).comparison_id == comparison.pk
    assert Annotation.objects.filter(pk=annotation.pk).exists()


def test_rejected_labeler_cannot_correct_the_answer(team, staff_user):
    project, (ann, _, _), _ = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="spam", by=staff_user)
    with pytest.raises(ConflictError, match="rejected"):
        ranking_submit(
            assignment=annotation.assignment,
            labeler=ann,
            ranking=annotation.ranking,
            client_token=uuid.uuid4(),
        )
    assert Annotation.objects.count() == 1


def test_reject_twice_is_a_no_op_and_needs_a_reason(team, staff_user):
    project, (ann, _, _), comparison = team
    annotation = label(project, ann)
    with pytest.raises(ServiceValidationError, match="reason"):
        annotation_reject(annotation=annotation, reason="  ", by=staff_user)
    assert annotation_reject(annotation=annotation, reason="x", by=staff_user).changed
    assert not annotation_reject(annotation=annotation, reason="y", by=staff_user).changed
    comparison.refresh_from_db()
    assert comparison.submitted_count == 0
    annotation.refresh_from_db()
    assert annotation.rejection_reason == "x"


def test_restore_counts_again_while_the_slot_is_free(team, staff_user):
    project, (ann, _, _), comparison = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    result = annotation_restore(annotation=annotation)
    assert result.changed
    comparison.refresh_from_db()
    assert (comparison.status, comparison.submitted_count) == ("complete", 1)
    annotation.refresh_from_db()
    assert annotation.rejected_at is None and annotation.rejection_reason == ""
    assert Assignment.objects.get(pk=annotation.assignment_id).status == "submitted"
    assert not annotation_restore(annotation=annotation).changed


def test_restore_after_the_slot_was_taken_is_a_conflict(team, staff_user):
    project, (ann, ben, cat), comparison = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    label(project, ben)
    with pytest.raises(ConflictError, match="filled"):
        annotation_restore(annotation=annotation)
    comparison.refresh_from_db()
    assert comparison.submitted_count == 1
    annotation.refresh_from_db()
    assert annotation.rejected_at is not None


def test_a_rejected_assignment_cannot_be_skipped_to_count_twice(team, staff_user):
    # Skip after reject, then someone else takes the slot: a restore must not count the
    # rejected annotation on top of theirs (the comparison would hold two of one required).
    project, (ann, ben, _), comparison = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    with pytest.raises(ConflictError, match="rejected"):
        assignment_skip(assignment=annotation.assignment, labeler=ann)
    assert Assignment.objects.get(pk=annotation.assignment_id).status == "rejected"
    label(project, ben)
    with pytest.raises(ConflictError, match="filled"):
        annotation_restore(annotation=annotation)
    comparison.refresh_from_db()
    assert comparison.submitted_count == 1
    assert counted_annotations(project).count() == 1


def test_restore_refuses_an_assignment_that_no_longer_holds_the_slot(team, staff_user):
    project, (ann, _, _), comparison = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    Assignment.objects.filter(pk=annotation.assignment_id).update(status="skipped")
    with pytest.raises(ConflictError, match="not rejected"):
        annotation_restore(annotation=annotation)
    annotation.refresh_from_db()
    assert annotation.rejected_at is not None
    comparison.refresh_from_db()
    assert comparison.submitted_count == 0


def test_a_replayed_token_after_rejection_returns_the_stored_annotation(team, staff_user):
    # A client retrying after a lost response gets what was stored (SPEC section 3), not
    # a conflict, even when staff have rejected it in between.
    project, (ann, _, _), _ = team
    assignment = assignment_next(project=project, labeler=ann)
    token = uuid.uuid4()
    ranking = [[c] for c in assignment.display_order]
    annotation, created = ranking_submit(
        assignment=assignment, labeler=ann, ranking=ranking, client_token=token
    )
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    again, created = ranking_submit(
        assignment=assignment, labeler=ann, ranking=ranking, client_token=token
    )
    assert (again.pk, created) == (annotation.pk, False)
    assert Annotation.objects.count() == 1


def test_restore_waits_for_an_open_lease_on_the_slot(team, staff_user):
    project, (ann, ben, _), comparison = team
    annotation = label(project, ann)
    annotation_reject(annotation=annotation, reason="oops", by=staff_user)
    lease = assignment_next(project=project, labeler=ben)
    assert lease.comparison_id == comparison.pk
    with pytest.raises(ConflictError):
        annotation_restore(annotation=annotation)
    # Once the lease lapses the slot is free again.
    later = timezone.now() + timedelta(seconds=project.lease_seconds + 1)
    assert annotation_restore(annotation=annotation, now=later).changed


def test_only_the_current_annotation_can_be_rejected(make_project, make_labeler, make_comparisons):
    project = make_project("corr", num_candidates=2, overlap=1)
    ann = make_labeler("ann", projects=[project])
    make_comparisons(project, 1)
    first = label(project, ann)
    correction, _ = ranking_submit(
        assignment=first.assignment,
        labeler=ann,
        ranking=list(reversed(first.ranking)),
        client_token=uuid.uuid4(),
    )
    with pytest.raises(ConflictError, match=f"annotation {correction.pk}"):
        annotation_reject(annotation=first, reason="old")
    assert annotation_reject(annotation=correction, reason="bad").changed
    assert Comparison.objects.get().submitted_count == 0


def test_rejected_annotations_leave_exports_and_stats(
    make_project, make_labeler, make_comparisons, staff_user, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    project = make_project("exp", num_candidates=2, overlap=2)
    ann, ben = (make_labeler(n, projects=[project]) for n in ("ann", "ben"))
    make_comparisons(project, 1)
    kept, dropped = label(project, ann), label(project, ben)
    annotation_reject(annotation=dropped, reason="bot", by=staff_user)
    export = export_create(project=project, options=ExportOptions())
    assert export.rows == 1
    assert export.counts["annotations_read"] == 1
    stats = project_stats(project)
    assert stats["progress"]["annotations"] == 1
    assert [row["labeler"] for row in stats["labelers"]] == ["ann"]
    assert kept.pk != dropped.pk


def test_bulk_reject_since_a_date(make_project, make_labeler, make_comparisons, staff_user):
    project = make_project("bulk", num_candidates=2, overlap=1)
    ann, ben = (make_labeler(n, projects=[project]) for n in ("ann", "ben"))
    make_comparisons(project, 4)
    early = label(project, ann)
    Annotation.objects.filter(pk=early.pk).update(created_at=timezone.now() - timedelta(days=3))
    late = [label(project, ann), label(project, ann)]
    other = label(project, ben)
    since = timezone.now() - timedelta(days=1)
    count = annotations_reject_since(
        project=project, labeler=ann, since=since, reason="bad week", by=staff_user
    )
    assert count == 2
    rejected = set(
        Annotation.objects.filter(rejected_at__isnull=False).values_list("pk", flat=True)
    )
    assert rejected == {a.pk for a in late}
    assert other.pk not in rejected
    assert Comparison.objects.filter(status="open").count() == 2
    assert (
        annotations_reject_since(
            project=project, labeler=ann, since=since, reason="again", by=staff_user
        )
        == 0
    )


def test_bulk_reject_is_a_few_statements_whatever_the_count(
    make_project, make_labeler, make_comparisons, staff_user
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def reject_all_of(name: str, n: int) -> int:
        project = make_project(f"many-{n}", num_candidates=2, overlap=2)
        user, other = (make_labeler(f"{x}-{n}", projects=[project]) for x in (name, "other"))
        make_comparisons(project, n, prefix=f"q{n}-")
        mine = [label(project, user) for _ in range(n)]
        label(project, other)
        with CaptureQueriesContext(connection) as queries:
            changed, refused = annotations_reject(
                ids=[a.pk for a in mine], reason="bot", by=staff_user
            )
        assert (changed, refused) == (n, [])
        stored = Annotation.objects.filter(pk__in=[a.pk for a in mine])
        assert all(a.rejected_by == staff_user and a.rejection_reason == "bot" for a in stored)
        assert not Assignment.objects.filter(annotations__in=mine).exclude(status="rejected")
        counts = Comparison.objects.filter(project=project).order_by("pk")
        # Every slot back; the one the other labeler also filled keeps that one.
        assert sorted(counts.values_list("submitted_count", flat=True)) == [0] * (n - 1) + [1]
        assert set(counts.values_list("status", flat=True)) == {"open"}
        return len(queries)

    assert reject_all_of("few", 3) == reject_all_of("lots", 30)


def test_bulk_reject_refuses_a_corrected_annotation_and_rejects_the_rest(
    make_project, make_labeler, make_comparisons, staff_user
):
    project = make_project("mixed", num_candidates=2, overlap=1)
    ann = make_labeler("ann", projects=[project])
    make_comparisons(project, 2)
    first, second = label(project, ann), label(project, ann)
    correction, _ = ranking_submit(
        assignment=first.assignment,
        labeler=ann,
        ranking=list(reversed(first.ranking)),
        client_token=uuid.uuid4(),
    )
    changed, refused = annotations_reject(ids=[first.pk, second.pk], reason="x", by=staff_user)
    assert changed == 1
    assert refused == [
        f"Annotation {first.pk} was corrected by annotation {correction.pk}; reject that one."
    ]
    assert set(
        Annotation.objects.filter(rejected_at__isnull=False).values_list("pk", flat=True)
    ) == {second.pk}
    # Again: the rejected one is no change, and nothing new is refused for it.
    assert annotations_reject(ids=[second.pk], reason="x") == (0, [])


def test_a_rejection_without_a_reason_is_refused_by_the_database(team):
    project, (ann, _, _), _ = team
    annotation = label(project, ann)
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.filter(pk=annotation.pk).update(rejected_at=timezone.now())
