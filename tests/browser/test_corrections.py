"""No lost work in a real Chromium: Undo last, History Edit, a refused late answer kept on
screen, ranks drawn from the comparison, scrolling as activity, right-to-left text."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from annotation.models import Annotation, Assignment, Project, Prompt, TaskType
from annotation.services.labeling import assignment_next

from .conftest import PASSWORD
from .test_labeling import card, leased, wait_for_next

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARABIC = "هذه إجابة جيدة ومفيدة"
HEBREW = "זו תשובה טובה ומועילה"


def test_undo_last_reopens_the_answer_and_stores_a_correction(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("undo", num_candidates=3, overlap=1)
    make_labeler("uma", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "uma")
    page.goto(f"{live_server.url}/projects/undo/label/")
    first = leased("uma")
    x, y, z = first.display_order
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.get_by_label("Rationale").fill("first thoughts")
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    undo = page.get_by_role("button", name="Undo last")
    expect(undo).to_be_visible()
    undo.click()
    # The stored answer, prefilled: ranks, rationale.
    expect(page.get_by_text("Correcting your answer")).to_be_visible()
    expect(card(page, x).locator('[data-slot="badge"]')).to_have_text("1st")
    expect(card(page, z).locator('[data-slot="badge"]')).to_have_text("3rd")
    expect(page.get_by_label("Rationale")).to_have_value("first thoughts")
    page.get_by_role("button", name="Clear ranks").click()
    for key in ("3", "2", "1"):
        page.keyboard.press(key)
    page.get_by_label("Rationale").fill("second thoughts")
    page.get_by_role("button", name="Submit correction").click()
    # Back on the labeling page, the next comparison (the same lease) waiting.
    page.wait_for_url(re.compile(r"/projects/undo/label/$"))
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()
    original = Annotation.objects.get(assignment=first, supersedes__isnull=True)
    correction = Annotation.objects.get(supersedes=original)
    assert correction.ranking == [[z], [y], [x]] and correction.rationale == "second thoughts"
    first.comparison.refresh_from_db()
    assert first.comparison.submitted_count == 1
    assert Assignment.objects.filter(labeler__username="uma").count() == 2
    expect(page.get_by_role("button", name="Undo last")).to_be_hidden()


def test_an_all_bad_answer_without_ranks_can_be_corrected_where_ties_are_off(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # "All bad" with no ranks is stored as one tier holding every response, which the edit
    # page fills in as all "1st". The script refused to send that back ("does not allow
    # ties") though the server accepts it, as it accepted the answer in the first place.
    project = make_project("badfix", num_candidates=3, overlap=1, allow_ties=False)
    make_labeler("bado", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "bado")
    page.goto(f"{live_server.url}/projects/badfix/label/")
    first = leased("bado")
    page.get_by_label("All responses are bad").check()
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    page.get_by_role("button", name="Undo last").click()
    expect(page.get_by_text("Correcting your answer")).to_be_visible()
    expect(page.get_by_label("All responses are bad")).to_be_checked()
    page.get_by_label("Rationale").fill("none of them answers the question")
    page.get_by_role("button", name="Submit correction").click()
    page.wait_for_timeout(300)
    expect(page.get_by_role("alert")).to_be_hidden()
    page.wait_for_url(re.compile(r"/projects/badfix/label/$"))
    original = Annotation.objects.get(assignment=first, supersedes__isnull=True)
    correction = Annotation.objects.get(supersedes=original)
    assert correction.all_bad and correction.ranking == original.ranking
    assert correction.rationale == "none of them answers the question"


def test_history_edit_corrects_a_pairwise_answer(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("hedit", task_type=TaskType.PAIRWISE, overlap=1)
    make_labeler("hal", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "hal")
    page.goto(f"{live_server.url}/projects/hedit/label/")
    first = leased("hal")
    a, b = first.display_order
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    page.goto(f"{live_server.url}/history/")
    page.get_by_role("link", name=re.compile("^Edit this answer")).click()
    expect(page.get_by_role("button", name="A is better")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#pair-selection")).to_have_text(re.compile("A is better"))
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/history/$"))
    expect(page.locator(".history-item")).to_have_count(2)
    expect(page.get_by_text("corrected later")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Edit this answer"))).to_have_count(1)
    latest = Annotation.objects.get(superseded_by__isnull=True)
    assert latest.ranking == [[b], [a]] and latest.supersedes_id is not None


def test_a_refused_correction_leaves_correction_mode_for_the_next_comparison(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # Staff reject the answer while its labeler corrects it: the correction is refused (409).
    # "Next comparison" then leased a new comparison but stayed in correction mode: no lease
    # countdown or renewal for it, and its submit went back to History.
    project = make_project("editlost", num_candidates=3, overlap=1)
    make_labeler("eddy", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "eddy")
    page.goto(f"{live_server.url}/projects/editlost/label/")
    first = leased("eddy")
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    page.get_by_role("button", name="Undo last").click()
    expect(page.get_by_text("Correcting your answer")).to_be_visible()
    Assignment.objects.filter(pk=first.pk).update(status=Assignment.Status.REJECTED)
    page.get_by_role("button", name="Submit correction").click()
    expect(page.get_by_role("alert")).to_contain_text("Staff rejected this answer")
    page.get_by_role("button", name="Next comparison").click()
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()
    second = leased("eddy")
    page.wait_for_timeout(300)
    assert page.locator("#task-form").get_attribute("data-assignment") == str(second.pk)
    expect(page.get_by_text("Correcting your answer")).to_be_hidden()
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^\d+:\d\d$"))
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    assert Annotation.objects.filter(assignment=second).count() == 1


def test_a_refused_late_answer_stays_on_screen(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("lost", num_candidates=3, overlap=1)
    make_labeler("lia", projects=[project], password=PASSWORD)
    bob = make_labeler("lbob", projects=[project])
    make_comparisons(project, n=1)
    login(page, "lia")
    page.goto(f"{live_server.url}/projects/lost/label/")
    mine = leased("lia")
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.get_by_label("Rationale").fill("long careful reasoning")
    # The lease runs out and someone else takes the slot.
    Assignment.objects.filter(pk=mine.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignment_next(project=project, labeler=bob).comparison_id == mine.comparison_id
    page.keyboard.press("Control+Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("taken by others")
    expect(alert).to_contain_text("your answer is still on screen")
    expect(alert).not_to_contain_text("Here is another comparison")
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_hidden()
    expect(page.get_by_label("Rationale")).to_have_value("long careful reasoning")
    x = mine.display_order[0]
    expect(card(page, x).locator('[data-slot="badge"]')).to_have_text("1st")
    assert not Annotation.objects.exists()
    page.get_by_role("button", name="Next comparison").click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()


def test_a_refused_late_answer_keeps_its_alert_when_the_lease_is_refused_too(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # The labeler ranks (the lease is renewed: they are active), steps away, the lease runs
    # out and another labeler takes the slot. Back, they submit: refused, "Next comparison".
    # Their keypress counts as activity, so the next tick asked to renew the lost lease; its
    # refusal replaced the alert, the "Next comparison" button with it.
    project = make_project("lost-renew", num_candidates=3, overlap=1, lease_seconds=30)
    make_labeler("lorna", projects=[project], password=PASSWORD)
    bob = make_labeler("lbert", projects=[project])
    make_comparisons(project, n=1)
    login(page, "lorna")
    page.goto(f"{live_server.url}/projects/lost-renew/label/")
    mine = leased("lorna")
    original = mine.expires_at
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    for _ in range(40):  # the last minute of a lease and an active labeler: renewed
        page.wait_for_timeout(100)
        if leased("lorna").expires_at > original:
            break
    assert leased("lorna").expires_at > original
    page.wait_for_timeout(300)  # the renewal's answer is read
    Assignment.objects.filter(pk=mine.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignment_next(project=project, labeler=bob).comparison_id == mine.comparison_id
    page.keyboard.press("Control+Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("taken by others")
    page.wait_for_timeout(2500)  # ticks pass
    expect(alert).to_contain_text("your answer is still on screen")
    next_button = page.get_by_role("button", name="Next comparison")
    expect(next_button).to_be_visible()
    assert not Annotation.objects.exists()
    next_button.click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()


def test_ranks_come_from_the_comparison_and_scrolling_renews_the_lease(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("kk", num_candidates=3, overlap=1, lease_seconds=30)
    make_labeler("kim", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1, texts=["word " * 2000, "b", "c"])
    # The project says K=4 (a raw update past the lock); the comparison has 3.
    Project.objects.filter(pk=project.pk).update(num_candidates=4)
    login(page, "kim")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/projects/kk/label/")
    expect(page.locator("#rank-board .slot:not(.slot-pool)")).to_have_count(3)
    original = leased("kim").expires_at
    page.wait_for_timeout(1200)
    assert leased("kim").expires_at == original  # idle: not renewed
    long_text = page.locator(".card [data-slot=text]").first
    long_text.hover()
    for _ in range(20):
        page.mouse.wheel(0, 300)  # reading a long answer is activity
        page.wait_for_timeout(250)
        if leased("kim").expires_at > original:
            break
    assert leased("kim").expires_at > original
    assert errors == []


def test_right_to_left_text_lays_out_right_to_left(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("rtl", num_candidates=3, overlap=1)
    make_labeler("rana", projects=[project], password=PASSWORD)
    (comparison,) = make_comparisons(project, n=2, texts=[ARABIC, HEBREW, "Plain English."])[:1]
    Prompt.objects.filter(pk=comparison.prompt_id).update(
        messages=[{"role": "user", "content": HEBREW}]
    )
    login(page, "rana")
    page.goto(f"{live_server.url}/projects/rtl/label/")

    def direction(locator) -> str:
        return locator.evaluate("node => getComputedStyle(node).direction")

    def check() -> None:
        for text in (ARABIC, HEBREW):
            prose = page.locator(".card .md p", has_text=text)
            expect(prose).to_have_attribute("dir", "auto")
            assert direction(prose) == "rtl"
        assert direction(page.locator(".card .md p", has_text="Plain English.")) == "ltr"

    check()  # as rendered by the server
    assert direction(page.locator("#prompt .md p")) == "rtl"
    first = leased("rana")
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.get_by_label("Rationale").fill(ARABIC)
    assert direction(page.get_by_label("Rationale")) == "rtl"
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    check()  # as rendered by the script
    page.goto(f"{live_server.url}/history/")
    assert direction(page.locator(".history-text .md p", has_text=ARABIC)) == "rtl"
    assert direction(page.locator(".history-rationale [dir=auto]")) == "rtl"
