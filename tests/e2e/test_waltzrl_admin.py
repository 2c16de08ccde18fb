"""A person prepares WaltzRL data in the admin, in headless Chromium with a real Celery worker and the
simulator over HTTP: starts a build from the built-in sets, watches it finish, reads the judge/detector
agreement and the cost, and starts the Stage-1 fine-tuning job from the build's page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.files.storage import default_storage

from audits.models import Dataset
from models_app.finetuning.models import FineTuningJob
from safety.models import WaltzBuild
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.factories import UserFactory
from tests.models_app.conftest import point_demo_provider_at, simulator_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

BUILD_WAIT_MS = 90_000  # the worker answers, judges and audits; the page refreshes itself after 20 s, then every 2 s


@pytest.fixture
def dataset_files() -> Iterator[None]:
    yield
    for name in Dataset.objects.values_list("file", flat=True):
        default_storage.delete(name)


def test_a_build_is_started_read_and_fine_tuned_from_the_admin(
    live_server, seeded_demo, simulator_factory, celery_worker, dataset_files, e2e_password, tmp_path  # noqa: F811
):
    chromium_executable()
    point_demo_provider_at(simulator_factory(), rate_limit_per_minute=60_000, max_concurrency=4)
    UserFactory(username="safety-lead", is_superuser=True)

    with chromium_page() as page:
        admin_login(page, live_server.url, username="safety-lead", password=e2e_password)
        page.goto(f"{live_server.url}/admin/safety/waltzbuild/add/")
        page.select_option("#id_agent", label="support_agent")
        page.fill("#id_target", "40")
        page.click("input[type=submit][value='Check the budget and start']")
        page.wait_for_url("**/admin/safety/waltzbuild/*/change/")
        page.locator("#card-agreement").wait_for(timeout=BUILD_WAIT_MS)
        page.screenshot(path=str(tmp_path / "1-built.png"), full_page=True)
        status = page.inner_text("#build-status")
        agreement = page.inner_text("#card-agreement")
        cost = page.inner_text("#card-cost")
        files = page.inner_text("#build-files")
        page.click("input[type=submit][value='Fine-tune the feedback agent (Stage 1)']")
        page.locator("text=Stage-1 fine-tuning job #").first.wait_for()
        after = page.content()

    build = WaltzBuild.objects.get()
    assert build.status == "succeeded" and status.startswith("succeeded")
    assert f"{build.report['agreement']['agree']} / {build.report['agreement']['judged']}" in agreement
    assert f"${build.cost_usd}" in cost and build.cost_usd > 0
    assert "feedback_agent" in files and "conversation_agent" in files
    job = FineTuningJob.objects.get()
    assert build.finetuning_job == job and job.created_by.username == "safety-lead"
    assert f"Stage-1 fine-tuning job #{job.pk}" in after and "within the budget" in after
