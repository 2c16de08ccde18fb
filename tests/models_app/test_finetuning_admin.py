"""The fine-tuning admin through Django's test client: upload and create from the add page, the
buttons on a job's page (start, sync, cancel, submit), and what the page shows — status, events,
cost, the registered version and the provider's refusal."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from models_app.finetuning.models import FineTuningJob, TrainingFile
from models_app.finetuning.services import finetuning_job_create
from models_app.finetuning.training_files import training_file_upload
from models_app.registry.services import provider_account_upsert
from tests.factories import UserFactory
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, chat_lines, restart_simulator, wait_until


@pytest.fixture
def admin_client_for(client):
    def login(**options):
        user = UserFactory(**options)
        client.force_login(user)
        return client

    return login


def demo_upload() -> SimpleUploadedFile:
    return SimpleUploadedFile(DEMO_TRAINING_FILE.name, DEMO_TRAINING_FILE.read_bytes(), content_type="application/jsonl")


def press(client, job: FineTuningJob, action: str):
    return client.post(reverse("admin:models_app_finetuningjob_action", args=[job.pk, action]), follow=True)


def test_a_person_uploads_creates_starts_and_sees_the_registered_version(ft_world, admin_client_for) -> None:
    client = admin_client_for(username="root", is_superuser=True)
    add_url = reverse("admin:models_app_finetuningjob_add")
    assert client.get(add_url).status_code == 200
    response = client.post(add_url, {"agent": "support_agent", "training_upload": demo_upload(), "epochs": "1"}, follow=True)
    job = FineTuningJob.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:models_app_finetuningjob_change", args=[job.pk])
    assert job.status == "QUEUED" and job.created_by.username == "root"
    assert TrainingFile.objects.get().uploaded_by.username == "root"
    page = response.content.decode()
    assert 'data-job-action="start"' in page and 'data-job-action="cancel"' in page and 'name="_save"' not in page

    page = press(client, job, "start").content.decode()
    assert "Start training: job #" in page and "Running" in page
    wait_until(lambda: ft_world.simulator.state.get_job(job.provider_job_id).status(time.time()) == "SUCCESS",
               timeout=10, what="the simulated job to finish")
    page = press(client, job, "sync").content.decode()
    job.refresh_from_db()
    assert job.status == "SUCCESS" and job.model_version is not None
    assert job.model_version.model_id in page
    assert reverse("admin:models_app_modelversion_change", args=[job.model_version_id]) in page
    assert "$4.00 (charged)" in page
    assert "status-updated" in page and "train loss" in page  # events and checkpoints tables
    assert 'data-job-action="start"' not in page


def test_an_invalid_upload_shows_every_bad_line(ft_world, admin_client_for) -> None:
    client = admin_client_for(username="root", is_superuser=True)
    broken = SimpleUploadedFile("broken.jsonl", chat_lines(2) + b'{"messages": []}\n' + chat_lines(1))
    response = client.post(reverse("admin:models_app_finetuningjob_add"), {"agent": "support_agent", "training_upload": broken})
    assert response.status_code == 200
    page = response.content.decode()
    assert "line 3: &quot;messages&quot; is empty" in page
    assert not FineTuningJob.objects.exists() and not TrainingFile.objects.exists()


def test_the_training_file_page_uploads_through_the_service(ft_world, admin_client_for) -> None:
    client = admin_client_for(username="root", is_superuser=True)
    response = client.post(
        reverse("admin:models_app_trainingfile_add"),
        {"agent": "support_agent", "file": demo_upload(), "purpose": "training"}, follow=True,
    )
    training_file = TrainingFile.objects.get()
    assert training_file.line_count == 50
    assert f"50 samples at provider &#x27;sim-ft&#x27; as {training_file.provider_file_id}" in response.content.decode()


def test_the_providers_refusal_is_shown_on_the_job(ft_world, admin_client_for) -> None:
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    # A provider URL where nothing listens for fine-tuning: the simulator's 404 for an unknown route.
    provider_account_upsert(name="sim-ft", kind="simulator", base_url=ft_world.simulator.base_url + "/gone",
                            api_key_env="GENESIS_SIMULATOR_API_KEY")
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert job.status == "REFUSED"
    client = admin_client_for(username="root", is_superuser=True)
    page = client.get(reverse("admin:models_app_finetuningjob_change", args=[job.pk])).content.decode()
    assert "Refused by the provider" in page
    assert "HTTP 404" in page and "No route POST /gone/v1/fine_tuning/jobs" in page
    assert 'data-job-action="submit"' in page


def test_a_job_the_provider_refuses_at_creation_is_shown_as_a_refusal_not_created(ft_world, admin_client_for) -> None:
    client = admin_client_for(username="root", is_superuser=True)
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    restart_simulator(ft_world.simulator)  # the provider forgets the file
    response = client.post(reverse("admin:models_app_finetuningjob_add"),
                           {"agent": "support_agent", "training_file": training_file.pk}, follow=True)
    job = FineTuningJob.objects.get()
    assert job.status == "REFUSED"
    shown = [(message.level_tag, message.message) for message in response.context["messages"]]
    errors = [text for level, text in shown if level == "error"]
    assert len(errors) == 1 and not [text for level, text in shown if level == "success"]
    assert errors[0].startswith(f"Not created — the provider refused it: job #{job.pk} is refused;")
    assert "File not found" in errors[0] and "upload the file again" in errors[0]
    assert "Created:" not in response.content.decode()


def test_a_dataset_whose_audit_found_pii_is_refused_and_the_job_page_shows_the_audit(ft_world, admin_client_for) -> None:
    from audits.models import Dataset

    client = admin_client_for(username="root", is_superuser=True)
    pii = b"".join(
        b'{"messages": [{"role": "user", "content": "reach me at someone%d@example.com"}, '
        b'{"role": "assistant", "content": "Noted."}]}\n' % n for n in range(4)
    )
    add_url = reverse("admin:models_app_finetuningjob_add")
    response = client.post(add_url, {"agent": "support_agent", "training_upload": SimpleUploadedFile("pii.jsonl", pii)})
    page = response.content.decode()
    assert response.status_code == 200 and "found 4 PII occurrences (email 4)" in page and "Scrub (placeholders)" in page
    dataset = Dataset.objects.get()  # the audit made on the way is kept
    assert not FineTuningJob.objects.exists() and not TrainingFile.objects.exists()
    response = client.post(add_url, {"agent": "support_agent", "training_dataset": dataset.pk,
                                     "audit_override_reason": "synthetic addresses only"}, follow=True)
    job = FineTuningJob.objects.get()
    assert job.audit_override_reason == "synthetic addresses only" and job.status == "QUEUED"
    page = response.content.decode()
    assert reverse("admin:audits_dataset_change", args=[dataset.pk]) in page
    assert f"dataset #{dataset.pk}, audit #{dataset.latest_audit_id}" in page
    assert "blocking: 4 PII occurrences (email 4)" in page and "synthetic addresses only" in page


def test_a_dataset_whose_file_is_gone_is_refused_with_the_reason_not_a_500(ft_world, admin_client_for) -> None:
    """The restore drill (docs/runbooks/backup-restore.md): MEDIA_ROOT restored from an older backup than the
    database leaves dataset rows without their file. Choosing one for a job answered 500 (FileNotFoundError)."""
    from audits.models import Dataset
    from audits.services import dataset_file_path

    client = admin_client_for(username="root", is_superuser=True)
    add_url = reverse("admin:models_app_finetuningjob_add")
    client.post(add_url, {"agent": "support_agent", "training_upload": demo_upload(), "epochs": "1"})
    dataset = Dataset.objects.get()  # the audit made on the way is kept
    FineTuningJob.objects.all().delete()
    TrainingFile.objects.all().delete()
    dataset_file_path(dataset=dataset).unlink()
    client.raise_request_exception = False
    response = client.post(add_url, {"agent": "support_agent", "training_dataset": dataset.pk, "epochs": "1"})
    assert response.status_code == 200
    page = response.content.decode()
    assert f"file of dataset #{dataset.pk} ({dataset.original_name}) cannot be read from MEDIA_ROOT" in page
    assert "backup-restore.md" in page
    assert not FineTuningJob.objects.exists() and not TrainingFile.objects.exists()


def test_buttons_need_the_change_permission(ft_world, admin_client_for) -> None:
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    client = admin_client_for(username="viewer")
    viewer = get_user_model().objects.get(username="viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_finetuningjob"))
    page = client.get(reverse("admin:models_app_finetuningjob_change", args=[job.pk])).content.decode()
    assert "data-job-action" not in page
    response = client.post(reverse("admin:models_app_finetuningjob_action", args=[job.pk, "cancel"]))
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == "QUEUED"
    assert client.get(reverse("admin:models_app_finetuningjob_action", args=[job.pk, "cancel"])).status_code == 405


def lost_creation_with_orphan(world) -> tuple[FineTuningJob, str]:
    """A job whose creation met a 500 (NOT_CREATED), and the job the provider made for it anyway
    (created with the real SDK straight at the simulator)."""
    from models_app.registry.gateway import provider_for

    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    world.simulator.state.queue_faults(500)
    job = finetuning_job_create(agent=world.agent, training_file=training_file, auto_start=True)
    assert job.status == "NOT_CREATED"
    orphan = provider_for(world.provider).create_job(
        base_model=job.base_model, training_file_ids=[training_file.provider_file_id], auto_start=True,
        hyperparameters=job.hyperparameters,
    )
    return job, orphan.id


def test_a_person_adopts_the_orphan_from_the_jobs_page(ft_world, admin_client_for) -> None:
    job, orphan = lost_creation_with_orphan(ft_world)
    client = admin_client_for(username="root", is_superuser=True)
    page = client.get(reverse("admin:models_app_finetuningjob_change", args=[job.pk])).content.decode()
    adopt_url = reverse("admin:models_app_finetuningjob_adopt", args=[job.pk])
    assert f'href="{adopt_url}" data-job-action="adopt"' in page and "may have created the job anyway" in page

    page = client.get(adopt_url).content.decode()
    assert f'data-provider-job="{orphan}"' in page and "matches" in page
    assert f'value="{orphan}"' in page  # the one matching job is filled in
    response = client.post(adopt_url, {"provider_job_id": orphan, "reason": "the 500 hid it"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:models_app_finetuningjob_change", args=[job.pk])
    assert f"Adopted provider job {orphan}: job #{job.pk} is" in response.content.decode()
    job.refresh_from_db()
    assert job.provider_job_id == orphan and job.status != "NOT_CREATED" and job.last_error == ""
    assert job.history.first().history_user.username == "root"
    assert 'data-job-action="adopt"' not in response.content.decode()  # nothing left to adopt

    # A second look: the provider job is tracked now, so it is no longer offered, and a second row cannot take it.
    response = client.post(adopt_url, {"provider_job_id": orphan}, follow=True)
    assert f"already tracks provider job {orphan}" in response.content.decode()


def test_an_unknown_provider_job_is_refused_on_the_adopt_page(ft_world, admin_client_for) -> None:
    job, _ = lost_creation_with_orphan(ft_world)
    client = admin_client_for(username="root", is_superuser=True)
    response = client.post(reverse("admin:models_app_finetuningjob_adopt", args=[job.pk]), {"provider_job_id": "job-nope"})
    assert response.status_code == 200
    assert "sim-ft&#x27; has no fine-tuning job &#x27;job-nope&#x27;" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "NOT_CREATED" and job.provider_job_id == ""


def test_the_adopt_page_needs_the_change_permission(ft_world, admin_client_for) -> None:
    job, orphan = lost_creation_with_orphan(ft_world)
    client = admin_client_for(username="viewer")
    viewer = get_user_model().objects.get(username="viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_finetuningjob"))
    page = client.get(reverse("admin:models_app_finetuningjob_change", args=[job.pk])).content.decode()
    assert 'data-job-action="adopt"' not in page
    adopt_url = reverse("admin:models_app_finetuningjob_adopt", args=[job.pk])
    assert client.get(adopt_url).status_code == 403
    assert client.post(adopt_url, {"provider_job_id": orphan}).status_code == 403
    job.refresh_from_db()
    assert job.provider_job_id == ""


def test_the_job_list_shows_no_estimate_for_a_job_that_will_never_be_charged(ft_world, admin_client_for, scripted_provider) -> None:
    from models_app.finetuning.services import finetuning_job_cancel

    client = admin_client_for(username="root", is_superuser=True)
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    queued = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    cancelled = finetuning_job_cancel(job=finetuning_job_create(agent=ft_world.agent, training_file=training_file, submit=False))
    scripted_provider.answer = lambda method, path: (410, {"message": "Fine-tuning API is deprecated"})
    provider_account_upsert(name="sim-ft", kind="simulator", base_url=scripted_provider.url, api_key_env="GENESIS_SIMULATOR_API_KEY")
    refused = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert (queued.status, cancelled.status, refused.status) == ("QUEUED", "CANCELLED", "REFUSED")
    assert cancelled.estimated_cost_usd and refused.estimated_cost_usd and refused.cost_usd is None
    page = client.get(reverse("admin:models_app_finetuningjob_changelist")).content.decode()
    assert "$4.00 (reported, not yet charged)" in page  # the queued job: the provider's figure
    assert "— (cancelled, not charged)" in page and "— (refused by the provider, not charged)" in page
    assert "(estimate)" not in page  # neither will ever be charged


def test_a_cancelled_job_shows_the_cost_its_provider_reported_as_not_on_the_ledger(ft_world, admin_client_for) -> None:
    from costs.budgeting import format_usd
    from costs.models import CostEntry
    from models_app.finetuning.services import finetuning_job_cancel, finetuning_job_start, finetuning_job_sync
    from models_app.management.commands.fine_tune import job_cost_text

    client = admin_client_for(username="root", is_superuser=True)
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    job = finetuning_job_start(job=finetuning_job_create(agent=ft_world.agent, training_file=training_file))
    finetuning_job_cancel(job=job)
    job = wait_until(lambda: (synced := finetuning_job_sync(job=job)).status == "CANCELLED" and synced,
                     timeout=5, what="the job to be cancelled")
    assert job.cost_usd is not None and job.cost_recorded_at is None  # the simulator reports a cost for every job
    assert not CostEntry.objects.exists()  # and only a SUCCESS is charged
    shown = format_usd(job.cost_usd)
    assert job_cost_text(job) == f"{shown} reported by the provider (cancelled; not on the ledger)"
    page = client.get(reverse("admin:models_app_finetuningjob_changelist")).content.decode()
    assert f"{shown} (reported by the provider; cancelled, not on the ledger)" in page
    assert "not charged" not in page and "(estimate)" not in page
