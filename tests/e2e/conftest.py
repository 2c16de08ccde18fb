"""Browser tests in headless Chromium (Debian's `chromium`), shared by every app's e2e tests.

    with chromium_page() as page:
        admin_login(page, live_server.url, username="root", password=PASSWORD)
        page.goto(f"{live_server.url}/admin/…")

Set up the database *before* entering `chromium_page` and read it again *after* leaving it:
Playwright's sync API runs an event loop in this thread while the browser is open, and Django
refuses ORM calls from inside one (SynchronousOnlyOperation). The live server answers the browser
from its own thread, so the pages themselves are unaffected.

Without /usr/bin/chromium the tests skip, saying so — unless GENESIS_REQUIRE_SERVICES=1 (CI), where
a missing browser fails them (.ci/run installs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DEFAULT_TIMEOUT_MS = 15_000


def chromium_executable() -> str:
    """The browser to launch; skips (or, with GENESIS_REQUIRE_SERVICES=1, fails) when it is missing."""
    if Path(CHROMIUM_PATH).exists():
        return CHROMIUM_PATH
    message = f"{CHROMIUM_PATH} is missing: install Debian's chromium (apt-get update && apt-get install chromium)"
    if os.environ.get("GENESIS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"GENESIS_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


@contextmanager
def chromium_page(*, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A fresh page in a fresh headless Chromium, closed on exit."""
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(DEFAULT_TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def admin_login(page: Page, base_url: str, *, username: str, password: str) -> None:
    """Log in through the admin's own login form, as a person would."""
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")


@pytest.fixture
def e2e_password() -> str:
    """The password tests/factories.py's UserFactory gives every user."""
    return "correct horse battery staple"
