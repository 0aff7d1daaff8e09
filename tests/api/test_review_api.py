"""Staff review endpoints: gold rankings, reject and restore (SPEC section 11)."""

from __future__ import annotations

import uuid

import pytest

from annotation.models import Annotation, Comparison
from annotation.services.labeling import assignment_next, ranking_submit

pytestmark = pytest.mark.django_db


def gold_url(cid) -> str:
    return f"/api/v1/comparisons/{cid}/gold/"


def review_url(aid, what) -> str:
    return f"/api/v1/annotations/{aid}/{what}/"


@pytest.fixture
def annotation(project, labeler, comparisons):
    assignment = assignment_next(project=project, labeler=labeler)
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    return annotation


def test_gold_post_and_delete(staff, comparisons):
    comparison = comparisons[0]
    ranking = [[c] for c in comparison.candidate_ids]
    response = staff.post(gold_url(comparison.pk), {"ranking": ranking}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "comparison_id": comparison.pk,
        "is_gold": True,
        "gold_ranking": ranking,
    }
    response = staff.delete(gold_url(comparison.pk))
    assert response.status_code == 200
    assert response.json()["is_gold"] is False
    assert not Comparison.objects.get(pk=comparison.pk).is_gold


def test_gold_refuses_a_ranking_of_foreign_candidates(staff, comparisons):
    comparison = comparisons[0]
    response = staff.post(gold_url(comparison.pk), {"ranking": [[99999], [1]]}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "99999" in body["detail"] and "ranking" in body["errors"]
    assert not Comparison.objects.get(pk=comparison.pk).is_gold


@pytest.mark.parametrize("body", [{}, {"ranking": "x"}, {"ranking": [["a"]]}])
def test_gold_malformed_body_is_400(staff, comparisons, body):
    assert staff.post(gold_url(comparisons[0].pk), body, format="json").status_code == 400


def test_gold_is_staff_only_and_404_for_unknown(alice, anon, staff, comparisons):
    ranking = [[c] for c in comparisons[0].candidate_ids]
    assert (
        alice.post(gold_url(comparisons[0].pk), {"ranking": ranking}, format="json").status_code
        == 403
    )
    assert alice.delete(gold_url(comparisons[0].pk)).status_code == 403
    assert (
        anon.post(gold_url(comparisons[0].pk), {"ranking": ranking}, format="json").status_code
        == 401
    )
    assert staff.post(gold_url(999999), {"ranking": ranking}, format="json").status_code == 404
    assert staff.delete(gold_url(999999)).status_code == 404


def test_reject_then_restore(staff, annotation):
    response = staff.post(review_url(annotation.pk, "reject"), {"reason": "spam"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["rejected"] is True and body["reason"] == "spam" and body["changed"] is True
    assert body["comparison"]["submitted_count"] == 0
    assert Annotation.objects.get(pk=annotation.pk).rejected_at is not None
    response = staff.post(review_url(annotation.pk, "restore"))
    assert response.status_code == 200
    assert response.json()["rejected"] is False
    assert response.json()["comparison"]["submitted_count"] == 1


def test_reject_needs_a_reason(staff, annotation):
    for body in ({}, {"reason": ""}, {"reason": 3}):
        assert (
            staff.post(review_url(annotation.pk, "reject"), body, format="json").status_code == 400
        )
    assert Annotation.objects.get(pk=annotation.pk).rejected_at is None


def test_restore_into_a_filled_comparison_is_409(staff, annotation, project, make_labeler):
    staff.post(review_url(annotation.pk, "reject"), {"reason": "spam"}, format="json")
    comparison = annotation.comparison
    for name in ("bob", "carl"):
        user = make_labeler(name, projects=[project])
        while (lease := assignment_next(project=project, labeler=user)) is not None:
            ranking_submit(
                assignment=lease,
                labeler=user,
                ranking=[[c] for c in lease.display_order],
                client_token=uuid.uuid4(),
            )
    comparison.refresh_from_db()
    assert comparison.submitted_count == comparison.required
    assert staff.post(review_url(annotation.pk, "restore")).status_code == 409


def test_review_is_staff_only_and_404_for_unknown(alice, anon, staff, annotation):
    assert (
        alice.post(review_url(annotation.pk, "reject"), {"reason": "x"}, format="json").status_code
        == 403
    )
    assert alice.post(review_url(annotation.pk, "restore")).status_code == 403
    assert (
        anon.post(review_url(annotation.pk, "reject"), {"reason": "x"}, format="json").status_code
        == 401
    )
    assert (
        staff.post(review_url(999999, "reject"), {"reason": "x"}, format="json").status_code == 404
    )
    assert staff.post(review_url(999999, "restore")).status_code == 404


def test_stats_give_gold_accuracy_per_labeler(staff, project, labeler, comparisons):
    """Gold accuracy per labeler in /stats/: a labeler who ranks as gold scores 1.0."""
    for comparison in comparisons:
        staff.post(
            gold_url(comparison.pk),
            {"ranking": [[c] for c in comparison.candidate_ids]},
            format="json",
        )
    project.gold_rate = 1.0
    project.save()
    assignment = assignment_next(project=project, labeler=labeler)
    comparison = Comparison.objects.get(pk=assignment.comparison_id)
    ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[c] for c in comparison.candidate_ids],
        client_token=uuid.uuid4(),
    )
    rows = staff.get(f"/api/v1/projects/{project.slug}/stats/").json()["labelers"]
    (row,) = rows
    assert row["labeler"] == "alice"
    assert row["gold_accuracy"] == 1.0 and row["gold_annotations"] == 1
