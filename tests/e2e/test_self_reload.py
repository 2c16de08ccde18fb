"""A person reads a long self-reloading page (a benchmark run that has not finished), in headless Chromium:
scrolled down, they stay where they were across its reloads, and the address stays the page's own.

The first reload used to go to the page's address marked `?reloaded=1`: Chromium took that for a navigation
to another address and showed the page from the top (measured here: scrollY 885 → 0; a marker that changed
at every reload would do so every time), where a reload of the same address (`<meta http-equiv="refresh"
content="N">`, genesis/auto_refresh.py) keeps the place (885 → 885)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e


def _reload_and_read(page: Page, scrolled_to: int) -> tuple[float, int, str]:
    """Waits for the page to reload itself; seconds it took, the scroll position after it, the address."""
    started = time.monotonic()
    with page.expect_event("load", timeout=40_000):
        pass
    waited = time.monotonic() - started
    try:  # Chromium puts the scroll back once the page is laid out: give it a moment before reading
        page.wait_for_function(f"window.scrollY === {scrolled_to}", timeout=1_000)
    except PlaywrightTimeout:
        pass  # the number read below says where the page stayed
    return waited, page.evaluate("window.scrollY"), page.url


def test_a_self_reloading_page_keeps_the_readers_place(live_server, seeded_demo, e2e_password):
    chromium_executable()
    lead = UserFactory(username="bench-lead", is_superuser=True)
    run = benchmark_run_create(agent=Agent.objects.get(slug="support_agent"), actor=lead)  # no worker: it stays queued
    run_url = f"{live_server.url}/admin/models_app/benchmarkrun/{run.pk}/change/"

    readings = []
    with chromium_page(height=300) as page:  # a short window makes the page long
        admin_login(page, live_server.url, username="bench-lead", password=e2e_password)
        page.goto(run_url)
        for _ in range(2):  # the first reload (20 s after the visit), then one at the page's pace (3 s)
            page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")  # to the bottom
            scrolled_to = page.evaluate("window.scrollY")
            readings.append((scrolled_to, *_reload_and_read(page, scrolled_to)))

    (scrolled_to, first_wait, first_scroll, first_url), (_, then_wait, then_scroll, then_url) = readings
    assert scrolled_to > 500, readings  # the page is longer than its window: there is a place to lose
    assert 19 < first_wait < 25 and 2.5 < then_wait < 8, readings  # 20 s to reach "stop reloading", then 3 s
    assert (first_scroll, then_scroll) == (scrolled_to, scrolled_to), readings
    assert first_url == then_url == run_url, readings
