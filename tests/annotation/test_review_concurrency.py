"""A slot reopened by a rejection is served to exactly one of many concurrent labelers."""

from __future__ import annotations

import uuid

from annotation.models import Assignment, Comparison
from annotation.services.labeling import assignment_next, ranking_submit
from annotation.services.review import annotation_reject
from tests.annotation.test_labeling_concurrency import WORKERS, pytestmark, run_threads  # noqa: F401


def test_a_reopened_slot_is_served_once(make_project, make_labeler, make_comparisons):
    project = make_project("reopen", num_candidates=2, overlap=1)
    first = make_labeler("first", projects=[project])
    users = [make_labeler(f"l{i}", projects=[project]) for i in range(WORKERS)]
    (comparison,) = make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=first)
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=first,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    annotation_reject(annotation=annotation, reason="spam")
    got: list[int | None] = []

    def work(index: int) -> None:
        lease = assignment_next(project=project, labeler=users[index])
        got.append(lease.comparison_id if lease else None)

    assert run_threads(WORKERS, work) == []
    assert sorted(got, key=str) == [comparison.pk] + [None] * (WORKERS - 1)
    assert Assignment.objects.filter(status="leased").count() == 1
    assert Comparison.objects.get().submitted_count == 0
