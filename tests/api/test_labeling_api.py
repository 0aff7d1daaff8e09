"""Contract tests of the labeler endpoints: projects, next, submit, skip (SPEC section 3)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Annotation, Assignment, Comparison, Project, Prompt
from tests.api.conftest import strict, token_client

pytestmark = pytest.mark.django_db

PROJECTS = "/api/v1/projects/"


def next_url(slug: str = "demo") -> str:
    return f"/api/v1/projects/{slug}/assignments/next/"


def submit_url(assignment_id: int) -> str:
    return f"/api/v1/assignments/{assignment_id}/submit/"


def skip_url(assignment_id: int) -> str:
    return f"/api/v1/assignments/{assignment_id}/skip/"


def lease(client, slug: str = "demo") -> dict:
    response = client.post(next_url(slug))
    assert response.status_code == 200, response.content
    return response.json()


def submit(client, payload: dict, **body):
    body.setdefault("ranking", strict(payload))
    body.setdefault("client_token", str(uuid.uuid4()))
    return client.post(submit_url(payload["assignment"]["id"]), body, format="json")


def expire(assignment_id: int) -> None:
    """Let a lease run out (as if its time had passed) without touching its status."""
    Assignment.objects.filter(pk=assignment_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.fixture
def bob(make_labeler, project):
    return token_client(make_labeler("bob", projects=[project]))


# ---------------------------------------------------------------------------------------
# GET /api/v1/projects/
# ---------------------------------------------------------------------------------------


def test_projects_lists_own_projects_with_progress(alice, bob, comparisons):
    first = lease(alice)
    assert submit(alice, first).status_code == 201
    # bob is served the untouched comparisons first (fewest submitted first), then alice's
    # one, which his annotation completes (overlap 2).
    served = []
    for _ in range(3):
        payload = lease(bob)
        served.append(payload["assignment"]["comparison"]["id"])
        assert submit(bob, payload).status_code == 201
    assert served[-1] == first["assignment"]["comparison"]["id"]

    response = alice.get(PROJECTS)

    assert response.status_code == 200
    [row] = response.json()
    assert row == {
        "slug": "demo",
        "name": "demo",
        "guidelines": "",
        "task_type": "ranking",
        "num_candidates": 4,
        "allow_ties": True,
        "allow_edit": False,
        "flags": ["unhelpful", "untruthful", "harmful"],
        "rating_scale": 0,
        "rating_labels": [],
        "lease_seconds": 600,
        "comparisons": 3,
        "complete": 1,
        "mine": 1,
    }


def test_projects_hides_projects_the_user_is_not_in(outsider, comparisons):
    response = outsider.get(PROJECTS)
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == ["other"]


def test_projects_lists_every_active_project_for_staff(staff, project, other_project):
    response = staff.get(PROJECTS)
    assert [p["slug"] for p in response.json()] == ["demo", "other"]
    assert response.json()[0]["mine"] == 0


def test_projects_needs_credentials(anon):
    response = anon.get(PROJECTS)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "errors": {},
    }
    assert response["WWW-Authenticate"] == "Token"


# ---------------------------------------------------------------------------------------
# POST /api/v1/projects/{slug}/assignments/next/
# ---------------------------------------------------------------------------------------


def test_next_returns_the_comparison_in_this_labelers_display_order(alice, comparisons):
    response = alice.post(next_url())

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"assignment"}
    assignment = body["assignment"]
    assert set(assignment) == {"id", "expires_at", "task_type", "allow_edit", "comparison"}
    assert (assignment["task_type"], assignment["allow_edit"]) == ("ranking", False)
    stored = Assignment.objects.get(pk=assignment["id"])
    assert stored.labeler.username == "alice"
    assert stored.comparison_id == comparisons[0].pk
    comparison = assignment["comparison"]
    assert set(comparison) == {"id", "prompt", "candidates"}
    assert comparison["id"] == comparisons[0].pk
    assert comparison["prompt"] == {
        "id": comparisons[0].prompt_id,
        "messages": [{"role": "user", "content": "Question p0?"}],
        "is_chat": False,
    }
    assert [c["id"] for c in comparison["candidates"]] == stored.display_order
    assert sorted(c["text"] for c in comparison["candidates"]) == [
        f"Answer {j} to p0" for j in range(4)
    ]
    assert all(set(c) == {"id", "text"} for c in comparison["candidates"])
    expires = timezone.datetime.fromisoformat(assignment["expires_at"])
    assert expires == stored.expires_at


def test_next_says_whether_the_prompt_is_a_chat(alice, project):
    from annotation.api.serializers import AssignmentOutput
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    # A one-turn chat and a plain-text prompt store the same messages; only is_chat differs.
    one_turn = [{"role": "user", "content": "Hi?"}]
    prompts_import(
        project=project,
        records=[
            prompt_record({"external_id": "chat", "messages": one_turn}, line=1),
            prompt_record({"external_id": "text", "text": "Hi?"}, line=2),
        ],
    )
    rows = [
        {"prompt_external_id": pid, "text": f"a{j}", "model": "m"}
        for pid in ("chat", "text")
        for j in range(4)
    ]
    candidates_import(
        project=project,
        records=[candidate_record(row, line=n) for n, row in enumerate(rows, start=1)],
    )
    comparisons_build(project=project)
    seen = {}
    for _ in range(2):
        payload = lease(alice)
        prompt = payload["assignment"]["comparison"]["prompt"]
        seen[Prompt.objects.get(pk=prompt["id"]).external_id] = prompt
        stored = Assignment.objects.get(pk=payload["assignment"]["id"])
        assert payload["assignment"] == AssignmentOutput(stored).data
        assert submit(alice, payload).status_code == 201
    assert seen["chat"]["messages"] == seen["text"]["messages"] == one_turn
    assert seen["chat"]["is_chat"] is True and seen["text"]["is_chat"] is False


def test_next_again_renews_the_open_lease(alice, comparisons):
    first = lease(alice)["assignment"]
    Assignment.objects.filter(pk=first["id"]).update(
        expires_at=timezone.now() + timedelta(seconds=5)
    )
    again = lease(alice)["assignment"]
    assert again["id"] == first["id"]
    assert Assignment.objects.get(pk=first["id"]).expires_at > timezone.now() + timedelta(
        seconds=500
    )
    assert Assignment.objects.count() == 1


def test_next_answers_204_when_nothing_is_left(alice, comparisons):
    for _ in comparisons:
        assert submit(alice, lease(alice)).status_code == 201

    response = alice.post(next_url())

    assert response.status_code == 204
    assert response.content == b""


def test_next_answers_204_on_an_empty_project(alice, project):
    assert alice.post(next_url()).status_code == 204


def test_next_hides_projects_of_others_as_404(outsider, comparisons):
    response = outsider.post(next_url())
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}
    assert Assignment.objects.count() == 0


def test_next_on_an_unknown_project_is_404(alice):
    assert alice.post(next_url("nope")).status_code == 404


def test_next_needs_credentials(anon, comparisons):
    assert anon.post(next_url()).status_code == 401


# ---------------------------------------------------------------------------------------
# POST /api/v1/assignments/{id}/submit/
# ---------------------------------------------------------------------------------------


def test_submit_stores_the_ranking_and_answers_201(alice, comparisons):
    payload = lease(alice)
    ids = [c["id"] for c in payload["assignment"]["comparison"]["candidates"]]
    token = str(uuid.uuid4())

    response = submit(
        alice,
        payload,
        ranking=[[ids[2]], [ids[0], ids[1]], [ids[3]]],
        flags={str(ids[3]): ["harmful"]},
        rationale="third is best",
        time_spent_ms=1234,
        client_token=token,
    )

    assert response.status_code == 201
    annotation = Annotation.objects.get()
    assert response.json() == {"annotation_id": annotation.pk}
    assert annotation.ranking == [[ids[2]], [ids[0], ids[1]], [ids[3]]]
    assert annotation.flags == {str(ids[3]): ["harmful"]}
    assert annotation.rationale == "third is best"
    assert annotation.time_spent_ms == 1234
    assert str(annotation.client_token) == token
    assert Assignment.objects.get().status == Assignment.Status.SUBMITTED


def test_submit_replay_with_the_same_token_answers_200_and_the_same_id(alice, comparisons):
    payload = lease(alice)
    token = str(uuid.uuid4())
    first = submit(alice, payload, client_token=token)

    replay = submit(alice, payload, client_token=token)

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert Annotation.objects.count() == 1
    assert Comparison.objects.get(pk=comparisons[0].pk).submitted_count == 1


DROP = object()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ranking": "first"}, "ranking"),
        ({"ranking": [["x"]]}, "ranking"),
        ({"ranking": [[]]}, "ranking"),
        ({"client_token": DROP}, "client_token"),
        ({"client_token": "not-a-uuid"}, "client_token"),
        ({"time_spent_ms": -1}, "time_spent_ms"),
        ({"time_spent_ms": 2**31}, "time_spent_ms"),
        ({"all_bad": "maybe"}, "all_bad"),
        ({"flags": ["harmful"]}, "flags"),
        ({"ratings": {"1": "high"}}, "ratings"),
        ({"rationale": 12}, "rationale"),
        # A misspelt field is refused, not dropped: "flag" would store no flags.
        ({"flag": {"1": ["harmful"]}}, "flag"),
    ],
)
def test_submit_refuses_malformed_fields(alice, comparisons, body, field):
    payload = lease(alice)
    data = {"ranking": strict(payload), "client_token": str(uuid.uuid4()), **body}
    data = {k: v for k, v in data.items() if v is not DROP}

    response = alice.post(submit_url(payload["assignment"]["id"]), data, format="json")

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"detail", "errors"}
    assert field in response.json()["errors"]
    assert response.json()["detail"].startswith(field)
    assert Annotation.objects.count() == 0


@pytest.mark.parametrize("body", [{"ranking": DROP}, {"ranking": []}])
def test_submit_without_a_ranking_is_400_on_a_ranking_project(alice, comparisons, body):
    # The serializer lets an empty ranking through (a demonstration project sends none); the
    # service refuses it where a ranking is due.
    payload = lease(alice)
    data = {"client_token": str(uuid.uuid4()), **body}
    data = {k: v for k, v in data.items() if v is not DROP}
    response = alice.post(submit_url(payload["assignment"]["id"]), data, format="json")
    assert response.status_code == 400, response.content
    assert "non-empty list of tiers" in response.json()["errors"]["ranking"][0]
    assert Annotation.objects.count() == 0


def _ids(payload: dict) -> list[int]:
    return [c["id"] for c in payload["assignment"]["comparison"]["candidates"]]


@pytest.mark.parametrize(
    ("make_body", "field", "message"),
    [
        (lambda ids: {"ranking": [[i] for i in ids[:3]]}, "ranking", "missing"),
        (lambda ids: {"ranking": [[i] for i in ids] + [[ids[0]]]}, "ranking", "more than once"),
        (lambda ids: {"ranking": [[i] for i in ids] + [[999999]]}, "ranking", "not part"),
        (
            lambda ids: {"flags": {str(ids[0]): ["rude"]}},
            "flags",
            "unknown flag code 'rude'",
        ),
        (lambda ids: {"flags": {"999999": ["harmful"]}}, "flags", "not a candidate"),
        # 4,300+ digits is past Python's int() limit: a 400, not a 500, and not echoed back.
        (lambda ids: {"flags": {"7" * 4400: ["harmful"]}}, "flags", "(4400 characters)"),
        (lambda ids: {"ratings": {str(ids[0]): 3}}, "ratings", "does not collect ratings"),
    ],
)
def test_submit_refuses_rankings_the_comparison_does_not_allow(
    alice, comparisons, make_body, field, message
):
    payload = lease(alice)

    response = submit(alice, payload, **make_body(_ids(payload)))

    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])
    assert Annotation.objects.count() == 0
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def test_submit_refuses_ties_where_the_project_allows_none(make_project, make_comparisons, labeler):
    project = make_project("strict", num_candidates=2, allow_ties=False)
    project.members.add(labeler)
    make_comparisons(project, 1)
    client = token_client(labeler)
    payload = lease(client, "strict")
    a, b = _ids(payload)

    response = submit(client, payload, ranking=[[a, b]])

    assert response.status_code == 400
    assert "does not allow ties" in response.json()["errors"]["ranking"][0]
    # Both bad is the one tie a no-ties pairwise project accepts (SPEC section 2).
    assert submit(client, payload, ranking=[[a, b]], all_bad=True).status_code == 201


def test_submit_refuses_a_rationale_over_the_limit(alice, comparisons, settings):
    settings.RATIONALE_MAX_LENGTH = 10
    payload = lease(alice)

    response = submit(alice, payload, rationale="x" * 11)

    assert response.status_code == 400
    assert "rationale" in response.json()["errors"]
    assert submit(alice, payload, rationale="x" * 10).status_code == 201


def test_submit_on_someone_elses_assignment_is_404(alice, bob, comparisons):
    payload = lease(bob)

    response = submit(alice, payload)

    assert response.status_code == 404
    assert Annotation.objects.count() == 0


def test_submit_on_an_unknown_assignment_is_404(alice):
    response = alice.post(
        submit_url(424242), {"ranking": [[1]], "client_token": str(uuid.uuid4())}, format="json"
    )
    assert response.status_code == 404


def test_submit_by_a_labeler_of_another_project_is_404(alice, outsider, comparisons):
    assert submit(outsider, lease(alice)).status_code == 404


def test_submit_needs_credentials(anon, alice, comparisons):
    assert submit(anon, lease(alice)).status_code == 401
    assert Annotation.objects.count() == 0


def test_late_submit_is_accepted_while_the_slot_is_free(alice, comparisons):
    payload = lease(alice)
    expire(payload["assignment"]["id"])

    response = submit(alice, payload)

    assert response.status_code == 201
    assert Annotation.objects.count() == 1


def test_late_submit_gets_409_when_the_slot_was_taken(make_project, make_comparisons, labeler, bob):
    from annotation.models import Project

    project = make_project("solo", num_candidates=2, overlap=1)
    project.members.add(labeler, *Project.objects.get(slug="demo").members.all())
    [comparison] = make_comparisons(project, 1)
    alice = token_client(labeler)
    mine = lease(alice, "solo")
    expire(mine["assignment"]["id"])
    theirs = lease(bob, "solo")
    assert theirs["assignment"]["comparison"]["id"] == comparison.pk

    response = submit(alice, mine)

    assert response.status_code == 409
    assert response.json()["detail"] == (
        "Your lease ran out and this comparison has been taken by others."
    )
    assert Annotation.objects.count() == 0
    assert submit(bob, theirs).status_code == 201
    assert Comparison.objects.get(pk=comparison.pk).submitted_count == 1


# ---------------------------------------------------------------------------------------
# POST /api/v1/assignments/{id}/skip/
# ---------------------------------------------------------------------------------------


def test_skip_frees_the_slot_and_serves_something_else(alice, bob, comparisons):
    payload = lease(alice)
    skipped = payload["assignment"]

    response = alice.post(skip_url(skipped["id"]))

    assert response.status_code == 200
    assert response.json() == {"id": skipped["id"], "status": "skipped"}
    assert Assignment.objects.get(pk=skipped["id"]).status == Assignment.Status.SKIPPED
    assert lease(alice)["assignment"]["comparison"]["id"] != skipped["comparison"]["id"]
    # The freed slot goes to another labeler.
    assert lease(bob)["assignment"]["comparison"]["id"] == skipped["comparison"]["id"]


def test_skip_after_submit_is_409(alice, comparisons):
    payload = lease(alice)
    submit(alice, payload)

    response = alice.post(skip_url(payload["assignment"]["id"]))

    assert response.status_code == 409
    assert Assignment.objects.get().status == Assignment.Status.SUBMITTED


def test_skip_of_someone_elses_assignment_is_404(alice, bob, outsider, staff, comparisons):
    payload = lease(bob)
    for client in (alice, outsider, staff):
        assert client.post(skip_url(payload["assignment"]["id"])).status_code == 404
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def test_skip_by_a_labeler_removed_from_the_project_is_403(alice, project, labeler, comparisons):
    payload = lease(alice)
    project.members.remove(labeler)

    response = alice.post(skip_url(payload["assignment"]["id"]))

    assert response.status_code == 403
    assert "not a member" in response.json()["detail"]
    assert (
        Assignment.objects.get().status == Assignment.Status.EXPIRED
    )  # released on leaving, not skipped


def test_skip_needs_credentials(anon, alice, comparisons):
    assert anon.post(skip_url(lease(alice)["assignment"]["id"])).status_code == 401


# ---------------------------------------------------------------------------------------
# POST /api/v1/assignments/{id}/renew/
# ---------------------------------------------------------------------------------------


def test_renew_keeps_the_lease_also_after_it_ran_out(alice, bob, comparisons):
    assignment = lease(alice)["assignment"]
    url = f"/api/v1/assignments/{assignment['id']}/renew/"
    expire(assignment["id"])
    response = alice.post(url)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == assignment["id"] and set(body) == {"id", "expires_at"}
    stored = Assignment.objects.get(pk=assignment["id"])
    assert stored.status == Assignment.Status.LEASED and stored.expires_at > timezone.now()
    assert bob.post(url).status_code == 404  # somebody else's
    submit(alice, {"assignment": assignment})
    refused = alice.post(url)
    assert refused.status_code == 409 and "no lease to renew" in refused.json()["detail"]


# ---------------------------------------------------------------------------------------
# the hot path: hand-built payload and query budget
# ---------------------------------------------------------------------------------------


def test_next_payload_matches_the_documented_serializer(alice, comparisons):
    from annotation.api.serializers import AssignmentOutput

    for _ in ("a new lease", "the open lease renewed (loaded another way)"):
        payload = lease(alice)["assignment"]
        stored = Assignment.objects.get(pk=payload["id"])
        assert payload == AssignmentOutput(stored).data


def test_next_and_submit_over_the_api_take_few_queries(alice, comparisons):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    submit(alice, lease(alice))  # the first call creates the labeler's queue row
    with CaptureQueriesContext(connection) as queries:
        response = submit(alice, lease(alice))
    assert response.status_code == 201
    # Next: token, project with membership, queue row, open leases, queue head, insert,
    # queue counters, candidates' texts. Submit: token, assignment, locked comparison with
    # membership, its project, locked assignment, insert and two updates. PostgreSQL
    # recounts the leased comparison once more under its row lock. BEGIN/COMMIT and
    # savepoints come on top.
    statements = [
        q["sql"]
        for q in queries
        if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) <= (17 if connection.vendor == "postgresql" else 16), statements


def test_submit_to_a_paused_project_and_corrections_past_the_cap_are_409(
    alice, comparisons, settings
):
    settings.CORRECTIONS_MAX = 1
    first = lease(alice)
    assert submit(alice, first).status_code == 201
    assert submit(alice, first).status_code == 201  # the one correction allowed
    capped = submit(alice, first)
    assert capped.status_code == 409
    assert "CORRECTIONS_MAX = 1" in capped.json()["detail"]
    second = lease(alice)
    Project.objects.filter(slug="demo").update(active=False)
    paused = submit(alice, second)
    assert paused.status_code == 409
    assert paused.json()["detail"] == "Project 'demo' is not active; it accepts no submissions."
    assert alice.post(next_url("demo")).status_code == 204
    assert Annotation.objects.count() == 2
