"""A person audits a training set in the admin, in headless Chromium with a real Celery worker: uploads
a JSONL file, watches the audit finish, reads the PII counts (masked samples only), presses "Scrub
(placeholders)" and lands on the scrubbed copy, whose own audit finds no PII."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage

from audits.models import Dataset, DatasetOrigin
from audits.pii import PII_TYPES
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.e2e

AUDIT_WAIT_MS = 45_000  # a worker picks the audit up; the page refreshes itself after 20 s, then every 2 s


@pytest.fixture
def dataset_files() -> Iterator[None]:
    """Web server and worker share the configured MEDIA_ROOT; remove what the test stored there."""
    yield
    for name in Dataset.objects.values_list("file", flat=True):
        default_storage.delete(name)


def test_upload_audit_and_scrub_in_the_admin(live_server, celery_worker, dataset_files, e2e_password, tmp_path):
    chromium_executable()  # skip (or fail under GENESIS_REQUIRE_SERVICES=1) before building anything
    curator = UserFactory(username="curator")
    curator.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="audits", codename__in=["view_dataset", "add_dataset", "add_auditrun", "view_auditrun", "download_dataset"]))
    AgentFactory(slug="support_agent")
    lines = [chat_line(f"Ticket {index}: {sentence_with(value)}") for index, values in enumerate(PLANTED.values()) for value in values]
    source = write_lines(tmp_path / "support_tickets.jsonl", lines)

    with chromium_page() as page:
        admin_login(page, live_server.url, username="curator", password=e2e_password)
        page.click("text=Datasets")
        page.click("text=Add dataset")
        page.set_input_files("#id_file", str(source))
        page.select_option("#id_agent", label="support_agent")
        page.click("input[type=submit][value='Upload and audit']")
        page.wait_for_url("**/admin/audits/dataset/*/change/")
        uploaded_url = page.url
        page.locator("[data-testid=pii-total]").wait_for(timeout=AUDIT_WAIT_MS)
        page.screenshot(path=str(tmp_path / "1-audited.png"), full_page=True)
        audit_status = page.get_attribute("[data-testid=audit-status]", "data-status")
        pii_total = page.inner_text("[data-testid=pii-total]")
        counts = {t: page.inner_text(f"tr[data-pii-type={t}] td.count") for t in PII_TYPES}
        email_row = page.inner_text("tr[data-pii-type=email]")
        audited_html = page.content()

        page.click("input[data-action=scrub-placeholder]")
        page.wait_for_url(lambda url: url != uploaded_url and url.endswith("/change/"))
        scrubbed_url = page.url
        page.locator("[data-testid=pii-total]").wait_for(timeout=AUDIT_WAIT_MS)
        page.screenshot(path=str(tmp_path / "2-scrubbed.png"), full_page=True)
        scrubbed_total = page.inner_text("[data-testid=pii-total]")
        scrubbed_counts = {t: page.inner_text(f"tr[data-pii-type={t}] td.count") for t in PII_TYPES}
        parent_link = page.inner_text("[data-testid=parent-link]")
        scrubbed_status = page.get_attribute("[data-testid=dataset-status]", "data-status")
        with page.expect_download() as download:
            page.click("#download-dataset")
        downloaded = download.value.path().read_text()

    assert audit_status == "succeeded"
    assert pii_total == str(sum(len(values) for values in PLANTED.values()))
    assert counts == {t: str(len(PLANTED[t])) for t in PII_TYPES}
    assert "j***@e***.com" in email_row and "(line 1)" in email_row
    for values in PLANTED.values():
        for value in values:
            assert value.replace("&", "&amp;").replace("'", "&#x27;") not in audited_html and value not in audited_html

    original = Dataset.objects.get(origin=DatasetOrigin.UPLOAD)
    scrubbed = Dataset.objects.get(origin=DatasetOrigin.SCRUB)
    assert scrubbed_url.endswith(f"/admin/audits/dataset/{scrubbed.pk}/change/")
    assert (scrubbed.parent_id, scrubbed.uploaded_by.username, original.agent.slug) == (original.pk, "curator", "support_agent")
    assert scrubbed_status == "ready" and parent_link == f"#{original.pk} support_tickets.jsonl"
    assert scrubbed_total == "0" and scrubbed_counts == dict.fromkeys(PII_TYPES, "0")
    assert "[EMAIL]" in downloaded and "john.doe@example.com" not in downloaded
    assert len(downloaded.splitlines()) == len(lines)
