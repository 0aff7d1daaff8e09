"""A request that meets SQLite's write lock (a long import holds it) is a 503 with
Retry-After that changed nothing, not a 500."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import OperationalError, connection

from annotation.models import Assignment

NEXT = "/api/v1/projects/demo/assignments/next/"


def test_the_api_answers_a_locked_database_with_503_and_retry_after(
    alice, comparisons, monkeypatch
):
    from annotation.api import views

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(views, "assignment_next", locked)
    response = alice.post(NEXT, {}, format="json")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The database is busy with another write (an import, say); nothing was "
        "changed. Try again in 5 seconds.",
        "errors": {},
    }


def test_other_database_errors_stay_errors(alice, comparisons, monkeypatch):
    from annotation.api import views

    def broken(**kwargs):
        raise OperationalError("no such table: annotation_assignment")

    monkeypatch.setattr(views, "assignment_next", broken)
    with pytest.raises(OperationalError, match="no such table"):
        alice.post(NEXT, {}, format="json")


def test_the_labeling_page_answers_a_locked_database_with_503(
    client, labeler, comparisons, monkeypatch
):
    from annotation import views

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(views, "assignment_next", locked)
    client.force_login(labeler)
    response = client.get("/projects/demo/label/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "nothing was changed" in response.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite's write lock; PostgreSQL locks rows"
)
def test_a_writer_holding_sqlite_busy_gives_503_then_the_retry_works(alice, comparisons, settings):
    # Another process holds the write lock, as `import_prompts` of a big file does.
    connection.close()
    options = connection.settings_dict["OPTIONS"]
    saved = options.get("timeout")
    options["timeout"] = 0.2
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        response = alice.post(NEXT, {}, format="json")
        assert response.status_code == 503 and response["Retry-After"] == "5"
        other.execute("ROLLBACK")
        assert not Assignment.objects.exists()  # the refused request changed nothing
        assert alice.post(NEXT, {}, format="json").status_code == 200
    finally:
        other.close()
        connection.close()
        options["timeout"] = saved
