"""GET /api/v1/projects/{slug}/models/: the model leaderboard from human labels (SPEC section 11)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Annotation, Candidate, Comparison

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/demo/models/"


def rank(client, order_by_model: list[str], ties: bool = False) -> int:
    """Take the next assignment and rank its candidates by model, best model first."""
    payload = client.post("/api/v1/projects/demo/assignments/next/").json()
    ids = [c["id"] for c in payload["assignment"]["comparison"]["candidates"]]
    model = dict(Candidate.objects.filter(pk__in=ids).values_list("pk", "model_name"))
    ranking = [[c for c in ids if model[c] == name] for name in order_by_model]
    if not ties:
        ranking = [[c] for tier in ranking for c in tier]
    body = {"ranking": ranking, "client_token": str(uuid.uuid4())}
    response = client.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/", body, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["annotation_id"]


def test_leaderboard_counts_cross_model_pairs_of_each_ranking(staff, alice, comparisons):
    # K=4, models m0 m1 m0 m1: a strict ranking states 4 pairs across models and 2 within.
    rank(alice, ["m1", "m0"])
    rank(alice, ["m1", "m0"])
    response = staff.get(URL)
    assert response.status_code == 200
    rows = response.json()["models"]
    assert [row["model"] for row in rows] == ["m1", "m0"]
    best, worst = rows
    assert set(best) == {
        "model",
        "comparisons",
        "wins",
        "losses",
        "ties",
        "win_rate",
        "ci_low",
        "ci_high",
        "strength",
    }
    assert (best["comparisons"], best["wins"], best["losses"], best["ties"]) == (8, 8, 0, 0)
    assert (worst["wins"], worst["losses"], worst["win_rate"]) == (0, 8, 0.0)
    assert 0 < best["ci_low"] < best["win_rate"] == 1.0 == best["ci_high"]
    assert best["strength"] > 0 > worst["strength"]


def test_ties_count_half_and_rejected_annotations_leave(
    staff, alice, make_project, comparisons, project
):
    project.allow_ties = True
    project.save(update_fields=["allow_ties"])
    # Tiers [m1, m1], [m0, m0] would be a win; one tier holding both models is a tie.
    payload = alice.post("/api/v1/projects/demo/assignments/next/").json()
    ids = [c["id"] for c in payload["assignment"]["comparison"]["candidates"]]
    alice.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
        {"ranking": [ids], "client_token": str(uuid.uuid4())},
        format="json",
    )
    beaten = rank(alice, ["m0", "m1"])
    rows = {row["model"]: row for row in staff.get(URL).json()["models"]}
    assert (rows["m0"]["wins"], rows["m0"]["ties"], rows["m0"]["comparisons"]) == (4, 4, 8)
    assert rows["m0"]["win_rate"] == pytest.approx(6 / 8)
    rejected = staff.post(
        f"/api/v1/annotations/{beaten}/reject/", {"reason": "spam"}, format="json"
    )
    assert rejected.status_code == 200
    rows = {row["model"]: row for row in staff.get(URL).json()["models"]}
    assert (rows["m0"]["wins"], rows["m0"]["ties"], rows["m0"]["win_rate"]) == (0, 4, 0.5)


def test_gold_and_date_range_filter_and_bad_dates_are_400(staff, alice, comparisons):
    first = rank(alice, ["m1", "m0"])
    Annotation.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(days=3))
    rank(alice, ["m0", "m1"])
    today = timezone.localdate()
    rows = {row["model"]: row for row in staff.get(f"{URL}?since={today}").json()["models"]}
    assert rows["m0"]["wins"] == 4 and rows["m1"]["wins"] == 0
    old = (today - timedelta(days=3)).isoformat()
    rows = {row["model"]: row for row in staff.get(f"{URL}?until={old}").json()["models"]}
    assert rows["m1"]["wins"] == 4 and rows["m0"]["wins"] == 0
    comparison = Annotation.objects.get(pk=first).comparison
    Comparison.objects.filter(pk=comparison.pk).update(
        is_gold=True, gold_ranking=[[c] for c in comparison.candidate_ids]
    )
    rows = {row["model"]: row for row in staff.get(URL).json()["models"]}
    assert rows["m1"]["comparisons"] == 4  # the gold comparison's labels stay out

    bad = staff.get(f"{URL}?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["errors"]
    backwards = staff.get(f"{URL}?since={today}&until={old}")
    assert backwards.status_code == 400 and "until" in backwards.json()["errors"]
    # The last day there is: no day after it to stop before, and no 500 for trying.
    last_day = staff.get(f"{URL}?until=9999-12-31")
    assert last_day.status_code == 200 and last_day.json() == staff.get(URL).json()


def test_an_empty_project_has_an_empty_board_and_labelers_are_refused(staff, alice, project):
    assert staff.get(URL).json() == {"models": []}
    assert alice.get(URL).status_code == 403
