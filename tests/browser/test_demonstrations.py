"""Writing a demonstration and rewriting the best answer, in a real Chromium (issue 20),
at desktop width and at 390 px."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotation.models import Annotation, Assignment, Candidate, TaskType
from annotation.services.comparisons import comparisons_build
from annotation.services.imports import (
    candidate_record,
    candidates_import,
    prompt_record,
    prompts_import,
)

from .conftest import PASSWORD, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [pytest.param(1280, id="desktop"), pytest.param(390, id="390px")]


def fits(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_write_a_demonstration_with_references(
    page: Page, live_server, login, make_project, make_labeler, screenshot_dir, width
):
    project = make_project(
        "write", name="Write", task_type=TaskType.DEMONSTRATION, num_candidates=2
    )
    prompts_import(
        project=project,
        records=[
            prompt_record({"external_id": "a", "text": "Name a primary colour."}, line=1),
            prompt_record({"external_id": "b", "text": "Say hello."}, line=2),
        ],
    )
    candidates_import(
        project=project,
        records=[
            candidate_record(
                {"prompt_external_id": "a", "text": '<img src=x onerror="window.__pwned=1">'},
                line=1,
            ),
            candidate_record({"prompt_external_id": "a", "text": "Blue."}, line=2),
        ],
    )
    comparisons_build(project=project)
    make_labeler("wanda", projects=[project], password=PASSWORD)
    page.set_viewport_size({"width": width, "height": 900})
    login(page, "wanda")
    page.goto(live_server.url + reverse("label", kwargs={"slug": "write"}))

    expect(page.locator(".md").get_by_text("Name a primary colour.")).to_be_visible()
    expect(page.get_by_role("heading", name="Reference 2")).to_be_visible()
    expect(
        page.locator(".md").get_by_text('<img src=x onerror="window.__pwned=1">')
    ).to_be_visible()
    fits(page, width)
    page.screenshot(path=str(screenshot_dir / f"demonstration-{width}.png"), full_page=True)

    # An empty answer is refused (the browser's own check first, then the server's).
    page.get_by_label("Your answer").fill("   ")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("alert")).to_contain_text("must not be empty")
    assert not Annotation.objects.exists()

    page.get_by_label("Your answer").fill("Red.\nA primary colour of light and paint.")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".md").get_by_text("Say hello.")).to_be_visible()  # the next task
    stored = Annotation.objects.get()
    assert stored.demonstration == "Red.\nA primary colour of light and paint."
    assert stored.comparison.prompt.external_id == "a"
    assert page.evaluate("window.__pwned") is None
    expect(page.get_by_role("heading", name="Reference 1")).to_have_count(0)  # none for b
    fits(page, width)

    page.get_by_role("button", name="Skip").click()
    expect(page.get_by_role("heading", name="Nothing left to write")).to_be_visible()


@pytest.mark.parametrize("width", WIDTHS)
def test_rank_then_rewrite_the_best_answer(
    page: Page,
    live_server,
    login,
    make_project,
    make_labeler,
    make_comparisons,
    screenshot_dir,
    width,
):
    project = make_project("edit", name="Edit", num_candidates=2, allow_edit=True)
    make_comparisons(project, n=2)
    make_labeler("eve", projects=[project], password=PASSWORD)
    page.set_viewport_size({"width": width, "height": 900})
    login(page, "eve")
    page.goto(live_server.url + reverse("label", kwargs={"slug": "edit"}))
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()
    first = Assignment.objects.get(labeler__username="eve", status=Assignment.Status.LEASED)
    x, y = first.display_order

    page.keyboard.press("2")  # response 2 first, then response 1
    page.keyboard.press("1")
    best = Candidate.objects.get(pk=y).text
    box = page.get_by_label("Rewrite the best response")
    box.fill(best + " Fixed and improved.")
    fits(page, width)
    page.screenshot(path=str(screenshot_dir / f"edit-best-{width}.png"), full_page=True)
    page.get_by_role("button", name="Submit").first.click()
    wait_until(
        page,
        "id => document.getElementById('task-form').dataset.assignment !== String(id)",
        first.pk,
    )
    stored = Annotation.objects.get(assignment=first)
    assert stored.ranking == [[y], [x]]
    assert stored.edited_text == best + " Fixed and improved."
    expect(box).to_have_value("")  # the next task starts without the previous rewrite

    # Leaving it empty stores no rewrite.
    page.keyboard.press("1")
    page.keyboard.press("2")
    second = Assignment.objects.get(labeler__username="eve", status=Assignment.Status.LEASED)
    page.get_by_role("button", name="Submit").first.click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    assert Annotation.objects.get(assignment=second).edited_text == ""


def test_the_writing_page_counts_the_lease_down_and_keeps_it_while_the_labeler_types(
    page: Page, live_server, login, make_project, make_labeler
):
    from datetime import timedelta

    from django.utils import timezone

    project = make_project("longwrite", task_type=TaskType.DEMONSTRATION, lease_seconds=600)
    prompts_import(
        project=project, records=[prompt_record({"text": "Write a long story."}, line=1)]
    )
    comparisons_build(project=project)
    make_labeler("walt", projects=[project], password=PASSWORD)
    login(page, "walt")
    page.clock.install()
    page.goto(live_server.url + reverse("label", kwargs={"slug": "longwrite"}))
    expect(page.locator("#lease-left")).to_have_text("10:00")
    mine = Assignment.objects.get(labeler__username="walt")
    page.clock.fast_forward("01:00")
    expect(page.locator("#lease-left")).to_have_text("9:00")  # it counts down now
    # Still writing when the lease runs out (on the server too): it is kept.
    Assignment.objects.filter(pk=mine.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    page.locator("#demonstration").fill("Once upon a time")
    page.clock.fast_forward("09:05")
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^(9|10):\d\d$"))
    renewed = Assignment.objects.get(pk=mine.pk)
    assert renewed.status == Assignment.Status.LEASED and renewed.expires_at > timezone.now()


def test_a_refused_renewal_keeps_the_reason_an_answer_was_refused(
    page: Page, live_server, login, make_project, make_labeler
):
    # The refusal used to replace the alert, and with it the server's "must not be empty".
    project = make_project("refusedwrite", task_type=TaskType.DEMONSTRATION, lease_seconds=30)
    prompts_import(project=project, records=[prompt_record({"text": "Say hello."}, line=1)])
    comparisons_build(project=project)
    make_labeler("wren", projects=[project], password=PASSWORD)
    login(page, "wren")
    page.goto(live_server.url + reverse("label", kwargs={"slug": "refusedwrite"}))
    page.get_by_label("Your answer").fill("   ")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("alert")).to_contain_text("must not be empty")
    project.active = False  # an admin pauses the project
    project.save(update_fields=["active"])
    page.get_by_label("Your answer").fill("Hello")  # activity in the lease's last minute
    expect(page.get_by_role("alert")).to_contain_text("Your lease could not be renewed")
    expect(page.get_by_role("alert")).to_contain_text("must not be empty")
