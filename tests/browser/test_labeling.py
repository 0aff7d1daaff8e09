"""A labeler in a real Chromium: sign in, rank by keyboard and by mouse, tie, flag, submit,
skip, run out of work; pairwise; hostile model output; the page without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Annotation, Assignment, TaskType

from .conftest import PASSWORD, wait_for_scripts, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

XSS_TEXTS = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned = 'img'\">",
    "fine answer\n    indented line",
]


def leased(username: str) -> Assignment:
    return Assignment.objects.get(labeler__username=username, status=Assignment.Status.LEASED)


def card(page: Page, cid: int):
    return page.locator(f'.card[data-candidate="{cid}"]')


def wait_for_next(page: Page, previous_id: int) -> None:
    """Wait until the page shows another assignment (or the 'nothing left' panel)."""
    wait_until(
        page,
        "id => document.getElementById('task').hidden"
        " || document.getElementById('task-form').dataset.assignment !== String(id)",
        previous_id,
    )


def test_rank_by_keyboard_and_drag_tie_flag_submit_skip_until_nothing_left(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons, screenshot_dir
):
    project = make_project(
        "rank",
        name="Rank three",
        num_candidates=3,
        overlap=1,
        guidelines="# Guidelines\n\nPrefer **correct** answers.",
    )
    make_labeler("alice", projects=[project], password=PASSWORD)
    make_comparisons(project, n=3)
    login(page, "alice")
    page.get_by_role("link", name="Start labeling Rank three").click()
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()
    # Keys work once the deferred scripts ran (it marks <html class="js"> last).
    wait_for_scripts(page)
    # A marker that a full reload would wipe: the flow below must keep it.
    page.evaluate("window.__sameDocument = true")

    # Task 1, keyboard only: 2, 3, 1 then undo, then "=" 1 ties response 1 with response 3.
    first = leased("alice")
    x, y, z = first.display_order
    for key in ("2", "3", "1"):
        page.keyboard.press(key)
    expect(card(page, y).locator('[data-slot="badge"]')).to_have_text("1st")
    expect(card(page, x).locator('[data-slot="badge"]')).to_have_text("3rd")
    page.keyboard.press("u")
    expect(card(page, x).locator('[data-slot="badge"]')).to_be_hidden()
    page.keyboard.press("=")
    page.keyboard.press("1")
    expect(card(page, x).locator('[data-slot="badge"]')).to_have_text("2nd")
    expect(card(page, x).get_by_label("Rank of response 1")).to_have_value("2")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(screenshot_dir / "labeling-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 360, "height": 740})
    page.screenshot(path=str(screenshot_dir / "labeling-360.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.set_viewport_size({"width": 1280, "height": 900})
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    annotation = Annotation.objects.get(assignment=first)
    assert annotation.ranking[0] == [y]
    assert sorted(annotation.ranking[1]) == sorted([x, z]) and len(annotation.ranking) == 2
    expect(page.locator("#today-count")).to_have_text("1")

    # Task 2, mouse only: drag handles onto the ranks, tie two, flag one, click Submit.
    second = leased("alice")
    a, b, c = second.display_order
    board = page.locator("#rank-board")
    card(page, c).locator(".drag-handle").drag_to(board.locator('.slot[data-rank="1"]'))
    card(page, a).locator(".drag-handle").drag_to(board.locator('.slot[data-rank="2"]'))
    card(page, b).locator(".drag-handle").drag_to(board.locator('.slot[data-rank="2"]'))
    expect(card(page, b).locator('[data-slot="badge"]')).to_have_text("2nd")
    # A chip dragged back to "Unranked" and onto a rank again.
    board.locator(f'.chip[data-candidate="{a}"]').drag_to(board.locator('.slot[data-rank=""]'))
    expect(card(page, a).locator('[data-slot="badge"]')).to_be_hidden()
    board.locator(f'.chip[data-candidate="{a}"]').drag_to(board.locator('.slot[data-rank="2"]'))
    card(page, a).get_by_label("harmful").check()
    page.get_by_label("Rationale").fill("C is <b>correct</b>")
    page.get_by_role("button", name="Submit").click()
    wait_for_next(page, second.pk)
    annotation = Annotation.objects.get(assignment=second)
    assert annotation.ranking[0] == [c] and sorted(annotation.ranking[1]) == sorted([a, b])
    assert annotation.flags == {str(a): ["harmful"]}
    assert annotation.rationale == "C is <b>correct</b>"
    assert annotation.time_spent_ms > 0

    # Task 3: Skip, and nothing is left.
    third = leased("alice")
    expect(page.locator("#rationale")).to_have_value("")
    page.get_by_role("button", name="Skip").click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    third.refresh_from_db()
    assert third.status == Assignment.Status.SKIPPED
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("#today-count")).to_have_text("2")

    # The history page lists both answers.
    page.get_by_role("link", name="History", exact=True).click()
    expect(page.locator(".history-item")).to_have_count(2)
    page.screenshot(path=str(screenshot_dir / "history.png"), full_page=True)
    page.get_by_role("link", name="Projects").click()
    page.screenshot(path=str(screenshot_dir / "home.png"), full_page=True)


def test_submit_refuses_an_incomplete_ranking(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("partial", num_candidates=3, overlap=1)
    make_labeler("bea", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "bea")
    page.goto(f"{live_server.url}/projects/partial/label/")
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("alert")).to_contain_text("Rank every response")
    assert not Annotation.objects.exists()


def test_pairwise_a_or_b(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons, screenshot_dir
):
    project = make_project("pair", name="Pairs", task_type=TaskType.PAIRWISE, overlap=1)
    make_labeler("carl", projects=[project], password=PASSWORD)
    make_comparisons(project, n=3)
    login(page, "carl")
    page.goto(f"{live_server.url}/projects/pair/label/")
    expect(page.get_by_role("heading", name="Response A")).to_be_visible()
    expect(page.get_by_role("heading", name="Response B")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "pairwise-desktop.png"), full_page=True)

    first = leased("carl")
    a, b = first.display_order
    page.keyboard.press("b")  # selects B is better; nothing is sent yet
    expect(page.locator("#pair-selection")).to_have_text(re.compile("Your choice: B is better"))
    expect(page.get_by_role("button", name="B is better")).to_have_attribute("aria-pressed", "true")
    expect(card(page, b)).to_have_class(re.compile("is-chosen"))
    for key in ("1", "2", "3", "4"):  # the old number aliases are gone: nothing happens
        page.keyboard.press(key)
    page.wait_for_timeout(200)
    assert not Annotation.objects.exists()
    page.keyboard.press("a")  # changing one's mind is a key away
    expect(page.get_by_role("button", name="A is better")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    wait_for_next(page, first.pk)
    assert Annotation.objects.get(assignment=first).ranking == [[b], [a]]
    expect(page.locator("#pair-selection")).to_have_text(re.compile("Nothing selected"))

    second = leased("carl")
    a, b = second.display_order
    page.get_by_role("button", name="Tie").click()  # a click selects too
    page.wait_for_timeout(200)
    assert not Annotation.objects.filter(assignment=second).exists()
    page.keyboard.press("Control+Enter")
    wait_for_next(page, second.pk)
    assert Annotation.objects.get(assignment=second).ranking == [[a, b]]

    third = leased("carl")
    page.keyboard.press("Enter")  # nothing selected: nothing sent
    page.wait_for_timeout(200)
    assert not Annotation.objects.filter(assignment=third).exists()
    page.get_by_role("button", name="Both bad").click()
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    annotation = Annotation.objects.get(assignment=third)
    assert annotation.all_bad is True and len(annotation.ranking) == 1


def test_hostile_model_output_is_shown_as_text_and_runs_nothing(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("xss", num_candidates=3, overlap=1)
    make_labeler("dora", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2, texts=XSS_TEXTS)
    login(page, "dora")
    page.goto(f"{live_server.url}/projects/xss/label/")

    def check_cards() -> None:
        texts = page.locator(".card .raw").all_text_contents()
        assert sorted(texts) == sorted(XSS_TEXTS)  # the raw text, whitespace kept
        rendered = page.locator(".card .md").all_text_contents()
        assert any("<script>window.__pwned" in t for t in rendered)  # raw HTML shows as text
        assert page.locator(".card img, .card script").count() == 0
        assert page.evaluate("window.__pwned") is None

    check_cards()  # as rendered by the server
    first = leased("dora")
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    check_cards()  # as rendered by the script from the API's JSON
    page.wait_for_timeout(200)  # give a stray onerror handler time to fire
    assert page.evaluate("window.__pwned") is None


def test_without_javascript_the_page_is_a_plain_form(
    browser, live_server, make_project, make_labeler, make_comparisons
):
    project = make_project("nojs", num_candidates=3, overlap=1)
    make_labeler("eli", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/?next=/projects/nojs/label/")
    page.get_by_label("Username").fill("eli")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    first = leased("eli")
    expect(page.locator("#rank-board")).to_be_hidden()
    for rank, cid in enumerate(first.display_order, start=1):
        card(page, cid).get_by_label(f"Rank of response {rank}").select_option(str(rank))
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    assert Annotation.objects.get(assignment=first).ranking == [[i] for i in first.display_order]
    page.get_by_role("button", name="Skip").click()
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    context.close()


def test_chat_turns_long_text_and_code_stay_readable(
    page: Page, live_server, login, make_project, make_labeler, screenshot_dir
):
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    project = make_project("chat", num_candidates=3, overlap=1)
    make_labeler("fay", projects=[project], password=PASSWORD)
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Write a function that adds two numbers."},
        {"role": "assistant", "content": "In which language?"},
        {"role": "user", "content": "Python, please."},
    ]
    prompts_import(
        project=project, records=[prompt_record({"external_id": "c", "messages": messages}, line=1)]
    )
    long_line = "x = " + " + ".join(str(i) for i in range(200))
    texts = [
        "Sure:\n```python\ndef add(a, b):\n    return a + b\n\n" + long_line + "\n```\nDone.",
        "\n".join(f"Line {i}: a long answer that keeps going." for i in range(80)),
        "def add(a, b): return a+b",
    ]
    candidates_import(
        project=project,
        records=[
            candidate_record({"prompt_external_id": "c", "text": t}, line=i)
            for i, t in enumerate(texts)
        ],
    )
    comparisons_build(project=project)
    login(page, "fay")
    page.goto(f"{live_server.url}/projects/chat/label/")
    turns = page.locator("#prompt .turn")
    expect(turns).to_have_count(4)
    expect(turns.locator(".role")).to_have_text(["System", "User", "Assistant", "User"])
    code = page.locator(".card .md pre code")
    expect(code).to_have_count(1)
    assert code.text_content().startswith("def add(a, b):\n    return a + b")
    expect(code.locator("span.k", has_text="def")).to_have_count(1)  # highlighted
    long_card = page.locator(".card", has_text="Line 0:")
    # Long texts fold behind "Show all" (with the word count), never an inner scroll box.
    assert long_card.locator("[data-slot=text]").evaluate(
        "el => getComputedStyle(el).overflowY !== 'auto' && getComputedStyle(el).overflowY !== 'scroll'"
    )
    show_all = long_card.get_by_role("button", name=re.compile(r"Show all \(\d+ words\)"))
    expect(show_all).to_be_visible()
    assert long_card.locator("[data-slot=text]").evaluate("el => el.scrollHeight > el.clientHeight")
    show_all.click()
    assert long_card.locator("[data-slot=text]").evaluate(
        "el => el.scrollHeight <= el.clientHeight + 1"
    )
    expect(long_card.get_by_role("button", name="Show less")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(screenshot_dir / "chat-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.screenshot(path=str(screenshot_dir / "chat-360.png"), full_page=True)


def test_lease_counts_down_and_renews_only_for_an_active_labeler(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # A lease under a minute: the page renews it on its next tick, if the labeler is active.
    project = make_project("lease", num_candidates=3, overlap=1, lease_seconds=30)
    make_labeler("gus", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "gus")
    page.goto(f"{live_server.url}/projects/lease/label/")
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^0:[23]\d$"))
    original = leased("gus").expires_at
    page.wait_for_timeout(1500)  # idle: ticks pass, nothing is renewed
    assert leased("gus").expires_at == original
    page.keyboard.press("1")
    for _ in range(20):
        page.wait_for_timeout(250)
        if leased("gus").expires_at > original:
            break
    assert leased("gus").expires_at > original
    assert Assignment.objects.filter(labeler__username="gus").count() == 1


def test_keys_after_a_drag_give_the_best_free_rank(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # Dropping a response on "4th · worst" then pressing keys gave 5th, 6th, 7th (ranks past
    # K, a board that crashed on them), and stored the dropped response as best.
    project = make_project("dragkeys", num_candidates=4, overlap=1, allow_ties=False)
    make_labeler("dana", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "dana")
    page.goto(f"{live_server.url}/projects/dragkeys/label/")
    wait_for_scripts(page)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    assignment = leased("dana")
    w, x, y, z = assignment.display_order
    card(page, w).locator(".drag-handle").drag_to(page.locator('#rank-board .slot[data-rank="4"]'))
    expect(card(page, w).locator('[data-slot="badge"]')).to_have_text("4th")
    page.locator("#task-heading").focus()
    for key in ("2", "3", "4"):
        page.keyboard.press(key)
    for cid, badge in ((x, "1st"), (y, "2nd"), (z, "3rd"), (w, "4th")):
        expect(card(page, cid).locator('[data-slot="badge"]')).to_have_text(badge)
    assert page.locator("#rank-board .chip").count() == 4
    page.keyboard.press("Control+Enter")
    wait_for_next(page, assignment.pk)
    assert Annotation.objects.get(assignment=assignment).ranking == [[x], [y], [z], [w]]
    assert errors == []


def test_an_expired_lease_is_renewed_when_the_labeler_is_active_again(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    from datetime import timedelta

    from django.utils import timezone

    project = make_project("expired", num_candidates=3, overlap=1, lease_seconds=600)
    make_labeler("eve", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "eve")
    page.clock.install()
    page.goto(f"{live_server.url}/projects/expired/label/")
    wait_for_scripts(page)
    mine = leased("eve")
    # Eleven idle minutes: the page says so, and the lease ran out on the server too.
    Assignment.objects.filter(pk=mine.pk).update(expires_at=timezone.now() - timedelta(seconds=5))
    page.clock.fast_forward("11:00")
    expect(page.locator("#lease")).to_have_text("Lease: expired", use_inner_text=True)
    page.mouse.move(10, 10)
    page.keyboard.press("Shift")  # back at work
    page.clock.fast_forward(2000)
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^(9|10):\d\d$"))
    renewed = Assignment.objects.get(pk=mine.pk)
    assert renewed.status == Assignment.Status.LEASED and renewed.expires_at > timezone.now()
    assert Assignment.objects.filter(labeler__username="eve").count() == 1  # nothing else leased


def test_pairwise_enter_on_a_choice_button_chooses_it_then_sends(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("pairenter", task_type=TaskType.PAIRWISE, overlap=1)
    make_labeler("finn", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "finn")
    page.goto(f"{live_server.url}/projects/pairenter/label/")
    wait_for_scripts(page)
    assignment = leased("finn")
    a, b = assignment.display_order
    page.keyboard.press("a")
    page.get_by_role("button", name="B is better").focus()
    page.keyboard.press("Enter")  # chooses B, as a click would; it used to send A
    expect(page.get_by_role("button", name="B is better")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(200)
    assert not Annotation.objects.exists()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    assert Annotation.objects.get(assignment=assignment).ranking == [[b], [a]]


def test_a_reload_mid_task_gives_the_draft_back(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("draft", num_candidates=3, overlap=1)
    make_labeler("gwen", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "gwen")
    page.goto(f"{live_server.url}/projects/draft/label/")
    wait_for_scripts(page)
    first = leased("gwen")
    x, y, z = first.display_order
    page.keyboard.press("2")
    page.keyboard.press("1")
    card(page, z).locator('input[name^="flag_"]').first.check()
    page.locator("#rationale").fill("two is clearly better")
    page.reload()
    wait_for_scripts(page)
    assert leased("gwen").pk == first.pk  # the same lease, renewed
    expect(card(page, y).locator('[data-slot="badge"]')).to_have_text("1st")
    expect(card(page, x).locator('[data-slot="badge"]')).to_have_text("2nd")
    expect(page.locator("#rationale")).to_have_value("two is clearly better")
    expect(card(page, z).locator('input[name^="flag_"]').first).to_be_checked()
    page.keyboard.press("3")
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    stored = Annotation.objects.get(assignment=first)
    assert stored.ranking == [[y], [x], [z]] and stored.rationale == "two is clearly better"
    assert list(stored.flags) == [str(z)]
    # The next comparison starts blank, and so does a reload of it.
    page.reload()
    wait_for_scripts(page)
    expect(page.locator("#rationale")).to_have_value("")
    assert page.locator('.card [data-slot="badge"]:visible').count() == 0


def test_a_reload_mid_task_gives_the_ratings_back(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # The draft keyed a rating by its field's current value ("rating_5=3"): a reloaded page,
    # whose selects start empty, looked up "rating_5=" and dropped every rating given.
    project = make_project("draftrate", num_candidates=3, overlap=1, rating_scale=5)
    make_labeler("rhea", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "rhea")
    page.goto(f"{live_server.url}/projects/draftrate/label/")
    wait_for_scripts(page)
    first = leased("rhea")
    x, y, z = first.display_order
    card(page, x).locator('select[name^="rating_"]').select_option("4")
    card(page, z).locator('select[name^="rating_"]').select_option("2")
    page.reload()
    wait_for_scripts(page)
    expect(card(page, x).locator('select[name^="rating_"]')).to_have_value("4")
    expect(card(page, y).locator('select[name^="rating_"]')).to_have_value("")
    expect(card(page, z).locator('select[name^="rating_"]')).to_have_value("2")
    page.locator("#task-heading").focus()
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("heading", name="Nothing left to label")).to_be_visible()
    assert Annotation.objects.get(assignment=first).ratings == {str(x): 4, str(z): 2}


def test_a_refused_renewal_says_why_and_is_not_retried(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("refused", num_candidates=3, overlap=1, lease_seconds=30)
    make_labeler("ivy", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "ivy")
    page.goto(f"{live_server.url}/projects/refused/label/")
    wait_for_scripts(page)
    renewals = []
    page.on("request", lambda r: renewals.append(r.url) if r.url.endswith("/renew/") else None)
    project.active = False  # an admin pauses the project
    project.save(update_fields=["active"])
    page.keyboard.press("1")
    expect(page.locator("#alert")).to_contain_text(
        "Your lease could not be renewed: This project is paused"
    )
    page.keyboard.press("2")  # still active: a refusal is final for this lease
    page.wait_for_timeout(2500)
    assert len(renewals) == 1


def test_a_refused_renewal_is_said_beside_a_refused_answer(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # The refusal used to replace the alert: the reason the answer was not accepted vanished.
    project = make_project("refused-beside", num_candidates=3, overlap=1, lease_seconds=30)
    make_labeler("iona", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    login(page, "iona")
    page.goto(f"{live_server.url}/projects/refused-beside/label/")
    wait_for_scripts(page)
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")  # two of three left unranked
    expect(page.locator("#alert")).to_contain_text("Rank every response")
    project.active = False
    project.save(update_fields=["active"])
    page.keyboard.press("2")  # activity: the clock, in its last minute, asks for a renewal
    expect(page.locator("#alert")).to_contain_text("Your lease could not be renewed")
    expect(page.locator("#alert")).to_contain_text("Rank every response")


def test_a_retried_answer_is_counted_once_when_only_the_next_comparison_failed(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # Stored (201), then loading the next comparison failed; the retry is a replay (200) of
    # the same answer and must not add to today's count a second time.
    project = make_project("count-once", num_candidates=3, overlap=1)
    make_labeler("otto", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "otto")
    page.goto(f"{live_server.url}/projects/count-once/label/")
    wait_for_scripts(page)
    first = leased("otto")
    failed = []

    def fail_once(route):
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.abort()

    page.route("**/assignments/next/", fail_once)
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#alert")).to_contain_text("Network error")
    assert failed and Annotation.objects.filter(assignment=first).count() == 1
    expect(page.locator("#today-count")).to_have_text("1")
    page.keyboard.press("Control+Enter")  # try again: the same client_token, a 200
    wait_for_next(page, first.pk)
    assert Annotation.objects.filter(assignment=first).count() == 1
    expect(page.locator("#today-count")).to_have_text("1")
    page.reload()
    wait_for_scripts(page)
    expect(page.locator("#today-count")).to_have_text("1")  # the server's count agrees


def test_the_next_comparison_gets_its_own_lease_clock(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    # After a submit the page leases the next comparison through the API; the countdown and
    # renewals follow the new assignment, not the one just sent.
    project = make_project("second-lease", num_candidates=3, overlap=1, lease_seconds=40)
    make_labeler("jo", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2)
    login(page, "jo")
    page.goto(f"{live_server.url}/projects/second-lease/label/")
    wait_for_scripts(page)
    first = leased("jo")
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    wait_for_next(page, first.pk)
    second = leased("jo")
    assert second.pk != first.pk
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^0:[34]\d$"))
    original = second.expires_at
    page.keyboard.press("1")
    for _ in range(20):
        page.wait_for_timeout(250)
        second.refresh_from_db()
        if second.expires_at > original:
            break
    assert second.expires_at > original
    assert Assignment.objects.filter(labeler__username="jo").count() == 2
