"""Request-body limits, JSON errors under /api/, and the Content-Security-Policy header."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError
from django.test import Client

from annotation.models import Prompt

pytestmark = pytest.mark.django_db

PROMPTS = "/api/v1/projects/demo/prompts/"


def test_anonymous_token_request_over_the_cap_is_413_before_parsing(anon, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps([{}] * 2000)  # ~8 kB of empty objects: parsing it is what hurt
    response = anon.generic("POST", "/api/v1/auth/token/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 1000 bytes.", "errors": {}}


def test_the_default_cap_is_one_mebibyte_for_every_other_endpoint(alice, comparisons, settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 1024**2
    body = json.dumps({"ranking": [[1]], "rationale": "x" * (1024**2)})
    response = alice.generic(
        "POST", "/api/v1/assignments/1/submit/", body, content_type="application/json"
    )
    assert response.status_code == 413


def test_staff_imports_accept_bodies_up_to_import_max_bytes(staff, project, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.IMPORT_MAX_BYTES = 100_000
    body = json.dumps({"prompts": [{"text": f"prompt {i} " + "x" * 100} for i in range(100)]})
    assert 1000 < len(body) < 100_000
    response = staff.generic("POST", PROMPTS, body, content_type="application/json")
    assert response.status_code == 200, response.json()
    assert Prompt.objects.count() == 100

    too_big = json.dumps({"prompts": [{"text": "y" * 200_000}]})
    response = staff.generic("POST", PROMPTS, too_big, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"] == "Request body is larger than 100000 bytes."
    assert Prompt.objects.count() == 100


def test_import_bodies_of_countless_tiny_values_are_refused_with_bounded_memory(
    staff, project, settings
):
    settings.IMPORT_MAX_JSON_VALUES = 1000
    body = json.dumps({"prompts": [{}] * 5000})
    response = staff.generic("POST", PROMPTS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"] == "JSON body holds more than 1000 values."
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"prompts": [{"text": NaN}]}', "JSON parse error"),
        (b"\xff\xfe not utf-8", "JSON parse error"),
        (b'{"prompts": [{"text": "a\\u0000b"}]}', "NUL"),
        (b'{"prompts": [{"text": "ok", "metadata": {"k": "\\u0000"}}]}', "NUL"),
        (b"[" * 40 + b"]" * 40, "nested deeper"),
        (b'{"prompts": []}}', "JSON parse error"),
    ],
)
def test_the_streaming_import_parser_refuses_what_the_strict_parser_refuses(
    staff, project, raw, message
):
    response = staff.generic("POST", PROMPTS, raw, content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert Prompt.objects.count() == 0


def test_an_anonymous_import_body_is_not_read(anon, project, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"prompts": [{"text": "x" * 5000}]})
    response = anon.generic("POST", PROMPTS, body, content_type="application/json")
    assert response.status_code == 401
    assert Prompt.objects.count() == 0


def test_unmatched_api_urls_answer_json_404(alice):
    response = alice.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_unmatched_page_urls_stay_html(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_database_failure_under_api_is_json_500(staff, project, monkeypatch):
    from annotation.api import views

    def broken(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "prompts_import", broken)
    staff.raise_request_exception = False
    response = staff.post(PROMPTS, {"prompts": [{"text": "hi"}]}, format="json")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "errors": {}}


def test_pages_and_api_send_a_content_security_policy_without_inline_script(labeler):
    client = Client()
    response = client.get("/accounts/login/", follow=True)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert b"<script>" not in response.content


@pytest.mark.parametrize("assignment_id", [2**63, 10**30])
def test_ids_past_64_bits_are_404_not_500(alice, assignment_id):
    response = alice.post(f"/api/v1/assignments/{assignment_id}/submit/", {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}


@pytest.mark.parametrize("path", [PROMPTS, "/api/v1/projects/demo/candidates/"])
def test_a_labelers_session_cannot_have_a_large_import_body_parsed(
    labeler, staff_user, project, settings, monkeypatch, path
):
    # A token request is refused before its body is read; one signed in by its session is
    # not, since DRF's CSRF check reads the body first. So the cap holds for the session.
    from annotation.api.parsers import BoundedJSONParser

    parsed = []
    original = BoundedJSONParser.parse
    monkeypatch.setattr(
        BoundedJSONParser,
        "parse",
        lambda self, *a, **k: parsed.append(1) or original(self, *a, **k),
    )
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    field = "prompts" if path == PROMPTS else "candidates"
    body = json.dumps({field: [{"text": "x" * 5000}]})
    session = Client(enforce_csrf_checks=True)
    session.force_login(labeler)
    session.cookies["csrftoken"] = "a" * 32
    response = session.generic(
        "POST", path, body, content_type="application/json", HTTP_X_CSRFTOKEN="a" * 32
    )
    assert response.status_code == 413
    assert parsed == []

    # The same labeler by token: 403, body unread. Staff by session: the import runs.
    from tests.api.conftest import token_client

    response = token_client(labeler).generic("POST", path, body, content_type="application/json")
    assert response.status_code == 403
    assert parsed == []
    if path == PROMPTS:
        staff_session = Client()
        staff_session.force_login(staff_user)
        response = staff_session.generic("POST", path, body, content_type="application/json")
        assert response.status_code == 200, response.content
        assert Prompt.objects.count() == 1
