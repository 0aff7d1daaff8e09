"""End to end over real HTTP: concurrent token clients drain a project through a live server.

Each client is what an external labeling front-end would be: `requests` and a token, nothing
else. They race for the same comparisons; afterwards no comparison holds more annotations
than it wants, no labeler answered a comparison twice, and every annotation a client was
told about is stored exactly once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from annotation.models import Annotation, Comparison
from annotation.services.projects import labeler_create, project_create

LABELERS = 4
PROMPTS = 10
OVERLAP = 2


@pytest.fixture
def drained_project(transactional_db, make_comparisons):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        # Shared-cache in-memory SQLite (pytest-django's default for live_server) answers
        # concurrent writers with SQLITE_LOCKED at once instead of waiting; production SQLite
        # is a file. Set DATABASES["default"]["TEST"]["NAME"] to a file to run this on SQLite.
        pytest.skip("needs PostgreSQL or a file-backed SQLite test database")
    project = project_create(slug="live", num_candidates=3, overlap=OVERLAP)
    make_comparisons(project, PROMPTS)
    tokens = [
        labeler_create(username=f"labeler{i}", projects=[project])[1] for i in range(LABELERS)
    ]
    return project, tokens


def label_until_done(base: str, token: str) -> dict:
    """One labeler's loop: next, submit (and replay every third submit), until 204."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    seen: dict = {"annotations": [], "comparisons": [], "statuses": Counter(), "errors": []}
    for _ in range(PROMPTS + 5):  # bounded: a labeler can never get more than PROMPTS
        response = session.post(f"{base}/api/v1/projects/live/assignments/next/", timeout=60)
        seen["statuses"][response.status_code] += 1
        if response.status_code == 204:
            return seen
        if response.status_code != 200:
            seen["errors"].append(("next", response.status_code, response.text[:2000]))
            return seen
        assignment = response.json()["assignment"]
        seen["comparisons"].append(assignment["comparison"]["id"])
        body = {
            "ranking": [[c["id"]] for c in assignment["comparison"]["candidates"]],
            "client_token": str(uuid.uuid4()),
            "time_spent_ms": 1000,
        }
        url = f"{base}/api/v1/assignments/{assignment['id']}/submit/"
        response = session.post(url, json=body, timeout=60)
        seen["statuses"][response.status_code] += 1
        if response.status_code >= 300:
            seen["errors"].append((url, response.status_code, response.text))
        if response.status_code == 201:
            annotation_id = response.json()["annotation_id"]
            seen["annotations"].append(annotation_id)
            if len(seen["annotations"]) % 3 == 0:  # a client retrying after a lost response
                replay = session.post(url, json=body, timeout=60)
                seen["statuses"][replay.status_code] += 1
                assert replay.json() == {"annotation_id": annotation_id}
    raise AssertionError("the labeler was served more comparisons than exist")


@pytest.mark.slow
def test_concurrent_token_clients_drain_a_project(live_server, drained_project):
    project, tokens = drained_project

    with ThreadPoolExecutor(max_workers=LABELERS) as pool:
        results = list(pool.map(lambda t: label_until_done(live_server.url, t), tokens))

    statuses = sum((r["statuses"] for r in results), Counter())
    errors = [e for r in results for e in r["errors"]]
    assert set(statuses) <= {200, 201, 204}, errors  # no 409 (no lease ran out), no 500
    assert statuses[204] == LABELERS
    returned = [a for r in results for a in r["annotations"]]
    # Every annotation a client was told about is stored, once.
    assert len(returned) == len(set(returned)) == PROMPTS * OVERLAP
    assert sorted(returned) == sorted(Annotation.objects.values_list("id", flat=True))
    # No labeler was served a comparison twice.
    for r in results:
        assert len(r["comparisons"]) == len(set(r["comparisons"]))
    # Zero over-assignment: every comparison holds exactly `required` annotations.
    for comparison in Comparison.objects.filter(project=project):
        stored = Annotation.objects.filter(comparison=comparison)
        assert stored.count() == comparison.submitted_count == comparison.required == OVERLAP
        assert comparison.status == Comparison.Status.COMPLETE
        assert stored.values("labeler").distinct().count() == OVERLAP
