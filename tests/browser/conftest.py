"""Playwright against Debian's Chromium and pytest-django's live server.

Never downloads a browser: the tests use /usr/bin/chromium and are skipped, with the reason,
where it is missing (`apt-get install chromium`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

PASSWORD = "a-long-password-1"  # every browser test's labelers sign in with it
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_until(page, predicate: str, arg=None, timeout: float = 10.0) -> None:
    """Poll a JavaScript predicate (`arg` passed to it) until it is true.

    Not `page.wait_for_function`: it evals the predicate inside the page, which the pages' CSP
    (script-src 'self', no unsafe-eval) refuses now and then (microsoft/playwright#36982), a
    failure that has nothing to do with the page. `page.evaluate` is compiled by the DevTools
    protocol, which CSP does not govern.
    """
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout
    while True:
        try:
            if page.evaluate(predicate, arg):
                return
        except Error as exc:  # the page navigated between two polls: ask the new one
            if "context was destroyed" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s in vain for: {predicate}")
        page.wait_for_timeout(50)


def wait_for_scripts(page) -> None:
    """Wait until the page's deferred scripts ran (label.js marks <html class="js"> last)."""
    wait_until(page, "() => document.documentElement.classList.contains('js')")


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def playwright(django_db_setup, playwright):
    """Playwright, started after the test database exists and stopped before it goes.

    The sync API keeps an event loop running in this thread, and Django refuses database
    work (creating the test database included) while one runs.
    """
    return playwright


@pytest.fixture(scope="package", autouse=True)
def allow_orm_beside_playwright():
    """Let these tests use the ORM while Playwright's event loop runs in the same thread.

    Package-scoped so that it also covers the database flush after each test, and undone
    when the browser tests end: a process-wide setting would leak into other tests'
    subprocesses (`check --deploy` rejects it).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
        "headless": True,
    }


# The labeling page's first-visit walkthrough is a modal dialog: every browser context starts
# as a returning labeler; test_tour.py opens a first-visit one with `new_first_visit_context`.
TOUR_SEEN = "try { window.localStorage.setItem('rlhf.tourSeen', '1'); } catch (e) {}"


@pytest.fixture(scope="session")
def browser(browser):
    first_visit = browser.new_context

    def new_context(**kwargs):
        context = first_visit(**kwargs)
        context.add_init_script(TOUR_SEEN)
        return context

    browser.new_first_visit_context = first_visit
    browser.new_context = new_context
    return browser


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where the tests save screenshots (SCREENSHOT_DIR to keep them somewhere else)."""
    if target := os.environ.get("SCREENSHOT_DIR"):
        path = Path(target)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def login(live_server):
    """Sign a labeler in through the login page (shared by the browser test modules)."""
    from playwright.sync_api import Page, expect

    def sign_in(page: Page, username: str) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Your projects")).to_be_visible()

    return sign_in
