"""WCAG checks in Chromium: reflow at 320 px (1.4.10), text contrast (1.4.3) and the
contrast of form fields' edges (1.4.11), measured on the computed styles."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from annotation.models import Prompt
from annotation.services.labeling import assignment_next, ranking_submit

from .conftest import PASSWORD, wait_for_scripts

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
