"""The no-JavaScript forms tie their errors to the fields (WCAG 3.3.1, 4.1.2): the inputs an
error is about carry aria-invalid and are described by the alert, and the title says Error."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest
from django.core.cache import cache
from django.urls import reverse

from annotation.models import Assignment, TaskType

pytestmark = pytest.mark.django_db

INVALID = {"aria-invalid": "true", "aria-describedby": "alert"}


class _Page(HTMLParser):
    """Each form control's attributes by name, the ids on the page, and the title."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.controls: dict[str, dict] = {}
        self.ids: dict[str, dict] = {}
        self.title = ""
        self._in_title = False
        self.html = html
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in {"input", "select", "textarea"} and attrs.get("type") != "hidden":
            self.controls[attrs.get("name") or attrs["id"]] = attrs
        if "id" in attrs:
            self.ids[attrs["id"]] = {"tag": tag, **attrs}
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def marked(attrs: dict) -> bool:
    return all(attrs.get(key) == value for key, value in INVALID.items())


def unmarked(attrs: dict) -> bool:
    return "aria-invalid" not in attrs and "aria-describedby" not in attrs


def assert_alert_says(page: _Page, text: str) -> None:
    """The element the fields point at is the shown alert, and it holds `text`."""
    alert = page.ids["alert"]
    assert alert.get("role") == "alert" and "hidden" not in alert
    after = page.html.split('id="alert"', 1)[1]
    assert text in after.split("</div>", 1)[0]


def post_label_form(client, user, project, data) -> _Page:
    client.force_login(user)
    client.get(reverse("label", kwargs={"slug": project.slug}))
    assignment = Assignment.objects.get(labeler=user, status=Assignment.Status.LEASED)
    response = client.post(
        reverse("assignment-submit", args=[assignment.pk]),
        {"client_token": str(uuid.uuid4()), **data(assignment.display_order)},
    )
    assert response.status_code == 400
    return _Page(response.content.decode())


def test_a_missing_rank_marks_the_selects_left_unranked(
    client, make_project, make_labeler, make_comparisons
):
    project = make_project("rank", name="Ranks", num_candidates=3, rating_scale=5)
    user = make_labeler("alice", projects=[project])
    make_comparisons(project, n=1)
    ranked = {}

    def data(order):
        ranked["order"] = order
        return {f"rank_{order[0]}": "1", f"rating_{order[1]}": "4"}

    page = post_label_form(client, user, project, data)
    first, second, third = ranked["order"]
    assert "Rank every response (missing: response 2, response 3)." in page.html
    assert_alert_says(page, "Rank every response")
    assert unmarked(page.controls[f"rank_{first}"])
    assert marked(page.controls[f"rank_{second}"]) and marked(page.controls[f"rank_{third}"])
    for name in ("rationale", f"rating_{second}", f"flag_{first}"):
        assert unmarked(page.controls.get(name, {})), name
    assert page.title.strip() == "Error: Label · Ranks · rlhf-studio"


def test_a_ranking_the_service_refuses_marks_every_rank_select(
    client, make_project, make_labeler, make_comparisons
):
    project = make_project("strict", num_candidates=3, allow_ties=False)
    user = make_labeler("carol", projects=[project])
    make_comparisons(project, n=1)
    page = post_label_form(
        client, user, project, lambda order: {f"rank_{cid}": "1" for cid in order}
    )
    assert "does not allow ties" in page.html
    ranks = [attrs for name, attrs in page.controls.items() if name.startswith("rank_")]
    assert len(ranks) == 3 and all(marked(attrs) for attrs in ranks)
    assert unmarked(page.controls["rationale"])
    assert page.title.startswith("Error: ")


def test_a_blank_demonstration_marks_its_textarea(
    client, make_project, make_labeler, make_comparisons
):
    project = make_project(
        "write", name="Write", task_type=TaskType.DEMONSTRATION, num_candidates=2
    )
    user = make_labeler("dora", projects=[project])
    make_comparisons(project, n=1)
    page = post_label_form(client, user, project, lambda order: {"demonstration": "   "})
    assert "must not be empty" in page.html
    assert_alert_says(page, "must not be empty")
    assert marked(page.controls["demonstration"]) and unmarked(page.controls["rationale"])
    assert page.title.strip() == "Error: Write · Write · rlhf-studio"


def test_a_page_without_errors_marks_nothing(client, make_project, make_labeler, make_comparisons):
    project = make_project("calm", name="Calm", num_candidates=2)
    client.force_login(make_labeler("eve", projects=[project]))
    make_comparisons(project, n=1)
    page = _Page(client.get(reverse("label", kwargs={"slug": project.slug})).content.decode())
    assert page.controls and all(unmarked(attrs) for attrs in page.controls.values())
    assert page.title.strip() == "Label · Calm · rlhf-studio"
    assert "hidden" in page.ids["alert"]


def test_a_failed_sign_in_marks_both_fields(client, make_labeler):
    cache.clear()
    make_labeler("bob", password="right-password-123")
    fresh = _Page(client.get(reverse("login")).content.decode())
    assert unmarked(fresh.controls["username"]) and unmarked(fresh.controls["password"])
    assert fresh.title.strip() == "Sign in · rlhf-studio"
    page = _Page(
        client.post(reverse("login"), {"username": "bob", "password": "wrong"}).content.decode()
    )
    cache.clear()
    assert re.search(r"did not match", page.html)
    assert page.ids["alert"]["role"] == "alert"
    assert marked(page.controls["username"]) and marked(page.controls["password"])
    assert page.title.strip() == "Error: Sign in · rlhf-studio"
