"""Reading LLM output in a real Chromium, on a desktop and on a 390 px touch phone: Markdown
rendered (headings, lists, tables, links, highlighted code), a raw-text toggle, the same on
History, and hostile text in every field that stays inert."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Assignment, Prompt

from .conftest import PASSWORD, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEVICES = {
    "desktop": {"viewport": {"width": 1366, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}

# Each payload, were it to run, calls alert() or sets window.__xss.
PAYLOADS = [
    "<script>window.__xss = 'script'</script>",
    "<img src=x onerror=\"window.__xss = 'img'\">",
    "<svg onload=\"alert('svg')\"></svg>",
    "[click me](javascript:alert('md-link'))",
    "<a href=\"javascript:alert('a')\">a link</a>",
    "\"><script>alert('attr')</script>",
    "</textarea><script>alert('textarea')</script>",
    "<iframe srcdoc=\"<script>parent.__xss='iframe'</script>\"></iframe>",
    "![pic](javascript:alert('img-md'))",
    "<details open ontoggle=\"alert('details')\">",
]
XSS = "\n\n".join(PAYLOADS)
XSS_NAME = "<img src=x onerror=alert('name')>"

MARKDOWN_ANSWER = """# Plan

Some *emphasis*, **bold** and `inline code`.

- first point
- second point

| language | typing |
|---|---|
| Python | dynamic |

See [the docs](https://docs.python.org/3/) or ![a chart](https://img.example/c.png).

```python
def add(a, b):
    return a + b
```
"""


@pytest.fixture(params=sorted(DEVICES))
def device_page(request, browser):
    context = browser.new_context(**DEVICES[request.param])
    page = context.new_page()
    page.device = request.param
    yield page
    context.close()


def sign_in(page: Page, live_server, username: str, next_path: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def watch_for_scripts(page: Page) -> list[str]:
    """Record every alert/confirm/prompt and every page error; the test asserts none came."""
    events: list[str] = []
    page.on("dialog", lambda dialog: (events.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on("pageerror", lambda exc: events.append(f"error: {exc}"))
    return events


def assert_inert(page: Page, events: list[str]) -> None:
    page.wait_for_timeout(150)  # time for a stray onerror/onload handler to fire
    assert events == []
    assert page.evaluate("window.__xss") is None
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    assert page.locator("svg, iframe, [onerror], [onload], [ontoggle], [onclick]").count() == 0
    # Images only in staff-written guidelines (by design), never in labeled text.
    assert page.locator("img:not(.guidelines-body img)").count() == 0
    assert page.locator("a[href^='javascript' i], a[href^='data:' i]").count() == 0


def test_markdown_renders_with_highlighting_and_a_raw_text_toggle(
    device_page, live_server, make_project, make_labeler, make_comparisons
):
    page = device_page
    project = make_project("md", name="Markdown", num_candidates=3, overlap=1)
    make_labeler("mia", projects=[project], password=PASSWORD)
    make_comparisons(project, n=2, texts=[MARKDOWN_ANSWER, "Plain *answer*.", "Third."])
    sign_in(page, live_server, "mia", "/projects/md/label/")
    first = Assignment.objects.get(labeler__username="mia")

    def check() -> None:
        card = page.locator(".card", has_text="first point")
        md = card.locator(".md")
        # "# Plan" nests below the card's h3 "Response N": no h1/h2 breaks the page outline.
        expect(md.locator("h4")).to_have_text("Plan")
        expect(page.locator("#cards h1, #cards h2, #cards h3:not(.card-title)")).to_have_count(0)
        expect(md.locator("em")).to_have_text("emphasis")
        expect(md.locator("ul li")).to_have_count(2)
        expect(md.locator("table td").first).to_have_text("Python")
        link = md.get_by_role("link", name="the docs")
        expect(link).to_have_attribute("href", "https://docs.python.org/3/")
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", re.compile(r"noopener.*nofollow"))
        # Images are not loaded: a link in their place.
        expect(md.get_by_role("link", name="[image: a chart]")).to_be_visible()
        keyword = md.locator("pre span.k", has_text="def")
        expect(keyword).to_have_count(1)
        body = md.locator("pre")
        assert keyword.evaluate("n => getComputedStyle(n).color") != body.evaluate(
            "n => getComputedStyle(n).color"
        )  # coloured by the local Pygments stylesheet
        expect(card.locator(".word-count")).to_have_text(re.compile(r"^\d+ words$"))
        # Raw text: exactly what the model wrote, Markdown syntax included.
        raw = card.get_by_role("button", name="Raw text")
        raw.click()
        expect(raw).to_have_attribute("aria-pressed", "true")
        expect(card.locator(".raw")).to_be_visible()
        assert card.locator(".raw").text_content() == MARKDOWN_ANSWER
        expect(md).to_be_hidden()
        raw.click()
        expect(md).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]

    check()  # rendered by the page load
    page.locator("#rationale").fill("The *first* is best.")
    for n, cid in enumerate(first.display_order, start=1):
        page.locator(f'.card[data-candidate="{cid}"] select[data-field=rank]').select_option(str(n))
    page.get_by_role("button", name=re.compile("^Submit")).click()
    wait_until(
        page,
        "id => document.getElementById('task-form').dataset.assignment !== String(id)",
        first.pk,
    )
    check()  # swapped in by the script (server-rendered fragment)
    # History renders the same way.
    page.goto(f"{live_server.url}/history/")
    item = page.locator(".history-item").first
    expect(item.locator(".md h2", has_text="Plan")).to_be_visible()  # below History's h1
    expect(page.locator("main .md h1")).to_have_count(0)
    expect(item.locator(".md pre span.k", has_text="def")).to_have_count(1)
    item.locator(".history-text", has_text="first point").get_by_role(
        "button", name="Raw text"
    ).click()
    expect(item.locator(".raw", has_text="# Plan")).to_be_visible()


def test_hostile_text_in_every_field_stays_inert(
    device_page, live_server, make_project, make_labeler, make_comparisons
):
    from django.contrib.auth import get_user_model

    page = device_page
    project = make_project(
        "xss-all", name=f"Project {XSS_NAME}", num_candidates=3, overlap=1, guidelines=XSS
    )
    make_labeler("nemo", projects=[project], password=PASSWORD)
    # A legacy or directly-created account can hold any name; the page must still be safe.
    get_user_model().objects.filter(username="nemo").update(username=XSS_NAME)
    comparisons = make_comparisons(project, n=2, texts=[XSS, XSS + "\n\nsecond", "plain"])
    chat = [
        {"role": "system", "content": XSS},
        {"role": "user", "content": XSS},
        {"role": "assistant", "content": XSS},
        {"role": "user", "content": "and now? " + PAYLOADS[0]},
    ]
    Prompt.objects.filter(pk__in=[c.prompt_id for c in comparisons]).update(messages=chat)
    events = watch_for_scripts(page)
    sign_in(page, live_server, XSS_NAME, "/projects/xss-all/label/")
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()
    assert_inert(page, events)
    # Every text block, raw and rendered, unfolded.
    for button in page.get_by_role("button", name="Raw text").all():
        button.click()
    show_all = page.get_by_role("button", name=re.compile(r"^Show all"))
    for _ in range(20):  # each click turns one into "Show less"
        if not show_all.count():
            break
        show_all.first.click()
    page.locator(".guidelines summary").click()
    assert_inert(page, events)
    # The payload reaches the labeler as text.
    expect(page.locator(".card .raw", has_text="second")).to_contain_text("<script>window.__xss")
    first = Assignment.objects.get(labeler__username=XSS_NAME)
    page.locator("#rationale").fill(XSS)
    for n, cid in enumerate(first.display_order, start=1):
        page.locator(f'.card[data-candidate="{cid}"] select[data-field=rank]').select_option(str(n))
    page.get_by_role("button", name=re.compile("^Submit")).click()
    wait_until(
        page,
        "id => document.getElementById('task-form').dataset.assignment !== String(id)",
        first.pk,
    )
    assert_inert(page, events)  # the next comparison, swapped in by the script
    page.goto(f"{live_server.url}/history/")
    expect(page.locator(".history-rationale")).to_contain_text("<script>window.__xss")
    assert_inert(page, events)
    page.get_by_role("link", name=re.compile("^Edit")).first.click()
    expect(page.locator("#rationale")).to_have_value(XSS)  # prefilled, as text
    assert_inert(page, events)


def settled_rows(cards, timeout_s: float = 5.0) -> int:
    """Rows the cards lie in, read until two readings 100 ms apart agree (a layout can still
    move for a frame after the last script ran)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        rows = len({round(c.bounding_box()["y"]) for c in cards.all()})
        if rows == last or time.monotonic() > deadline:
            return rows
        last = rows
        time.sleep(0.1)


def long_answer(seed: int, words: int = 2000) -> str:
    body = " ".join(f"w{(seed * 7 + j) % 97}" for j in range(words))
    return f"Answer {seed}.\n\n{body}"


def test_long_answers_fold_cards_keep_their_height_and_k4_fits_one_row(
    device_page, live_server, make_project, make_labeler, make_comparisons
):
    page = device_page
    project = make_project("long", name="Long", num_candidates=4, overlap=1)
    make_labeler("lou", projects=[project], password=PASSWORD)
    texts = [long_answer(1), "Short answer.", long_answer(2, 600), "Another short one."]
    make_comparisons(project, n=1, texts=texts)
    sign_in(page, live_server, "lou", "/projects/long/label/")
    cards = page.locator(".card")
    expect(cards).to_have_count(4)
    # Measure once the page has settled: styles loaded and every text block wired (folded).
    page.wait_for_load_state("load")
    expect(page.locator(".card [data-text-block][data-wired]")).to_have_count(4)
    if page.device == "desktop":
        widths = "[innerWidth, document.querySelector('.cards').clientWidth]"
        assert settled_rows(cards) == 1, page.evaluate(widths)  # one row at 1366 px
    short = page.locator(".card", has_text="Short answer.")
    long = page.locator(".card", has_text="Answer 1.")
    assert short.bounding_box()["height"] < long.bounding_box()["height"] / 2  # not stretched
    expect(long.locator(".word-count")).to_have_text("2002 words")
    text = long.locator("[data-slot=text]")
    assert (
        text.evaluate("el => getComputedStyle(el).overflowY") == "hidden"
    )  # a fold, no scroll box
    folded = text.bounding_box()["height"]
    long.get_by_role("button", name="Show all (2002 words)").click()
    assert text.bounding_box()["height"] > 2 * folded
    assert text.evaluate("el => el.scrollHeight <= el.clientHeight + 1")
    expect(short.get_by_role("button", name=re.compile("^Show all"))).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def test_compare_two_answers_marks_word_differences(
    device_page, live_server, make_project, make_labeler, make_comparisons
):
    page = device_page
    project = make_project("diff", name="Diff", num_candidates=3, overlap=1)
    make_labeler("dee", projects=[project], password=PASSWORD)
    left = "The capital of France is Paris, a city on the Seine."
    right = "The capital of France is Lyon, a city on the Rhône."
    make_comparisons(project, n=2, texts=[left, right, "Something else entirely."])
    sign_in(page, live_server, "dee", "/projects/diff/label/")
    first = Assignment.objects.get(labeler__username="dee")
    order = first.display_order
    texts = {c.pk: c.text for c in first.comparison.candidates.all()}
    n_left = order.index(next(cid for cid, t in texts.items() if t == left)) + 1
    n_right = order.index(next(cid for cid, t in texts.items() if t == right)) + 1
    page.get_by_label("Compare: left response").select_option(label=f"Response {n_left}")
    page.get_by_label("Compare: right response").select_option(label=f"Response {n_right}")
    page.get_by_role("button", name="Show differences").click()
    diff = page.get_by_role("region", name="Differences between two responses")
    expect(diff).to_be_visible()
    expect(diff.locator("#diff-a .diff-del")).to_have_text(["Paris,", "Seine."])
    expect(diff.locator("#diff-b .diff-ins")).to_have_text(["Lyon,", "Rhône."])
    assert diff.locator("#diff-a").text_content() == left
    assert diff.locator("#diff-b").text_content() == right
    expect(page.locator("#diff-summary")).to_have_text(
        "2 words only on the left, 2 only on the right."
    )
    if page.device == "desktop":  # side by side; stacked on a phone
        a, b = diff.locator(".diff-col").all()
        assert a.bounding_box()["y"] == b.bounding_box()["y"]
    # A comparison swapped in by the script gets fresh choices and a closed panel.
    for n, cid in enumerate(order, start=1):
        page.locator(f'.card[data-candidate="{cid}"] select[data-field=rank]').select_option(str(n))
    page.get_by_role("button", name=re.compile("^Submit")).click()
    wait_until(
        page,
        "id => document.getElementById('task-form').dataset.assignment !== String(id)",
        first.pk,
    )
    expect(diff).to_be_hidden()
    expect(page.get_by_label("Compare: left response").locator("option")).to_have_count(3)
