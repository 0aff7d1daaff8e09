"""Where focus goes and what is announced on the labeling pages, for keyboard and screen-reader
users (WCAG 2.2: focus order and visibility, status messages, timing)."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotation.models import Assignment, TaskType
from annotation.services.comparisons import comparisons_build
from annotation.services.imports import prompt_record, prompts_import

from .conftest import PASSWORD, wait_for_scripts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACTIVE = "() => document.activeElement ? document.activeElement.tagName : null"
# Every text a live region or alert is given, in order (the page clears a region first).
LIVE_LOG = """() => {
  window.__live = [];
  const watch = new MutationObserver(records => records.forEach(r => {
    const node = r.target.nodeType === 3 ? r.target.parentElement : r.target;
    const region = node && node.closest && node.closest('[aria-live], [role=alert]');
    const text = region && region.textContent.trim();
    if (text && window.__live[window.__live.length - 1] !== text) window.__live.push(text);
  }));
  watch.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def leased(username: str) -> Assignment:
    return Assignment.objects.get(labeler__username=username, status=Assignment.Status.LEASED)


def card(page: Page, cid: int):
    return page.locator(f'.card[data-candidate="{cid}"]')


@pytest.fixture
def open_label_page(page, live_server, login, make_project, make_labeler, make_comparisons):
    """Sign in a labeler "fay" on a fresh project and open its labeling page."""

    def open_page(slug="focus", n=1, texts=None, **project_options):
        project = make_project(slug, **project_options)
        make_labeler("fay", projects=[project], password=PASSWORD)
        make_comparisons(project, n=n, texts=texts)
        login(page, "fay")
        page.goto(f"{live_server.url}/projects/{slug}/label/")
        wait_for_scripts(page)
        return project

    return open_page


def answer_submits_with(page: Page, status: int, detail: str) -> None:
    """Every submit from now on gets this answer instead of the server's."""
    body = json.dumps({"detail": detail})
    page.route(
        "**/submit/",
        lambda route: route.fulfill(status=status, content_type="application/json", body=body),
    )


def test_rank_next_and_undo_keep_focus_when_they_turn_off(page: Page, open_label_page):
    open_label_page(num_candidates=3)
    x, y, z = leased("fay").display_order
    card(page, y).locator('[data-action="rank-next"]').focus()
    page.keyboard.press("Enter")
    # The pressed button is off now; focus went on to the next unranked response's.
    expect(card(page, y).locator('[data-action="rank-next"]')).to_be_disabled()
    expect(card(page, z).locator('[data-action="rank-next"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(card(page, x).locator('[data-action="rank-next"]')).to_be_focused()  # wraps round
    page.keyboard.press("Enter")
    expect(page.locator("#submit-button")).to_be_focused()  # all ranked: Submit is next
    # Undo keeps focus through its last step, then says there is nothing left to undo.
    undo = page.locator("#undo-button")
    undo.focus()
    for _ in range(3):
        page.keyboard.press("Enter")
    expect(undo).to_have_attribute("aria-disabled", "true")
    expect(undo).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_have_text("Nothing to undo.")


def test_a_refused_or_failed_submit_gives_focus_back(page: Page, open_label_page):
    open_label_page(num_candidates=2)
    answer_submits_with(page, 400, "Refused for a test.")
    page.keyboard.press("1")
    page.keyboard.press("2")
    submit = page.locator("#submit-button")
    submit.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#alert")).to_contain_text("Refused for a test.")
    expect(submit).to_be_focused()
    page.unroute("**/submit/")
    page.route("**/submit/", lambda route: route.abort())
    page.keyboard.press("Enter")
    expect(page.locator("#alert")).to_contain_text("Network error")
    expect(submit).to_be_focused()


def test_a_refused_late_answer_puts_focus_on_next_comparison(page: Page, open_label_page):
    open_label_page(num_candidates=2)
    answer_submits_with(page, 409, "Slot taken.")
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("button", name="Next comparison")).to_be_focused()


def test_pairwise_choice_is_announced_once(page: Page, open_label_page):
    open_label_page(
        num_candidates=2,
        task_type=TaskType.PAIRWISE,
    )
    page.evaluate(LIVE_LOG)
    page.keyboard.press("a")
    expect(page.locator("#pair-selection")).to_contain_text("A is better")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__live") == [
        "Your choice: A is better. Press Enter or Submit to send it."
    ]


def test_focused_and_selected_pairwise_choices_look_different(page: Page, open_label_page):
    open_label_page(
        num_candidates=2,
        task_type=TaskType.PAIRWISE,
    )
    page.keyboard.press("a")
    a = page.locator('[data-choice="a"]')  # the buttons: A, Tie, B, Both bad
    tie = page.locator('[data-choice="tie"]')
    style = "b => { const s = getComputedStyle(b); return [s.outlineStyle, s.boxShadow]; }"
    selected = a.evaluate(style)
    page.locator('[data-choice="b"]').focus()
    page.keyboard.press("Shift+Tab")  # keyboard focus (:focus-visible) on Tie, not selected
    expect(tie).to_be_focused()
    focused = tie.evaluate(style)
    assert selected != focused
    page.keyboard.press("Shift+Tab")  # onto A: selected and focused
    expect(a).to_be_focused()
    both = a.evaluate(style)
    assert both[0] == "solid" and both != selected  # focus shows on the selected one too


def test_the_sticky_board_never_covers_the_focused_control(page: Page, open_label_page):
    long_text = "\n\n".join(f"Paragraph {i}, long enough to fill a line or two." for i in range(30))
    open_label_page(
        num_candidates=3,
        flags=["harmful", "off_topic"],
        texts=[long_text, long_text, long_text],
    )
    page.set_viewport_size({"width": 1280, "height": 720})
    page.locator("#rationale").focus()
    covered = []
    for _ in range(30):
        page.keyboard.press("Shift+Tab")
        hidden = page.evaluate(
            """() => {
              const r = document.activeElement.getBoundingClientRect();
              const b = document.getElementById('rank-board').getBoundingClientRect();
              return r.height > 0 && r.top >= b.top && r.bottom <= b.bottom
                && r.left < b.right && r.right > b.left
                ? document.activeElement.outerHTML.slice(0, 80) : null;
            }"""
        )
        if hidden:
            covered.append(hidden)
        if page.evaluate("document.activeElement.id") == "task-heading":
            break
    assert covered == []


def test_undo_last_stays_while_it_has_focus(page: Page, open_label_page):
    open_label_page(
        num_candidates=2,
        n=2,
    )
    page.clock.install()
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    button = page.get_by_role("button", name="Undo last")
    expect(button).to_be_visible()
    button.focus()
    page.clock.run_for(12_000)
    expect(button).to_be_visible()
    expect(button).to_be_focused()
    page.locator("#task-heading").focus()
    page.clock.run_for(2_000)
    expect(button).to_be_hidden()


def test_the_ranking_page_warns_a_minute_before_the_lease_runs_out(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("warned", num_candidates=2, lease_seconds=180)
    make_labeler("fay", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "fay")
    page.clock.install()
    page.goto(f"{live_server.url}/projects/warned/label/")
    wait_for_scripts(page)
    page.evaluate(LIVE_LOG)
    page.clock.run_for(115_000)  # 65 s left: not yet
    assert not any("minute" in text for text in page.evaluate("window.__live"))
    page.clock.run_for(10_000)  # 55 s left
    expect(page.locator("#announcer")).to_have_text(re.compile("About one minute left"))
    page.clock.run_for(5_000)
    assert sum("minute" in text for text in page.evaluate("window.__live")) == 1  # said once


def test_the_writing_page_warns_and_says_when_the_lease_ran_out(
    page: Page, live_server, login, make_project, make_labeler
):
    project = make_project("warnwrite", task_type=TaskType.DEMONSTRATION, lease_seconds=120)
    prompts_import(project=project, records=[prompt_record({"text": "Say hello."}, line=1)])
    comparisons_build(project=project)
    make_labeler("wes", projects=[project], password=PASSWORD)
    login(page, "wes")
    page.clock.install()
    page.goto(live_server.url + reverse("label", kwargs={"slug": "warnwrite"}))
    announcer = page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    page.clock.run_for(65_000)
    expect(announcer).to_have_text(re.compile("About one minute left"))
    page.clock.run_for(60_000)
    expect(announcer).to_have_text(re.compile("Your lease ran out"))


def test_tabbing_into_a_folded_answer_unfolds_it(page: Page, open_label_page):
    long_text = "\n\n".join(
        f"Paragraph {i} with a [link {i}](https://example.com/{i}) inside." for i in range(40)
    )
    open_label_page(
        num_candidates=2,
        texts=[long_text, "Short."],
    )
    long_card = page.locator(".card").filter(has_text="Paragraph 0")  # shown in either place
    block = long_card.locator("[data-text-block]")
    expect(block).to_have_class(re.compile("is-foldable"))
    expect(block).not_to_have_class(re.compile("is-open"))
    long_card.get_by_role("link", name="link 0", exact=True).focus()
    expect(block).to_have_class(re.compile("is-open"))
    expect(long_card.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true"
    )


def test_an_incomplete_ranking_marks_the_fields_left_empty(page: Page, open_label_page):
    open_label_page(num_candidates=3)
    x, y, z = leased("fay").display_order
    page.keyboard.press("2")  # y ranked, x and z not
    page.keyboard.press("Control+Enter")
    expect(page.locator("#alert")).to_contain_text("Rank every response")
    for cid, invalid in ((x, True), (y, False), (z, True)):
        select = card(page, cid).locator('select[data-field="rank"]')
        if invalid:
            expect(select).to_have_attribute("aria-invalid", "true")
            expect(select).to_have_attribute("aria-describedby", "alert")
        else:
            expect(select).not_to_have_attribute("aria-invalid", "true")
    page.keyboard.press("1")  # x ranked now: no longer marked
    expect(card(page, x).locator('select[data-field="rank"]')).not_to_have_attribute(
        "aria-invalid", "true"
    )
