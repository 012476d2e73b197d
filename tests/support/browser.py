"""Debian's Chromium through Playwright, for the browser tests: a page on a live appliance that
fails the test if the page logs an error (a CSP violation or a script error shows up there)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

from tests.support.live import ADMIN_PASSWORD, LiveAppliance

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000


@contextlib.contextmanager
def chromium_page(live: LiveAppliance, allowed_errors: re.Pattern[str] | None = None,
                  accept_dialogs: bool = False) -> Iterator[Page]:
    """A fresh Chromium page on ``live``. Console errors fail the test when the page closes, except
    those ``allowed_errors`` matches (Chromium logs every 4xx answer to fetch() as one, so a test
    that provokes 400s on purpose names them). With ``accept_dialogs`` every confirm() is accepted."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed: run `make deps-test` (apt-get install chromium)")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=live.url, ignore_https_errors=True,
                                          viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT_MS)
            tab = context.new_page()

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error" and not (allowed_errors and allowed_errors.search(message.text)):
                    errors.append(message.text)

            tab.on("console", on_console)
            tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            if accept_dialogs:
                tab.on("dialog", lambda dialog: dialog.accept())
            yield tab
            context.close()
        finally:
            browser.close()
    assert errors == []


@pytest.fixture
def page(live: LiveAppliance) -> Iterator[Page]:
    """A fresh Chromium page on the live appliance; console errors fail the test at the end."""
    with chromium_page(live) as tab:
        yield tab


def sign_in(page: Page, path: str) -> None:
    """Open ``path`` (under /ui), get sent to the login page, sign in and land back on it."""
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/ui/login\?next=" + re.escape(path.replace("/", "%2F")) + "$"))
    page.get_by_label("User name").fill("Administrator")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Administrator")
