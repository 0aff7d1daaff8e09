"""Screenshots of the ranking, pairwise and chat pages at 1366 px and 390 px (touch).

`make screenshots` runs this with SCREENSHOT_DIR=docs/screenshots; in the normal suite the
files go to a temporary folder, and the test still checks each page fits its width.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotation.models import Prompt, TaskType

from .conftest import PASSWORD
from .test_reading import DEVICES, MARKDOWN_ANSWER, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWERS = [
    MARKDOWN_ANSWER,
    "Use a dictionary:\n\n```python\ncounts = {}\nfor w in words:\n    counts[w] = counts.get(w, 0) + 1\n```",
    "You can count words with `collections.Counter`, which is the idiomatic way.",
    "I am not sure what you mean.",
]
CHAT = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "How do I count words in Python?"},
    {"role": "assistant", "content": "Do you want it case-insensitive?"},
    {"role": "user", "content": "Yes, and ignore punctuation."},
]


def test_screenshots(
    browser, live_server, make_project, make_labeler, make_comparisons, screenshot_dir
):
    ranking = make_project("shots-rank", name="Rank answers", num_candidates=4, overlap=1,
                           guidelines="Prefer **correct**, concise answers.")  # fmt: skip
    pairwise = make_project("shots-pair", name="Pick the better", num_candidates=2, overlap=1,
                            task_type=TaskType.PAIRWISE)  # fmt: skip
    chat = make_project("shots-chat", name="Chat", num_candidates=3, overlap=1)
    make_labeler("shot", projects=[ranking, pairwise, chat], password=PASSWORD)
    make_comparisons(ranking, n=1, texts=ANSWERS)
    make_comparisons(pairwise, n=1, texts=ANSWERS[1:3])
    (comparison,) = make_comparisons(chat, n=1, texts=ANSWERS[1:])
    Prompt.objects.filter(pk=comparison.prompt_id).update(messages=CHAT)
    for device, size in (("desktop", "1366"), ("phone", "390")):
        context = browser.new_context(**DEVICES[device])
        page = context.new_page()
        sign_in(page, live_server, "shot", "/")
        for slug, name in (
            ("shots-rank", "ranking"),
            ("shots-pair", "pairwise"),
            ("shots-chat", "chat"),
        ):
            page.goto(f"{live_server.url}/projects/{slug}/label/")
            expect(page.locator(".card").first).to_be_visible()
            assert (
                page.evaluate("document.documentElement.scrollWidth")
                <= DEVICES[device]["viewport"]["width"]
            )
            page.screenshot(
                path=str(screenshot_dir / f"{name}-{size}.png"), full_page=True, type="png"
            )
        context.close()
