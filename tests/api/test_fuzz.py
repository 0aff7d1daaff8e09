"""Property tests: random submit and import payloads never cause a 500, and a refused request
changes nothing in the database."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation.models import Annotation, Assignment, Candidate, Comparison, Prompt

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def db_state() -> tuple:
    """Everything a refused request must leave untouched."""
    return (
        Prompt.objects.count(),
        Candidate.objects.count(),
        Annotation.objects.count(),
        sorted(Assignment.objects.values_list("id", "status", "expires_at")),
        sorted(Comparison.objects.values_list("id", "submitted_count", "status")),
    )


# ---------------------------------------------------------------------------------------
# submit
# ---------------------------------------------------------------------------------------


@pytest.fixture
def leased(alice, comparisons):
    """alice's assignment and its candidate ids."""
    payload = alice.post("/api/v1/projects/demo/assignments/next/").json()["assignment"]
    return payload["id"], [c["id"] for c in payload["comparison"]["candidates"]]


@st.composite
def submit_payloads(draw, candidate_ids: list[int]):
    """Mostly near-valid submissions (the interesting edge), sometimes arbitrary JSON."""
    ids = st.sampled_from(candidate_ids) | st.integers(min_value=-5, max_value=2**40)
    tier = st.lists(ids, min_size=0, max_size=4) | json_values
    fields = {
        "ranking": st.permutations(candidate_ids).map(lambda p: [[i] for i in p])
        | st.lists(tier, max_size=5)
        | json_values,
        "flags": st.dictionaries(
            st.sampled_from([str(i) for i in candidate_ids]) | st.text(max_size=5),
            st.lists(st.sampled_from(["harmful", "unhelpful", "x"]) | st.text(max_size=5)),
            max_size=3,
        )
        | json_values,
        "ratings": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values,
        "all_bad": st.booleans() | json_values,
        "rationale": st.text(max_size=50) | json_values,
        "time_spent_ms": st.integers(min_value=-10, max_value=2**40) | json_values,
        "client_token": st.uuids().map(str) | json_values,
    }
    keys = draw(st.sets(st.sampled_from(sorted(fields))))
    if draw(st.booleans()):
        return draw(json_values)
    return {key: draw(fields[key]) for key in keys}


@given(data=st.data())
@FUZZ
def test_submit_fuzz_never_500s_and_refusals_change_nothing(alice, leased, data):
    assignment_id, candidate_ids = leased
    payload = data.draw(submit_payloads(candidate_ids))
    before = db_state()

    response = alice.post(f"/api/v1/assignments/{assignment_id}/submit/", payload, format="json")

    assert response.status_code in {200, 201, 400, 409}, (payload, response.content)
    assert set(response.json()) == (
        {"annotation_id"} if response.status_code < 300 else {"detail", "errors"}
    )
    if response.status_code >= 400:
        assert db_state() == before


@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@FUZZ
def test_submit_with_arbitrary_bytes_never_500s(alice, leased, body):
    assignment_id, _ = leased
    before = db_state()
    response = alice.generic(
        "POST",
        f"/api/v1/assignments/{assignment_id}/submit/",
        body,
        content_type="application/json",
    )
    assert response.status_code == 400
    assert db_state() == before


# ---------------------------------------------------------------------------------------
# imports
# ---------------------------------------------------------------------------------------

roles = st.sampled_from(["system", "user", "assistant"]) | st.text(max_size=6)
prompt_items = (
    st.fixed_dictionaries(
        {},
        optional={
            "external_id": st.text(max_size=8) | st.integers() | json_values,
            "text": st.text(max_size=30) | json_values,
            "messages": st.lists(
                st.fixed_dictionaries({"role": roles, "content": st.text(max_size=20)})
                | json_values,
                max_size=4,
            )
            | json_values,
            "metadata": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
        },
    )
    | json_values
)


@given(items=st.lists(prompt_items, max_size=6) | json_values)
@FUZZ
def test_prompt_import_fuzz(staff, project, items):
    before = db_state()

    response = staff.post("/api/v1/projects/demo/prompts/", {"prompts": items}, format="json")

    assert response.status_code in {200, 400}, (items, response.content)
    if response.status_code == 200:
        result = response.json()
        assert result["created"] + result["unchanged"] == len(items)
        assert Prompt.objects.count() == before[0] + result["created"]
    else:
        assert set(response.json()) == {"detail", "errors"}
        assert db_state() == before


candidate_items = (
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_external_id": st.sampled_from(["p0", "p1", "nope"]) | json_values,
            "prompt_id": st.integers(min_value=-1, max_value=2**70) | json_values,
            "text": st.text(max_size=20) | json_values,
            "model": st.text(max_size=8) | json_values,
            "params": json_values,
        },
    )
    | json_values
)


@given(items=st.lists(candidate_items, max_size=6) | json_values)
@FUZZ
def test_candidate_import_fuzz(staff, comparisons, items):
    before = db_state()

    response = staff.post("/api/v1/projects/demo/candidates/", {"candidates": items}, format="json")

    assert response.status_code in {200, 400}, (items, response.content)
    if response.status_code == 200:
        result = response.json()
        assert result["created"] + result["unchanged"] == len(items)
        assert Candidate.objects.count() == before[1] + result["created"]
    else:
        assert db_state() == before
