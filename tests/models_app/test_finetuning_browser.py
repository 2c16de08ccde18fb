"""The fine-tuning flow a person follows in the admin, in headless Chromium: upload a training file
for support_agent and create the job, start it, sync it once the provider is done, and read the
registered `ft:` version and its cost on the job's page. (Beat does the syncing in `make run`; the
beat and worker path is tested in test_finetuning_worker.py.)"""

from __future__ import annotations

import time

import pytest

from costs.models import CostEntry
from models_app.finetuning.models import FineTuningJob
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.factories import UserFactory
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery staple"  # tests/factories.py's UserFactory


def test_a_person_trains_a_model_from_the_admin(live_server, ft_world, tmp_path) -> None:
    chromium_executable()  # skip (or fail under GENESIS_REQUIRE_SERVICES=1) before building anything
    UserFactory(username="trainer", is_superuser=True)
    simulator = ft_world.simulator

    with chromium_page() as page:
        admin_login(page, live_server.url, username="trainer", password=PASSWORD)
        page.click("text=Fine-tuning jobs")
        page.click("text=Add fine-tuning job")
        page.select_option("#id_agent", "support_agent")
        page.set_input_files("#id_training_upload", str(DEMO_TRAINING_FILE))
        page.fill("#id_epochs", "2")
        page.click("input[type=submit]")
        page.wait_for_selector("[data-job-action=start]")
        created_message = page.inner_text("ul.messagelist")
        provider_job_id = page.inner_text(".field-provider_job_id .readonly").strip()

        page.click("[data-job-action=start]")
        page.wait_for_selector(".field-status_display >> text=Running")
        wait_until(lambda: simulator.state.get_job(provider_job_id).status(time.time()) == "SUCCESS",
                   timeout=10, what="the simulated job to finish")
        page.click("[data-job-action=sync]")
        page.wait_for_selector(".field-status_display >> text=Success")
        page.screenshot(path=str(tmp_path / "fine-tuning-job.png"), full_page=True)
        version_text = page.inner_text(".field-model_version_link .readonly")
        cost_text = page.inner_text(".field-cost_display .readonly")
        event_rows = page.locator(".field-events_table tr").count()
        buttons = page.eval_on_selector_all("[data-job-action]", "nodes => nodes.map(n => n.dataset.jobAction)")

    job = FineTuningJob.objects.select_related("model_version").get()
    assert "Created: job #" in created_message
    assert job.provider_job_id == provider_job_id and job.hyperparameters == {"epochs": 2.0, "learning_rate": 0.0001}
    assert version_text == f"{job.model_version.model_id} (Registered)" and job.model_version.model_id.startswith("ft:")
    assert cost_text == "$4.00 (charged)"  # through the money helper
    assert CostEntry.objects.get(idempotency_key=f"finetune:{job.pk}").amount_usd == job.cost_usd
    assert event_rows == 1 + 4  # header + QUEUED, VALIDATED, RUNNING, SUCCESS
    assert buttons == ["sync"]  # nothing left to start or cancel


def test_a_person_adopts_the_job_a_lost_creation_left_at_the_provider(live_server, ft_world) -> None:
    from models_app.finetuning.services import finetuning_job_create
    from models_app.finetuning.training_files import training_file_upload
    from models_app.registry.gateway import provider_for

    chromium_executable()
    UserFactory(username="trainer", is_superuser=True)
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    ft_world.simulator.state.queue_faults(500)  # the creation's answer is lost…
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file, auto_start=True)
    orphan = provider_for(ft_world.provider).create_job(  # …but the provider made the job
        base_model=job.base_model, training_file_ids=[training_file.provider_file_id], auto_start=True,
        hyperparameters=job.hyperparameters,
    ).id

    with chromium_page() as page:
        admin_login(page, live_server.url, username="trainer", password=PASSWORD)
        page.goto(f"{live_server.url}/admin/models_app/finetuningjob/{job.pk}/change/")
        page.click("[data-job-action=adopt]")
        page.click(f"[data-adopt='{orphan}']")
        page.wait_for_selector("ul.messagelist >> text=Adopted provider job")
        assert page.inner_text(".field-provider_job_id .readonly").strip() == orphan
        wait_until(lambda: ft_world.simulator.state.get_job(orphan).status(time.time()) == "SUCCESS",
                   timeout=10, what="the adopted job to finish")
        page.click("[data-job-action=sync]")
        page.wait_for_selector(".field-status_display >> text=Success")
        cost_text = page.inner_text(".field-cost_display .readonly")

    assert cost_text == "$4.00 (charged)"  # through the money helper
    assert CostEntry.objects.filter(idempotency_key=f"finetune:{job.pk}").count() == 1
    assert FineTuningJob.objects.get(pk=job.pk).history.filter(history_change_reason__startswith="adopted").exists()
