"""The labeling page's first-visit walkthrough and the rating-scale anchors, in Chromium
(desktop and a 390 px touch phone)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import PASSWORD, wait_for_scripts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEVICES = {
    "desktop": {"viewport": {"width": 1366, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}


@pytest.mark.parametrize("device", list(DEVICES))
def test_walkthrough_on_first_visit_dismissed_remembered_and_reopened(
    device, browser, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project(
        "tour",
        name="Tour",
        num_candidates=3,
        overlap=1,
        rating_scale=3,
        rating_labels=["Bad", "OK", "<b>Great</b>"],
    )
    make_labeler("tina", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    context = browser.new_first_visit_context(**DEVICES[device])
    page = context.new_page()
    login(page, "tina")
    page.goto(f"{live_server.url}/projects/tour/label/")

    tour = page.get_by_role("dialog", name="How this page works")
    expect(tour).to_be_visible()
    expect(tour).to_contain_text("Rank")
    expect(tour).to_contain_text("Bad, OK, <b>Great</b>")  # project text, escaped
    page.get_by_role("button", name="Got it").click()
    expect(tour).to_be_hidden()

    page.reload()
    wait_for_scripts(page)
    expect(tour).to_be_hidden()  # remembered
    page.get_by_role("button", name="How this page works").click()
    expect(tour).to_be_visible()
    page.keyboard.press("Escape")
    expect(tour).to_be_hidden()

    # The rating anchors label each point of the scale.
    first_select = page.locator('select[data-field="rating"]').first
    assert first_select.locator("option").all_inner_texts() == [
        "–",
        "1 · Bad",
        "2 · OK",
        "3 · <b>Great</b>",
    ]
    context.close()


def test_keys_do_nothing_behind_the_open_walkthrough(
    browser, live_server, login, make_project, make_labeler, make_comparisons
):
    from annotation.models import Assignment

    project = make_project("tourkeys", num_candidates=3, overlap=1)
    make_labeler("tom", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    context = browser.new_first_visit_context(**DEVICES["desktop"])
    page = context.new_page()
    login(page, "tom")
    page.goto(f"{live_server.url}/projects/tourkeys/label/")
    wait_for_scripts(page)
    expect(page.get_by_role("dialog", name="How this page works")).to_be_visible()
    for key in ("2", "1"):
        page.keyboard.press(key)
    assignment = Assignment.objects.get(labeler__username="tom")
    first = page.locator(f'.card[data-candidate="{assignment.display_order[1]}"]')
    expect(first.locator('[data-slot="badge"]')).to_be_hidden()  # nothing ranked behind it
    page.get_by_role("button", name="Got it").click()
    page.keyboard.press("2")
    expect(first.locator('[data-slot="badge"]')).to_have_text("1st")
    context.close()
