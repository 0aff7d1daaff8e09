"""Who may call what: anonymous 401, labelers 403 on staff endpoints, others' ids 404,
tokens, session auth with CSRF, throttling, and the error shape for hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from annotation.models import Annotation, ApiToken, Assignment, Export, Prompt
from annotation.services.projects import labeler_create
from annotation.services.tokens import api_token_issue
from tests.api.conftest import token_client

pytestmark = pytest.mark.django_db

STAFF_ENDPOINTS = [
    ("post", "/api/v1/projects/demo/prompts/", {"prompts": [{"text": "hi"}]}),
    ("post", "/api/v1/projects/demo/candidates/", {"candidates": [{"prompt_id": 1, "text": "x"}]}),
    ("post", "/api/v1/projects/demo/comparisons/build/", None),
    ("post", "/api/v1/projects/demo/exports/", {}),
    ("get", "/api/v1/exports/{export}/download/", None),
    ("get", "/api/v1/projects/demo/stats/", None),
    ("get", "/api/v1/projects/demo/models/", None),
]
LABELER_ENDPOINTS = [
    ("get", "/api/v1/projects/", None),
    ("post", "/api/v1/projects/demo/assignments/next/", None),
    ("post", "/api/v1/assignments/{assignment}/submit/", {"ranking": [[1]]}),
    ("post", "/api/v1/assignments/{assignment}/skip/", None),
    ("get", "/api/schema/", None),
]


@pytest.fixture
def ids(alice, staff, comparisons):
    """A real assignment (alice's) and a real export, so 401/403 cannot come from a 404."""
    assignment = alice.post("/api/v1/projects/demo/assignments/next/").json()["assignment"]
    export = staff.post("/api/v1/projects/demo/exports/", {}, format="json").json()
    return {"assignment": assignment["id"], "export": export["id"]}


def call(client, method: str, path: str, body, ids: dict):
    # Accept JSON: the schema endpoint answers YAML by default, its errors included.
    return getattr(client, method)(
        path.format(**ids), body, format="json", HTTP_ACCEPT="application/json"
    )


def db_state() -> tuple:
    return (
        Prompt.objects.count(),
        Export.objects.count(),
        Annotation.objects.count(),
        sorted(Assignment.objects.values_list("id", "status")),
    )


@pytest.mark.parametrize(("method", "path", "body"), STAFF_ENDPOINTS + LABELER_ENDPOINTS)
def test_anonymous_callers_get_401_everywhere(anon, ids, method, path, body):
    before = db_state()
    response = call(anon, method, path, body, ids)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "errors": {},
    }
    assert db_state() == before


@pytest.mark.parametrize(("method", "path", "body"), STAFF_ENDPOINTS + LABELER_ENDPOINTS)
def test_a_bad_token_gets_401(ids, method, path, body):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    response = call(client, method, path, body, ids)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


@pytest.mark.parametrize(("method", "path", "body"), STAFF_ENDPOINTS)
@pytest.mark.parametrize("who", ["alice", "outsider"])
def test_labelers_get_403_on_staff_endpoints(request, ids, who, method, path, body):
    client = request.getfixturevalue(who)
    before = db_state()
    response = call(client, method, path, body, ids)
    assert response.status_code == 403
    assert response.json() == {"detail": "This endpoint is for staff users.", "errors": {}}
    assert db_state() == before


# What the admin asks for the same work, per staff endpoint.
STAFF_PERMISSIONS = {
    "/api/v1/projects/demo/prompts/": "annotation.change_project",
    "/api/v1/projects/demo/candidates/": "annotation.change_project",
    "/api/v1/projects/demo/comparisons/build/": "annotation.change_project",
    "/api/v1/projects/demo/exports/": "annotation.change_project",
    "/api/v1/exports/{export}/download/": "annotation.view_export",
    "/api/v1/projects/demo/stats/": "annotation.view_project",
    "/api/v1/projects/demo/models/": "annotation.view_project",
}


@pytest.mark.parametrize(("method", "path", "body"), STAFF_ENDPOINTS)
def test_staff_without_the_admins_permission_get_403_naming_it(ids, method, path, body):
    from django.contrib.auth import get_user_model

    # is_staff alone: the admin shows this account nothing, and the API did everything.
    bare = get_user_model().objects.create_user("bare", is_staff=True)
    before = db_state()
    response = call(token_client(bare), method, path, body, ids)
    needed = STAFF_PERMISSIONS[path]
    assert response.status_code == 403
    assert response.json()["detail"] == f"This endpoint needs the {needed} permission."
    assert db_state() == before


def test_review_and_gold_endpoints_ask_for_the_admins_permissions(comparisons, alice):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    assignment = alice.post("/api/v1/projects/demo/assignments/next/").json()["assignment"]
    order = [c["id"] for c in assignment["comparison"]["candidates"]]
    submitted = alice.post(
        f"/api/v1/assignments/{assignment['id']}/submit/",
        {"ranking": [[c] for c in order], "client_token": str(uuid.uuid4())},
        format="json",
    ).json()
    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client = token_client(viewer)
    annotation = submitted["annotation_id"]
    gold = f"/api/v1/comparisons/{assignment['comparison']['id']}/gold/"
    reject = f"/api/v1/annotations/{annotation}/reject/"
    assert client.get("/api/v1/projects/demo/stats/").status_code == 200  # view is enough
    refused = client.post(reject, {"reason": "spam"}, format="json")
    assert refused.status_code == 403 and "annotation.change_annotation" in refused.json()["detail"]
    refused = client.post(gold, {"ranking": [[c] for c in order]}, format="json")
    assert refused.status_code == 403 and "annotation.change_comparison" in refused.json()["detail"]
    assert not Annotation.objects.get(pk=annotation).rejected_at
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_annotation", "change_comparison"])
    )
    client = token_client(get_user_model().objects.get(pk=viewer.pk))  # permissions re-read
    assert client.post(reject, {"reason": "spam"}, format="json").status_code == 200
    assert client.post(gold, {"ranking": [[c] for c in order]}, format="json").status_code == 200


def test_create_labeler_staff_makes_a_project_admin_of_the_api_and_the_admin(project, client):
    from django.core.management import call_command

    call_command("create_labeler", "pat", "--project", "demo", "--staff", stdout=io.StringIO())
    from django.contrib.auth import get_user_model

    pat = get_user_model().objects.get(username="pat")
    assert pat.groups.filter(name="project admins").exists()
    assert pat.has_perm("annotation.change_project") and pat.has_perm("lineage.view_modelversion")
    assert not pat.has_perm("annotation.delete_project")
    api = token_client(pat)
    imported = api.post(
        "/api/v1/projects/demo/prompts/", {"prompts": [{"text": "hi"}]}, format="json"
    )
    assert imported.status_code == 200
    client.force_login(pat)
    assert client.get("/admin/annotation/project/").status_code == 200


def test_staff_get_404_not_403_for_unknown_projects(staff):
    for what in ("prompts", "candidates", "comparisons/build", "exports"):
        assert staff.post(f"/api/v1/projects/nope/{what}/", {}, format="json").status_code == 404
    assert staff.get("/api/v1/projects/nope/stats/").status_code == 404


@pytest.mark.parametrize("path", ["submit", "skip"])
@pytest.mark.parametrize("who", ["outsider", "staff"])
def test_other_peoples_assignments_are_404(request, ids, who, path):
    client = request.getfixturevalue(who)
    before = db_state()
    body = {"ranking": [[1]], "client_token": str(uuid.uuid4())}
    response = client.post(f"/api/v1/assignments/{ids['assignment']}/{path}/", body, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "errors": {}}
    assert db_state() == before


def test_an_inactive_user_token_is_refused(labeler, comparisons):
    client = token_client(labeler)
    labeler.is_active = False
    labeler.save()
    assert client.get("/api/v1/projects/").status_code == 401


def test_a_deleted_token_is_revoked(labeler, alice):
    assert alice.get("/api/v1/projects/").status_code == 200
    labeler.api_tokens.all().delete()
    assert alice.get("/api/v1/projects/").status_code == 401


def test_tokens_are_stored_hashed_and_last_use_is_recorded(labeler):
    key = api_token_issue(labeler)
    token = ApiToken.objects.get(user=labeler, digest=hashlib.sha256(key.encode()).hexdigest())
    assert token.prefix == key[:8] and token.last_used is None
    stored = [v for v in ApiToken.objects.filter(pk=token.pk).values_list()[0] if v is not None]
    assert not any(key in str(v) for v in stored)  # the key itself is nowhere in the row
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/projects/").status_code == 200
    token.refresh_from_db()
    assert token.last_used is not None
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.digest}")  # the digest is no key
    assert client.get("/api/v1/projects/").status_code == 401


# ---------------------------------------------------------------------------------------
# Session auth and CSRF
# ---------------------------------------------------------------------------------------


def test_session_writes_need_a_csrf_token(labeler, comparisons):
    labeler.set_password("pw-123456789")
    labeler.save()
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-123456789")
    assert client.get("/api/v1/projects/").status_code == 200  # safe methods need none

    refused = client.post("/api/v1/projects/demo/assignments/next/")
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("CSRF Failed")
    assert Assignment.objects.count() == 0

    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    accepted = client.post("/api/v1/projects/demo/assignments/next/", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 200
    assert Assignment.objects.count() == 1


def test_token_requests_need_no_csrf_token(alice, comparisons):
    alice.handler.enforce_csrf_checks = True
    assert alice.post("/api/v1/projects/demo/assignments/next/").status_code == 200


# ---------------------------------------------------------------------------------------
# POST /api/v1/auth/token/
# ---------------------------------------------------------------------------------------

TOKEN = "/api/v1/auth/token/"


@pytest.fixture
def bob_token(db):
    _user, token = labeler_create(username="bob", password="bob-pass-123")
    return token


def test_token_endpoint_issues_a_new_token_each_time(anon, bob_token):
    # Changed by issue 14: keys are stored hashed, so the endpoint cannot hand back the one
    # create_labeler printed; it issues a new one per call, and earlier ones stay valid.
    response = anon.post(TOKEN, {"username": "bob", "password": "bob-pass-123"}, format="json")
    assert response.status_code == 200
    first = response.json()["token"]
    form = anon.post(TOKEN, {"username": "bob", "password": "bob-pass-123"})  # form-encoded
    second = form.json()["token"]
    assert len({bob_token, first, second}) == 3
    assert ApiToken.objects.filter(user__username="bob").count() == 3
    for key in (bob_token, first, second):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/v1/projects/").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "bob", "password": "wrong"}, "non_field_errors"),
        ({"username": "nobody", "password": "bob-pass-123"}, "non_field_errors"),
        ({"username": "bob"}, "password"),
        ({"password": "bob-pass-123"}, "username"),
    ],
)
def test_token_endpoint_refuses_bad_credentials(anon, bob_token, body, field):
    response = anon.post(TOKEN, body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert "token" not in response.json()


def test_token_endpoint_is_throttled(anon, bob_token, monkeypatch):
    cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    codes = [
        anon.post(TOKEN, {"username": "bob", "password": "wrong"}, format="json").status_code
        for _ in range(3)
    ]
    # Even the right password is refused once the client is over the rate.
    blocked = anon.post(TOKEN, {"username": "bob", "password": "bob-pass-123"}, format="json")
    cache.clear()

    assert codes == [400, 400, 400]
    assert blocked.status_code == 429
    assert blocked.json()["detail"].startswith("Request was throttled.")
    assert int(blocked["Retry-After"]) > 0


# ---------------------------------------------------------------------------------------
# Hostile or broken request bodies: 400/413/415, never 500, nothing stored
# ---------------------------------------------------------------------------------------

PROMPTS = "/api/v1/projects/demo/prompts/"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"prompts": [', "JSON parse error"),
        (b'{"prompts": [{"text": "a\\u0000b"}]}', "NUL"),
        (b'{"prompts": [{"text": "\\ud800"}]}', "lone surrogates"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (
            b'{"prompts": [{"text": "x", "metadata": ' + b'{"a":' * 40 + b"1" + b"}" * 41 + b"]}",
            "nested deeper",
        ),
        (b"\xff\xfe not utf-8", "JSON parse error"),
        (b'{"prompts": [{"text": NaN}]}', "JSON parse error"),
    ],
)
def test_unparseable_bodies_are_400(staff, project, raw, message):
    response = staff.generic("POST", PROMPTS, raw, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}
    assert message in response.json()["detail"]
    assert Prompt.objects.count() == 0


def test_a_5000_digit_number_is_a_plain_parse_error():
    import io

    from rest_framework.exceptions import ParseError

    from annotation.api.parsers import StrictJSONParser

    with pytest.raises(ParseError) as caught:
        StrictJSONParser().parse(io.BytesIO(b'{"a": ' + b"9" * 5000 + b"}"))
    assert str(caught.value.detail) == (
        "JSON parse error - invalid JSON (a number of 5000 digits is too long)"
    )


def test_an_oversized_body_is_413(staff, project, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 500
    settings.IMPORT_MAX_BYTES = 1000
    body = json.dumps({"prompts": [{"text": "x" * 2000}]})
    response = staff.generic("POST", PROMPTS, body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 1000 bytes.", "errors": {}}
    assert Prompt.objects.count() == 0


def test_other_media_types_are_415(staff, project):
    response = staff.generic("POST", PROMPTS, "prompts=x", content_type="text/plain")
    assert response.status_code == 415
    assert set(response.json()) == {"detail", "errors"}
