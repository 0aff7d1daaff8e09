"""WCAG checks in Chromium: reflow at 320 px (1.4.10), text contrast (1.4.3) and the
contrast of form fields' edges (1.4.11), measured on the computed styles."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Prompt, TaskType
from annotation.services.labeling import assignment_next, ranking_submit

from .conftest import PASSWORD, wait_for_scripts, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_CODE = (
    "Use this:\n\n```python\n"
    "total = compute(first_argument, second_argument)  # a comment far wider than any phone\n"
    "```\n\nand `inline_code_that_is_also_rather_long_for_a_phone_screen()`."
)
LONG_RATIONALE = "Because " + "x" * 120 + " is wrong."

OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = Array.from(document.querySelectorAll('body *'))
    .filter(el => el.getBoundingClientRect().right > width + 0.5 && !el.parentElement.closest('pre'))
    .map(el => el.tagName + '.' + String(el.className).slice(0, 30));
  return {scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 8)};
}"""


def _answered_and_corrected(project, user) -> None:
    """One answer and its correction: History shows a superseded row and the current one."""
    assignment = assignment_next(project=project, labeler=user)
    order = assignment.display_order
    for ranking in ([[order[0]], [order[1]]], [[order[1]], [order[0]]]):
        ranking_submit(
            assignment=assignment,
            labeler=user,
            ranking=ranking,
            flags={str(order[0]): list(project.flags[:1])} if project.flags else {},
            rationale=LONG_RATIONALE,
            edited_text=LONG_RATIONALE if project.allow_edit else "",
            client_token=uuid.uuid4(),
        )


def test_history_and_the_correction_page_reflow_at_320_and_640_px(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("wide", num_candidates=2, overlap=1, allow_edit=True)
    user = make_labeler("wes", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1, texts=[LONG_CODE, "Short answer."])
    # The prompt too: it sits in grid containers of its own on both pages.
    Prompt.objects.filter(project=project).update(messages=[{"role": "user", "content": LONG_CODE}])
    _answered_and_corrected(project, user)
    login(page, "wes")
    for width in (320, 640):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{live_server.url}/history/")
        expect(page.locator(".history-item")).to_have_count(2)
        overflow = page.evaluate(OVERFLOW)
        assert overflow["scrollWidth"] <= width, ("history", width, overflow)
        # The code line scrolls inside its own block instead.
        pre = page.locator(".history-item pre").first
        assert pre.evaluate("p => p.scrollWidth > p.clientWidth")
        page.get_by_role("link", name=re.compile("^Edit this answer")).click()
        expect(page.locator(".editing-note")).to_be_visible()
        wait_for_scripts(page)
        overflow = page.evaluate(OVERFLOW)
        assert overflow["scrollWidth"] <= width, ("correction", width, overflow)


def _luminance(rgb) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b) -> float:
    """WCAG 2 contrast ratio of two opaque sRGB colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _rgb(css: str) -> list[float]:
    return [float(v) for v in re.findall(r"[\d.]+", css)[:3]]


def assert_field_edges_contrast(page: Page, selector: str) -> None:
    field = page.locator(selector).first
    edge, own, behind = field.evaluate(
        """el => {
          let n = el.parentElement, bg = 'rgb(255, 255, 255)';
          for (; n; n = n.parentElement) {
            const b = getComputedStyle(n).backgroundColor;
            if (b !== 'rgba(0, 0, 0, 0)' && b !== 'transparent') { bg = b; break; }
          }
          const s = getComputedStyle(el);
          return [s.borderTopColor, s.backgroundColor, bg];
        }"""
    )
    page_bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    for against in (own, behind, page_bg):
        ratio = contrast(_rgb(edge), _rgb(against))
        assert ratio >= 3, f"{selector}: border {edge} on {against} is {ratio:.2f}:1"


def test_form_field_edges_reach_3_to_1(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("edge", num_candidates=2, overlap=1, rating_scale=5)
    make_labeler("eve", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1)
    page.goto(f"{live_server.url}/accounts/login/")
    for selector in ("#id_username", "#id_password"):
        assert_field_edges_contrast(page, selector)
    login(page, "eve")
    page.goto(f"{live_server.url}/projects/edge/label/")
    for selector in ("#rationale", "select[data-field=rank]", "select[data-field=rating]"):
        assert_field_edges_contrast(page, selector)


# Text nodes of a container: colour, the first opaque background behind them, and the
# opacity of the element and its ancestors (which fades text and background alike).
TEXT_COLOURS = """root => {
  const rgba = c => { const p = c.match(/[\\d.]+/g).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const out = [], seen = new Set();
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (!el.getClientRects().length || getComputedStyle(el).visibility !== 'visible') continue;
    let opacity = 1, bg = null;
    for (let n = el; n; n = n.parentElement) {
      const style = getComputedStyle(n);
      opacity *= parseFloat(style.opacity);
      const b = rgba(style.backgroundColor);
      if (!bg && b[3] > 0) bg = b;
    }
    out.push({text: el.textContent.trim().slice(0, 40), fg: rgba(getComputedStyle(el).color), bg, opacity,
              page: rgba(getComputedStyle(document.documentElement).backgroundColor)});
  }
  return out;
}"""


def _over(top, below, alpha: float):
    return [alpha * t + (1 - alpha) * b for t, b in zip(top[:3], below[:3], strict=True)]


def text_contrasts(page: Page, selector: str) -> list[tuple[float, str]]:
    """(ratio, text) for every visible text under `selector`, opacity included."""
    found = []
    for root in page.locator(selector).all():
        for item in root.evaluate(TEXT_COLOURS):
            bg = item["bg"] or item["page"]
            fg = _over(item["fg"], bg, item["fg"][3])
            # The faded element is painted over the page: text and background both blend.
            fg, bg = (
                _over(fg, item["page"], item["opacity"]),
                _over(bg, item["page"], item["opacity"]),
            )
            found.append((round(contrast(fg, bg), 2), item["text"]))
    assert found, f"no text under {selector}"
    return found


def test_superseded_history_entries_keep_text_at_4_5_to_1(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("old", num_candidates=2, overlap=1, flags=["unsafe"])
    user = make_labeler("otto", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1, texts=[LONG_CODE, "Plain [link](https://example.org)."])
    _answered_and_corrected(project, user)
    login(page, "otto")
    page.goto(f"{live_server.url}/history/")
    old = page.locator(".history-item.is-superseded")
    expect(old).to_have_count(1)
    expect(old.locator(".tag", has_text="corrected later")).to_be_visible()
    low = [(ratio, text) for ratio, text in text_contrasts(page, ".history-item") if ratio < 4.5]
    assert low == []
    # Still told apart from the current answer without fading it.
    current = page.locator(".history-item:not(.is-superseded)")
    style = "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).borderTopStyle]"
    assert old.evaluate(style) != current.evaluate(style)


def test_the_response_not_chosen_keeps_its_text_at_4_5_to_1(
    page: Page, live_server, login, make_project, make_labeler, make_comparisons
):
    project = make_project("pick", task_type=TaskType.PAIRWISE, overlap=1)
    make_labeler("pia", projects=[project], password=PASSWORD)
    make_comparisons(project, n=1, texts=[LONG_CODE, "Another [answer](https://example.org)."])
    login(page, "pia")
    page.goto(f"{live_server.url}/projects/pick/label/")
    wait_for_scripts(page)
    page.keyboard.press("a")
    wait_until(page, "() => !!document.querySelector('.card.is-rejected')")
    low = [(ratio, text) for ratio, text in text_contrasts(page, ".card") if ratio < 4.5]
    assert low == []
    chosen, rejected = page.locator(".card.is-chosen"), page.locator(".card.is-rejected")
    style = "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).borderTopStyle]"
    assert rejected.evaluate(style) != chosen.evaluate(style)
