"""The labeling API on demonstration projects and allow_edit ranking projects (issue 20)."""

from __future__ import annotations

import uuid

import pytest

from annotation.models import Annotation, TaskType
from annotation.services.comparisons import comparisons_build
from annotation.services.imports import prompt_record, prompts_import
from tests.api.conftest import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def writer(make_project, make_labeler):
    project = make_project("demos", task_type=TaskType.DEMONSTRATION, num_candidates=3)
    prompts_import(
        project=project,
        records=[prompt_record({"external_id": "q", "text": "Capital of France?"}, line=1)],
    )
    comparisons_build(project=project)
    return token_client(make_labeler("wanda", projects=[project]))


def test_next_says_demonstration_and_submit_stores_the_answer(writer):
    payload = writer.post("/api/v1/projects/demos/assignments/next/").json()["assignment"]
    assert payload["task_type"] == "demonstration"
    assert payload["allow_edit"] is False
    assert payload["comparison"]["candidates"] == []  # no references for this prompt
    url = f"/api/v1/assignments/{payload['id']}/submit/"
    token = str(uuid.uuid4())
    body = {"demonstration": "Paris.", "client_token": token}
    first = writer.post(url, body, format="json")
    assert first.status_code == 201, first.content
    assert Annotation.objects.get().demonstration == "Paris."
    again = writer.post(url, body, format="json")
    assert again.status_code == 200
    assert again.json() == first.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "demonstration"),
        ({"demonstration": "  \n "}, "demonstration"),
        ({"demonstration": 7}, "demonstration"),
        ({"demonstration": "x" * 31}, "demonstration"),
        ({"demonstration": "Paris.", "ranking": [[1]]}, "ranking"),
        ({"demonstration": "Paris.", "edited_text": "Lyon."}, "edited_text"),
    ],
)
def test_bad_demonstrations_are_400_naming_the_field(writer, settings, body, field):
    settings.ANSWER_MAX_LENGTH = 30
    payload = writer.post("/api/v1/projects/demos/assignments/next/").json()["assignment"]
    response = writer.post(
        f"/api/v1/assignments/{payload['id']}/submit/",
        {"client_token": str(uuid.uuid4()), **body},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Annotation.objects.exists()


def test_edited_text_on_an_allow_edit_project(make_project, make_comparisons, make_labeler):
    project = make_project("edits", num_candidates=2, allow_edit=True)
    make_comparisons(project, n=1)
    client = token_client(make_labeler("eve", projects=[project]))
    payload = client.post("/api/v1/projects/edits/assignments/next/").json()["assignment"]
    assert payload["allow_edit"] is True
    ids = [c["id"] for c in payload["comparison"]["candidates"]]
    response = client.post(
        f"/api/v1/assignments/{payload['id']}/submit/",
        {
            "ranking": [[ids[1]], [ids[0]]],
            "edited_text": "A rewrite.",
            "client_token": str(uuid.uuid4()),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Annotation.objects.get().edited_text == "A rewrite."


def test_demonstration_on_a_ranking_project_is_400(alice, comparisons):
    payload = alice.post("/api/v1/projects/demo/assignments/next/").json()["assignment"]
    ids = [c["id"] for c in payload["comparison"]["candidates"]]
    response = alice.post(
        f"/api/v1/assignments/{payload['id']}/submit/",
        {"ranking": [[i] for i in ids], "demonstration": "x", "client_token": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 400
    assert "demonstration" in response.json()["errors"]
    edited = alice.post(
        f"/api/v1/assignments/{payload['id']}/submit/",
        {"ranking": [[i] for i in ids], "edited_text": "x", "client_token": str(uuid.uuid4())},
        format="json",
    )
    assert edited.status_code == 400
    assert "allow_edit" in edited.json()["errors"]["edited_text"][0]
    assert not Annotation.objects.exists()
