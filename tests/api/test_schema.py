"""The OpenAPI schema validates, lists every endpoint with its shapes, and the docs page."""

from __future__ import annotations

import json

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from annotation.api import urls as api_urls

pytestmark = pytest.mark.django_db

SPEC_OPERATIONS = {
    ("get", "/api/v1/projects/"),
    ("post", "/api/v1/projects/{slug}/assignments/next/"),
    ("post", "/api/v1/assignments/{assignment_id}/submit/"),
    ("post", "/api/v1/assignments/{assignment_id}/skip/"),
    ("post", "/api/v1/assignments/{assignment_id}/renew/"),
    ("post", "/api/v1/projects/{slug}/prompts/"),
    ("post", "/api/v1/projects/{slug}/candidates/"),
    ("post", "/api/v1/projects/{slug}/comparisons/build/"),
    ("post", "/api/v1/projects/{slug}/exports/"),
    ("get", "/api/v1/exports/{export_id}/download/"),
    ("get", "/api/v1/projects/{slug}/stats/"),
    ("post", "/api/v1/auth/token/"),
    # SPEC section 11: review
    ("post", "/api/v1/comparisons/{comparison_id}/gold/"),
    ("delete", "/api/v1/comparisons/{comparison_id}/gold/"),
    ("post", "/api/v1/annotations/{annotation_id}/reject/"),
    ("post", "/api/v1/annotations/{annotation_id}/restore/"),
    # SPEC section 11: model leaderboard
    ("get", "/api/v1/projects/{slug}/models/"),
}
STAFF_PATHS = {
    "/api/v1/projects/{slug}/prompts/",
    "/api/v1/projects/{slug}/candidates/",
    "/api/v1/projects/{slug}/comparisons/build/",
    "/api/v1/projects/{slug}/exports/",
    "/api/v1/exports/{export_id}/download/",
    "/api/v1/projects/{slug}/stats/",
    "/api/v1/projects/{slug}/models/",
    "/api/v1/comparisons/{comparison_id}/gold/",
    "/api/v1/annotations/{annotation_id}/reject/",
    "/api/v1/annotations/{annotation_id}/restore/",
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict) -> dict[tuple[str, str], dict]:
    return {
        (method, path): op
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def resolve(schema: dict, node: dict) -> dict:
    if len(node.get("allOf", [])) == 1:  # how drf-spectacular wraps a $ref with readOnly
        node = node["allOf"][0]
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def body_schema(schema: dict, op: dict, code: str | None = None) -> dict:
    holder = op["requestBody"] if code is None else op["responses"][code]
    return resolve(schema, holder["content"]["application/json"]["schema"])


def test_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # jsonschema against the official OpenAPI 3.0 schema


def test_schema_lists_exactly_the_spec_endpoints(schema):
    assert set(operations(schema)) == SPEC_OPERATIONS


def test_every_v1_route_is_in_the_schema(schema):
    routes = {
        "/api/"
        + str(p.pattern)
        .replace("<slug:", "{")
        .replace("<int:", "{")
        .replace("<id:", "{")
        .replace(">", "}")
        for p in api_urls.urlpatterns
        if str(p.pattern).startswith("v1/")
    }
    assert routes == set(schema["paths"])


def test_error_responses_are_declared(schema):
    for (method, path), op in operations(schema).items():
        codes = set(op["responses"])
        if path == "/api/v1/auth/token/":
            assert {"200", "400", "429"} <= codes
            assert op.get("security", []) in ([], [{}])  # no credentials needed
            continue
        assert "401" in codes, (method, path)
        if path in STAFF_PATHS:
            assert "403" in codes, (method, path)


def test_labeler_shapes_match_the_spec(schema):
    ops = operations(schema)
    nxt = ops[("post", "/api/v1/projects/{slug}/assignments/next/")]
    assert set(nxt["responses"]) >= {"200", "204", "404"}
    assignment = resolve(schema, body_schema(schema, nxt, "200")["properties"]["assignment"])
    assert set(assignment["properties"]) == {
        "id",
        "expires_at",
        "task_type",
        "allow_edit",
        "comparison",
    }
    comparison = resolve(schema, assignment["properties"]["comparison"])
    assert set(comparison["properties"]) == {"id", "prompt", "candidates"}
    prompt = resolve(schema, comparison["properties"]["prompt"])
    assert set(prompt["properties"]) == {"id", "messages", "is_chat"}
    assert prompt["properties"]["is_chat"]["type"] == "boolean"
    candidate = resolve(schema, comparison["properties"]["candidates"]["items"])
    assert set(candidate["properties"]) == {"id", "text"}

    submit = ops[("post", "/api/v1/assignments/{assignment_id}/submit/")]
    request = body_schema(schema, submit)
    assert set(request["properties"]) == {
        "ranking",
        "flags",
        "ratings",
        "all_bad",
        "rationale",
        "time_spent_ms",
        "client_token",
        "demonstration",
        "edited_text",
    }
    # ranking is required by the service on ranking projects only (demonstrations send none).
    assert set(request["required"]) == {"client_token"}
    assert request["properties"]["ranking"]["items"]["items"]["type"] == "integer"
    assert request["properties"]["client_token"]["format"] == "uuid"
    assert set(submit["responses"]) >= {"200", "201", "400", "404", "409"}
    assert set(body_schema(schema, submit, "201")["properties"]) == {"annotation_id"}


def test_staff_shapes_match_the_spec(schema):
    ops = operations(schema)
    prompts = body_schema(schema, ops[("post", "/api/v1/projects/{slug}/prompts/")])
    item = resolve(schema, prompts["properties"]["prompts"]["items"])
    assert set(item["properties"]) == {"external_id", "text", "messages", "metadata"}
    candidates = body_schema(schema, ops[("post", "/api/v1/projects/{slug}/candidates/")])
    item = resolve(schema, candidates["properties"]["candidates"]["items"])
    assert {"prompt_external_id", "prompt_id", "text", "model"} <= set(item["properties"])
    export = ops[("post", "/api/v1/projects/{slug}/exports/")]
    assert set(body_schema(schema, export)["properties"]) >= {
        "format",
        "pairing",
        "aggregate",
        "min_agreement",
        "include_flagged",
        "include_gold",
    }
    assert set(body_schema(schema, export, "201")["properties"]) == {
        "id",
        "rows",
        "sha256",
        "download_url",
    }


def test_served_schema_needs_login_and_validates(anon, alice):
    assert anon.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 401
    response = alice.get("/api/schema/?format=json")
    assert response.status_code == 200
    served = json.loads(response.content)
    validate_schema(served)
    assert set(operations(served)) == SPEC_OPERATIONS
    yaml = alice.get("/api/schema/")
    assert yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    assert b"/api/v1/assignments/{assignment_id}/submit/" in yaml.content


def test_docs_page_is_for_staff_only(client, labeler, staff_user):
    assert client.get("/api/docs/").status_code == 302
    client.force_login(labeler)
    assert client.get("/api/docs/").status_code == 302  # to the admin login
    client.force_login(staff_user)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    for _method, path in SPEC_OPERATIONS:
        assert f"<code>{path}</code>" in html
    assert "<script" not in html  # works offline: no CDN, no JavaScript
    assert "client_token" in html
