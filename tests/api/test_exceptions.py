"""The one exception handler: every error class to its status and `{"detail", "errors"}`."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from rest_framework import exceptions

from annotation.api.exceptions import PayloadTooLarge, api_exception_handler
from annotation.errors import (
    ConflictError,
    ImportFileError,
    NotAllowedError,
    ServiceValidationError,
)
from annotation.models import Annotation


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (
            ServiceValidationError("Invalid submission: x", {"ranking": ["x"]}),
            400,
            {"detail": "Invalid submission: x", "errors": {"ranking": ["x"]}},
        ),
        (ImportFileError("f.jsonl", 3, "bad"), 400, None),
        (ConflictError("taken", {"assignment": ["taken"]}), 409, None),
        (NotAllowedError("not a member"), 403, {"detail": "not a member", "errors": {}}),
        (
            DjangoValidationError({"slug": ["exists"]}),
            400,
            {"detail": "slug: exists", "errors": {"slug": ["exists"]}},
        ),
        (
            DjangoValidationError("plain"),
            400,
            {"detail": "plain", "errors": {"non_field_errors": ["plain"]}},
        ),
        (IntegrityError("unique"), 409, None),
        (DataError("out of range"), 400, None),
        (RequestDataTooBig("big"), 413, None),
        (PayloadTooLarge("too many", {"prompts": ["at most 3 items"]}), 413, None),
        (
            exceptions.ValidationError({"ranking": {0: {1: ["A valid integer is required."]}}}),
            400,
            {
                "detail": "ranking.0.1: A valid integer is required.",
                "errors": {"ranking": {0: {1: ["A valid integer is required."]}}},
            },
        ),
        (
            exceptions.ValidationError(["top level"]),
            400,
            {"detail": "top level", "errors": {"non_field_errors": ["top level"]}},
        ),
        (exceptions.NotFound(), 404, {"detail": "Not found.", "errors": {}}),
        (exceptions.Throttled(wait=7), 429, None),
    ],
)
def test_handler_maps_each_error(exc, status, body):
    response = api_exception_handler(exc, {})
    assert response.status_code == status
    assert set(response.data) == {"detail", "errors"}
    assert isinstance(response.data["detail"], str)
    if body is not None:
        assert response.data == body


def test_handler_leaves_unknown_exceptions_to_django():
    assert api_exception_handler(RuntimeError("bug"), {}) is None


@pytest.mark.django_db
def test_a_labeler_removed_from_the_project_cannot_submit(alice, labeler, project, comparisons):
    payload = alice.post("/api/v1/projects/demo/assignments/next/").json()["assignment"]
    project.members.remove(labeler)
    body = {
        "ranking": [[c["id"]] for c in payload["comparison"]["candidates"]],
        "client_token": str(uuid.uuid4()),
    }

    response = alice.post(f"/api/v1/assignments/{payload['id']}/submit/", body, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": "You are not a member of this project.", "errors": {}}
    assert Annotation.objects.count() == 0
    assert alice.post("/api/v1/projects/demo/assignments/next/").status_code == 404
