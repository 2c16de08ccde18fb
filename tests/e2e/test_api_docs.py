"""/api/v1/docs works offline (issue 18, finding 10): Swagger UI's files come from the app itself
(`ninja` in INSTALLED_APPS), not a CDN. Every request the page makes to another host is refused, as
it would fail without internet, and the operations must still be listed."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import chromium_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_api_docs_list_the_operations_without_internet(live_server):
    own_host = urlsplit(live_server.url).netloc
    refused: list[str] = []

    def only_our_server(route):
        if urlsplit(route.request.url).netloc == own_host:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with chromium_page() as page:
        page.route("**/*", only_our_server)
        page.goto(f"{live_server.url}/api/v1/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = {element.inner_text().replace("\u200b", "") for element in page.query_selector_all(".opblock-summary-path")}
    assert refused == []
    assert {"/api/v1/route", "/api/v1/outcomes", "/api/v1/costs/summary", "/api/v1/audits/datasets"} <= paths
