"""Fine-tuning services over real HTTP: the real `mistralai` SDK (1.12.4) against the simulator for
every job route (create, list, get, start, cancel), the budget check, registration on SUCCESS exactly
once with the cost on the ledger, and a provider that refuses."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from audits import services as audit_services
from audits.models import Dataset
from costs.models import BudgetOverride, CostEntry, CostHold
from costs.services import budget_upsert, cost_record
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from models_app.finetuning.adoption import finetuning_adoption_candidates, finetuning_job_adopt
from models_app.finetuning.models import FineTuningJob, TrainingFile
from models_app.finetuning.provider_calls import ProviderUnavailable
from models_app.finetuning.selectors import jobs_to_sync
from models_app.finetuning.services import (
    finetuning_job_cancel,
    finetuning_job_create,
    finetuning_job_start,
    finetuning_job_submit,
    finetuning_job_sync,
    finetuning_provider_jobs,
)
from models_app.finetuning.tasks import sync_fine_tuning_job
from models_app.finetuning.training_files import TrainingFileInvalid, training_file_from_dataset, training_file_upload
from models_app.providers.retry import RetryPolicy
from models_app.registry.gateway import provider_for
from models_app.registry.models import ModelVersion
from models_app.registry.services import provider_account_upsert
from tests.factories import UserFactory
from tests.http_servers import QuietHandler, serving, url_of
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import (
    DEMO_TRAINING_FILE,
    DEMO_VALIDATION_FILE,
    chat_lines,
    restart_simulator,
    wait_until,
)

FAST_RETRY = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, max_delay_seconds=0.05)


def upload_demo(world, **options: Any) -> TrainingFile:
    with DEMO_TRAINING_FILE.open("rb") as stream:
        return training_file_upload(agent=world.agent, content=stream, filename=DEMO_TRAINING_FILE.name, **options)


def started_job(world, **options: Any) -> FineTuningJob:
    job = finetuning_job_create(agent=world.agent, training_file=upload_demo(world), **options)
    return finetuning_job_start(job=job)


def sync_until(job: FineTuningJob, status: str, *, timeout: float = 5.0) -> FineTuningJob:
    return wait_until(
        lambda: (synced := finetuning_job_sync(job=job)).status == status and synced,
        timeout=timeout, interval=0.1, what=f"job #{job.pk} to be {status}",
    )


# --- training files -----------------------------------------------------------------------------


def test_upload_checks_the_file_and_stores_what_identifies_it(ft_world) -> None:
    training_file = upload_demo(ft_world)
    content = DEMO_TRAINING_FILE.read_bytes()
    assert training_file.line_count == 50
    assert training_file.size_bytes == len(content)
    assert training_file.provider == ft_world.provider and training_file.provider_file_id
    assert training_file.estimated_tokens == sum(len(line.strip()) for line in content.decode().splitlines()) // 4
    # The provider holds it, with the same line count.
    assert ft_world.simulator.state.get_file(training_file.provider_file_id).num_lines == 50


def test_uploading_the_same_bytes_again_reuses_the_upload(ft_world) -> None:
    first = upload_demo(ft_world)
    second = upload_demo(ft_world)
    assert second.pk == first.pk
    assert len([r for r in ft_world.requests("/v1/files") if r[0] == "POST"]) == 1


def test_an_invalid_file_is_refused_with_line_numbers_before_the_provider_sees_it(ft_world) -> None:
    content = chat_lines(3) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n' + b"not json\n" + chat_lines(2)
    with pytest.raises(TrainingFileInvalid) as refused:
        training_file_upload(agent=ft_world.agent, content=io.BytesIO(content), filename="broken.jsonl")
    assert [line for line, _ in refused.value.problems] == [4, 5]
    assert refused.value.invalid_lines == 2
    assert "broken.jsonl: 2 of 7 lines" in refused.value.message
    assert "line 4:" in refused.value.message and "line 5: invalid JSON" in refused.value.message
    assert refused.value.message.endswith(". Fix them and upload again")  # where to read them is the surface's to say
    assert ft_world.requests("/v1/files") == []
    assert not TrainingFile.objects.exists()


def test_an_invalid_audited_dataset_points_to_its_audit_not_to_a_command(ft_world) -> None:
    root = UserFactory(username="root", is_superuser=True)
    content = chat_lines(2) + b'{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "Hi."}]}\n'
    dataset = audit_services.dataset_upload(
        content=SimpleUploadedFile("blank.jsonl", content), original_name="blank.jsonl", agent=ft_world.agent, actor=root,
    )
    audit_services.audit_run_execute(run_id=dataset.latest_audit_id)
    dataset.refresh_from_db()
    with pytest.raises(TrainingFileInvalid) as refused:
        training_file_from_dataset(dataset=dataset, actor=root)
    assert refused.value.message == (
        "blank.jsonl: 1 of 3 lines is not a valid fine-tuning sample — line 3: messages[0] (user) needs non-empty "
        f"content. The audit of dataset #{dataset.pk} lists every problem; fix them and upload the file as a new dataset"
    )
    assert "manage.py" not in refused.value.message


def test_an_empty_file_is_refused(ft_world) -> None:
    with pytest.raises(TrainingFileInvalid, match="empty"):
        training_file_upload(agent=ft_world.agent, content=io.BytesIO(b""), filename="empty.jsonl")


# --- every job route through the services, with the real SDK -------------------------------------


def test_create_estimates_checks_the_budget_and_creates_the_job_at_the_provider(ft_world) -> None:
    training_file = upload_demo(ft_world)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file, hyperparameters={"epochs": 2})
    assert job.status == "QUEUED" and job.provider_job_id
    assert job.base_model == "open-mistral-7b"  # the baseline's
    # 2 epochs of ~9 500 tokens at $2 / 1M is far below the $4 minimum fee.
    assert job.estimated_cost_usd == Decimal("4")
    assert job.cost_usd == Decimal("4.0") and job.cost_currency == "USD"  # the provider's own figure
    remote = ft_world.simulator.state.get_job(job.provider_job_id)
    assert remote.training_file_ids == [training_file.provider_file_id]
    assert remote.hyperparameters["epochs"] == 2
    assert ("POST", "/v1/fine_tuning/jobs", 200) in ft_world.simulator.state.request_log


def test_list_get_start_and_cancel_go_to_the_provider(ft_world) -> None:
    training_file = upload_demo(ft_world)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    other = finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="second")

    # list: the provider's jobs, each matched with the row that tracks it
    listing = {item.snapshot.id: item.job for item in finetuning_provider_jobs(provider=ft_world.provider)}
    assert listing == {job.provider_job_id: job, other.provider_job_id: other}

    # get (sync): QUEUED → VALIDATED, with the provider's events
    job = sync_until(job, "VALIDATED")
    assert [event["data"]["status"] for event in job.events] == ["QUEUED", "VALIDATED"]
    assert job.last_synced_at is not None

    # start
    job = finetuning_job_start(job=job)
    assert job.status == "RUNNING" and job.started_at is not None
    assert ft_world.simulator.state.get_job(job.provider_job_id).started_at is not None

    # cancel: requested, then cancelled at the provider
    job = finetuning_job_cancel(job=job, reason="wrong data")
    assert job.status == "CANCELLATION_REQUESTED"
    job = sync_until(job, "CANCELLED")
    assert job.finished_at is not None and job.model_version is None
    assert not CostEntry.objects.filter(idempotency_key=f"finetune:{job.pk}").exists()
    routes = {(method, path) for method, path, status in ft_world.simulator.state.request_log if status == 200}
    jobs_path = "/v1/fine_tuning/jobs"
    assert {
        ("POST", jobs_path), ("GET", jobs_path), ("GET", f"{jobs_path}/{job.provider_job_id}"),
        ("POST", f"{jobs_path}/{job.provider_job_id}/start"), ("POST", f"{jobs_path}/{job.provider_job_id}/cancel"),
    } <= routes


def test_start_is_refused_in_a_state_that_cannot_start(ft_world) -> None:
    job = started_job(ft_world)
    with pytest.raises(Conflict, match="only a queued or validated job can be started"):
        finetuning_job_start(job=job)


def test_success_registers_the_fine_tuned_model_once_with_its_cost(ft_world, caplog, django_capture_on_commit_callbacks) -> None:
    import logging

    job = started_job(ft_world)
    with caplog.at_level(logging.INFO, logger="models_app.finetuning.services"), django_capture_on_commit_callbacks(execute=True):
        job = sync_until(job, "SUCCESS")
    version = job.model_version
    # The log says the result exists, naming the job, the model and its version (was: nothing of ours).
    assert [r.getMessage() for r in caplog.records if "succeeded" in r.getMessage()] == [
        f"fine-tuning job #{job.pk} succeeded: {job.fine_tuned_model} registered for {ft_world.agent.slug} as model version #{version.pk}"]
    assert version is not None
    assert (version.kind, version.status, version.agent, version.provider) == ("fine_tuned", "registered", ft_world.agent, ft_world.provider)
    assert version.model_id == job.fine_tuned_model and version.model_id.startswith("ft:open-mistral-7b:")
    assert f"job #{job.pk}" in version.reason
    entry = CostEntry.objects.get(idempotency_key=f"finetune:{job.pk}")
    assert (entry.amount_usd, entry.operation, entry.agent, entry.model) == (Decimal("4"), "fine_tuning", ft_world.agent, version.model_id)
    assert entry.source_object == job
    assert job.cost_recorded_at is not None and job.trained_tokens and job.checkpoints

    # Syncing again changes nothing: still one version, one entry, no new history row.
    history_rows = job.history.count()
    again = finetuning_job_sync(job=job)
    assert again.model_version_id == version.pk
    assert ModelVersion.objects.filter(agent=ft_world.agent, kind="fine_tuned").count() == 1
    assert CostEntry.objects.filter(operation="fine_tuning").count() == 1
    assert job.history.count() == history_rows
    assert job not in jobs_to_sync()


@pytest.mark.django_db(transaction=True)
def test_concurrent_syncs_register_the_model_once(ft_world) -> None:
    job = started_job(ft_world)
    wait_until(lambda: ft_world.simulator.state.get_job(job.provider_job_id).status(time.time()) == "SUCCESS",
               timeout=5, what="the simulated job to finish")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            barrier.wait()
            finetuning_job_sync(job=job)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    job = ft_world.job(job)
    assert job.status == "SUCCESS" and job.model_version is not None
    assert ModelVersion.objects.filter(agent=ft_world.agent, kind="fine_tuned").count() == 1
    assert CostEntry.objects.filter(idempotency_key=f"finetune:{job.pk}").count() == 1


def test_a_failed_job_registers_nothing(ft_world) -> None:
    job = started_job(ft_world, suffix="simulate-failure")
    job = sync_until(job, "FAILED")
    assert job.model_version is None and job.cost_recorded_at is None
    assert not CostEntry.objects.filter(operation="fine_tuning").exists()


def test_validation_file_is_sent_and_checkpoints_carry_validation_loss(ft_world) -> None:
    training_file = upload_demo(ft_world)
    with DEMO_VALIDATION_FILE.open("rb") as stream:
        validation_file = training_file_upload(agent=ft_world.agent, content=stream, filename="valid.jsonl", purpose="validation")
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file, validation_file=validation_file, auto_start=True)
    job = sync_until(job, "SUCCESS")
    assert ft_world.simulator.state.get_job(job.provider_job_id).validation_file_ids == [validation_file.provider_file_id]
    assert job.checkpoints and all(c["metrics"]["valid_loss"] is not None for c in job.checkpoints)


def test_bad_inputs_are_refused_before_anything_is_written(ft_world) -> None:
    training_file = upload_demo(ft_world)
    with pytest.raises(InvalidInput, match="give training_steps or epochs, not both"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, hyperparameters={"epochs": 1, "training_steps": 3})
    with pytest.raises(InvalidInput, match="'momentum' is not a fine-tuning hyperparameter"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, hyperparameters={"momentum": 0.9})
    with pytest.raises(InvalidInput, match="suffix"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="x" * 19)
    assert not FineTuningJob.objects.exists()


# --- money -----------------------------------------------------------------------------------------


def test_an_estimate_over_a_hard_budget_is_refused_and_an_override_is_recorded(ft_world) -> None:
    budget_upsert(name="support", amount_usd="5", agent=ft_world.agent, hard_limit=True)
    cost_record(agent=ft_world.agent, operation="manual", amount_usd="3", idempotency_key="test:spent-3")
    training_file = upload_demo(ft_world)
    with pytest.raises(Conflict, match="support"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert not FineTuningJob.objects.exists() and ft_world.simulator.state.list_jobs(model=None, status=None, suffix=None) == []

    person = UserFactory(username="lead")
    person.user_permissions.add(*Permission.objects.filter(
        codename__in=["add_finetuningjob", "add_trainingfile", "override_budget"]
    ))
    person = type(person).objects.get(pk=person.pk)
    job = finetuning_job_create(
        agent=ft_world.agent, training_file=training_file, actor=person, override_reason="launch needs it this week"
    )
    assert job.status == "QUEUED" and job.created_by == person
    assert job.budget_override_reason == "launch needs it this week"
    assert BudgetOverride.objects.get(agent=ft_world.agent).reason == "launch needs it this week"
    assert job.history.first().history_user == person


def test_a_job_holds_its_estimate_against_the_budget_until_it_ends(ft_world) -> None:
    """Jobs created one after another cannot together overspend a budget each alone fits in."""
    budget_upsert(name="support", amount_usd="9", agent=ft_world.agent, hard_limit=True)
    training_file = upload_demo(ft_world)
    succeeding = finetuning_job_start(job=finetuning_job_create(agent=ft_world.agent, training_file=training_file))
    failing = finetuning_job_start(
        job=finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="simulate-failure")
    )
    with pytest.raises(Conflict, match=r"\(\$0.00 spent, \$8.00 held by work still running\); this run needs an estimated \$4.00"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="third")
    assert FineTuningJob.objects.count() == 2 and CostHold.objects.count() == 2

    failing = sync_until(failing, "FAILED")  # ended without a cost: its hold goes
    assert CostHold.objects.get(source_id=str(failing.pk)).released_at is not None
    succeeding = sync_until(succeeding, "SUCCESS")  # its cost is on the ledger now, so its hold goes
    assert CostEntry.objects.get(idempotency_key=f"finetune:{succeeding.pk}").amount_usd == Decimal("4")
    assert CostHold.objects.get(source_id=str(succeeding.pk)).released_at is not None
    third = finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="third")  # $4 spent, $5 left
    assert CostHold.objects.get(source_id=str(third.pk)).released_at is None
    finetuning_job_cancel(job=third)  # asked of the provider; held until it says CANCELLED
    sync_until(third, "CANCELLED")
    assert CostHold.objects.get(source_id=str(third.pk)).released_at is not None


def test_a_missing_training_price_is_refused_with_what_to_do(ft_world) -> None:
    training_file = upload_demo(ft_world)
    with pytest.raises(Conflict, match="cannot estimate what fine-tuning mistral-large-latest costs"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, base_model="mistral-large-latest")


def test_a_person_without_permission_cannot_start_a_job(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    viewer = UserFactory(username="viewer")
    with pytest.raises(PermissionDenied, match="models_app.change_finetuningjob"):
        finetuning_job_start(job=job, actor=viewer)


# --- provider trouble ------------------------------------------------------------------------------


def test_a_transient_failure_is_retried_once_and_then_noted_not_raised(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    ft_world.simulator.state.queue_faults(500)
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert job.last_error == "" and job.status in ("QUEUED", "VALIDATED")
    get_statuses = [s for m, p, s in ft_world.simulator.state.request_log if m == "GET" and p.endswith(job.provider_job_id)]
    assert get_statuses == [500, 200]

    ft_world.simulator.state.queue_faults(503, 503)
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert "503" in job.last_error and job.provider_answer_status == 503
    assert job.status in ("QUEUED", "VALIDATED") and job in jobs_to_sync()

    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert job.last_error == "" and job.provider_answer == ""


def test_the_same_sync_failure_again_writes_no_new_history_row(ft_world) -> None:
    """Data-lifecycle review: every failed sync wrote a history row — beat syncs every minute, so a
    provider outage wrote 1 440 rows a day per job. A row is written when the error or the status changes."""
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    rows = job.history.count()
    for _ in range(3):
        ft_world.simulator.state.queue_faults(503, 503)
        job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert "503" in job.last_error and job.history.count() == rows + 1
    first_failure = job.last_error_at
    ft_world.simulator.state.queue_faults(502, 502)  # another error: recorded
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert "502" in job.last_error and job.history.count() == rows + 2
    assert job.last_error_at > first_failure  # the row still says when it last failed
    reasons = list(job.history.values_list("history_change_reason", flat=True)[:2])
    assert reasons == ["sync: failed (502)", "sync: failed (503)"]


def test_a_creation_is_asked_again_after_a_429_but_never_after_an_answer_that_may_hide_a_job(ft_world) -> None:
    training_file = upload_demo(ft_world)

    def creations() -> list[int]:
        return [s for m, p, s in ft_world.simulator.state.request_log if m == "POST" and p == "/v1/fine_tuning/jobs"]

    ft_world.simulator.state.queue_faults(429)  # refused before it was looked at: safe to ask again
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert job.status == "QUEUED" and creations() == [429, 200]

    # A 500 may come after the provider created the job: asked once, kept NOT_CREATED, with what to check.
    ft_world.simulator.state.queue_faults(500)
    second = finetuning_job_create(agent=ft_world.agent, training_file=training_file, suffix="second")
    assert second.status == "NOT_CREATED" and creations() == [429, 200, 500]
    assert "may have created the job anyway" in second.last_error and "provider's job list" in second.last_error


def test_a_provider_that_cannot_be_reached_on_start_says_so(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    ft_world.simulator.state.queue_faults(500, 500, 500)
    with pytest.raises(ProviderUnavailable, match="try again"):
        finetuning_job_start(job=job)
    assert "500" in ft_world.job(job).last_error


class RefusingProvider(ThreadingHTTPServer):
    """A tiny local stand-in for a Mistral whose fine-tuning routes are gone (404/410)."""

    daemon_threads = True
    ANSWER = {"object": "error", "message": "Fine-tuning API v1 is deprecated and has been removed; use the new API", "type": "gone", "code": "410"}

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RefusingHandler)

    @property
    def url(self) -> str:
        return url_of(self)


class RefusingHandler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = 410 if self.path.startswith("/v1/fine_tuning/jobs") else 404
        body = json.dumps(RefusingProvider.ANSWER if status == 410 else {"message": "not found"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815


@pytest.fixture
def refusing_provider() -> Iterator[RefusingProvider]:
    with serving(RefusingProvider()) as server:
        yield server


def point_provider_at(world, url: str) -> None:
    provider_account_upsert(name=world.provider.name, kind="simulator", base_url=url, api_key_env="GENESIS_SIMULATOR_API_KEY")


def test_a_refused_creation_keeps_the_job_with_the_providers_answer(ft_world, refusing_provider) -> None:
    training_file = upload_demo(ft_world)
    point_provider_at(ft_world, refusing_provider.url)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert job.pk and job.status == "REFUSED" and job.provider_job_id == ""
    assert job.provider_answer_status == 410
    assert "deprecated and has been removed" in job.provider_answer
    assert "refused to create a fine-tuning job (410)" in job.last_error
    # When the provider answers again, the same row can be submitted.
    point_provider_at(ft_world, ft_world.simulator.base_url)
    job = finetuning_job_submit(job=job)
    assert job.status == "QUEUED" and job.provider_job_id and job.provider_answer == ""


def test_a_provider_refusing_to_answer_for_a_job_marks_it_and_keeps_it(ft_world, refusing_provider) -> None:
    job = started_job(ft_world)
    point_provider_at(ft_world, refusing_provider.url)
    job = finetuning_job_sync(job=job)
    assert job.status == "REFUSED"
    assert job.provider_status == "RUNNING"  # what the provider last said, kept
    assert job.provider_answer_status == 410 and "deprecated" in job.provider_answer
    assert job.provider_job_id  # not lost: the id is there to follow it up elsewhere
    assert job not in jobs_to_sync()  # and not polled every minute for nothing
    assert "refused" in job.history.first().history_change_reason


@pytest.mark.parametrize("status", [404, 405, 410, 501])
def test_an_account_without_fine_tuning_routes_is_named_as_such_on_upload(ft_world, scripted_provider, status: int) -> None:
    scripted_provider.answer = lambda method, path: (status, {"detail": "Not Found"})
    point_provider_at(ft_world, scripted_provider.url)
    with pytest.raises(Conflict) as refused:
        upload_demo(ft_world)
    message = refused.value.message
    assert message.startswith(
        f"provider 'sim-ft' does not serve Mistral's fine-tuning routes: POST {scripted_provider.url}/v1/files answered "
        f"{status}: {{\"detail\": \"Not Found\"}}. Mistral retired its fine-tuning API in 2026")
    assert "refused the file" not in message  # the file is not what is wrong
    assert "use a provider account that still offers fine-tuning" in message
    assert f"upload {DEMO_TRAINING_FILE.name} there" in message
    assert not TrainingFile.objects.exists()


@pytest.mark.parametrize(("status", "answer"), [
    (501, {"detail": "Not Implemented"}),
    (400, {"object": "error", "message": "The fine-tuning API is deprecated", "type": "invalid_request_error"}),
    (422, {"detail": "fine-tuning jobs are no longer supported"}),
    (404, {"detail": "Not Found"}),
])
def test_a_permanent_refusal_on_sync_ends_the_jobs_tracking(ft_world, scripted_provider, status: int, answer: Any) -> None:
    job = started_job(ft_world)
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is None
    scripted_provider.answer = lambda method, path: (status, answer)
    point_provider_at(ft_world, scripted_provider.url)
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert job.status == "REFUSED" and job.provider_status == "RUNNING"
    assert job.provider_answer_status == status and json.dumps(answer) == job.provider_answer
    assert f"({status})" in job.last_error
    assert job not in jobs_to_sync()  # not polled every minute for a week
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


@pytest.mark.parametrize("status", [401, 429])
def test_a_refused_key_or_a_rate_limit_on_sync_keeps_the_job_followed(ft_world, scripted_provider, status: int) -> None:
    job = started_job(ft_world)
    scripted_provider.answer = lambda method, path: (status, {"detail": "not now"})
    point_provider_at(ft_world, scripted_provider.url)
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert job.status == "RUNNING" and f"({status})" in job.last_error
    assert job in jobs_to_sync()
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is None


def test_a_start_the_provider_does_not_implement_refuses_the_job(ft_world, scripted_provider) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    scripted_provider.answer = lambda method, path: (501, {"detail": "Not Implemented"})
    point_provider_at(ft_world, scripted_provider.url)
    with pytest.raises(Conflict, match=r"refused to start fine-tuning job .* \(501\)"):
        finetuning_job_start(job=job)
    job = ft_world.job(job)
    assert job.status == "REFUSED" and job.provider_answer_status == 501
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


def test_a_start_refused_because_the_job_already_moved_on_keeps_it_followed(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world), auto_start=True)
    assert job.status == "QUEUED"  # what creation said; the provider starts it by itself
    wait_until(lambda: ft_world.simulator.state.get_job(job.provider_job_id).status(time.time()) == "RUNNING",
               timeout=5, what="the simulated job to start")
    with pytest.raises(Conflict, match=r"\(409\)"):
        finetuning_job_start(job=job)
    job = ft_world.job(job)
    assert job.status == "QUEUED" and job.provider_answer_status == 409
    assert job in jobs_to_sync()  # the next sync finds it running, and later registers its model
    assert finetuning_job_sync(job=job).status == "RUNNING"


@pytest.mark.parametrize(("status", "answer"), [
    (400, {"object": "error", "message": "Job cannot be cancelled in its current state", "type": "invalid_request_error"}),
    (422, {"detail": "Job cannot be cancelled in its current state"}),
])
def test_a_cancel_refused_while_the_job_runs_keeps_it_followed_with_its_hold(
    ft_world, scripted_provider, status: int, answer: Any
) -> None:
    job = started_job(ft_world)
    assert job.status == "RUNNING"
    scripted_provider.answer = lambda method, path: (status, answer)
    point_provider_at(ft_world, scripted_provider.url)
    with pytest.raises(Conflict, match=rf"refused to cancel fine-tuning job .* \({status}\)") as refused:
        finetuning_job_cancel(job=job)
    assert "cannot be cancelled in its current state" in refused.value.message  # the provider's answer, shown
    job = ft_world.job(job)
    assert job.status == "RUNNING" and job.provider_answer_status == status
    assert f"({status})" in job.last_error and "cannot be cancelled" in job.provider_answer
    assert job in jobs_to_sync()
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is None
    # The next sync asks where the job is; it is still training at the provider.
    point_provider_at(ft_world, ft_world.simulator.base_url)
    assert finetuning_job_sync(job=job).status == "RUNNING"


@pytest.mark.parametrize("status", [404, 405, 410, 501])
def test_a_cancel_on_a_route_the_provider_does_not_serve_ends_the_jobs_tracking(ft_world, scripted_provider, status: int) -> None:
    job = started_job(ft_world)
    scripted_provider.answer = lambda method, path: (status, {"detail": "Not Found"})
    point_provider_at(ft_world, scripted_provider.url)
    with pytest.raises(Conflict):
        finetuning_job_cancel(job=job)
    job = ft_world.job(job)
    assert job.status == "REFUSED" and job not in jobs_to_sync()
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


# --- a provider that forgets its files and jobs, or hands their ids out again -----------------------


def test_a_file_id_the_provider_hands_out_again_is_not_taken_for_the_earlier_file(ft_world) -> None:
    earlier = upload_demo(ft_world)
    restart_simulator(ft_world.simulator, reuse_ids=True)
    with pytest.raises(Conflict) as refused:
        training_file_upload(agent=ft_world.agent, content=io.BytesIO(chat_lines(5)), filename="other.jsonl")
    message = refused.value.message
    assert f"gave it the file id {earlier.provider_file_id}" in message
    assert "other.jsonl (support_agent, training)" in message
    assert f"training file #{earlier.pk} ({DEMO_TRAINING_FILE.name}, support_agent, training" in message
    assert list(TrainingFile.objects.all()) == [earlier]


def test_an_earlier_upload_the_provider_lost_is_uploaded_again(ft_world) -> None:
    earlier = upload_demo(ft_world)
    restart_simulator(ft_world.simulator)
    again = upload_demo(ft_world)
    assert again.pk != earlier.pk and again.provider_file_id != earlier.provider_file_id
    assert again.sha256 == earlier.sha256
    assert ft_world.simulator.state.get_file(again.provider_file_id).num_lines == 50
    job = finetuning_job_create(agent=ft_world.agent, training_file=again)
    assert job.status == "QUEUED"


def test_a_job_on_a_file_the_provider_lost_is_refused_saying_to_upload_it_again(ft_world) -> None:
    training_file = upload_demo(ft_world)
    restart_simulator(ft_world.simulator)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    assert job.status == "REFUSED" and "File not found" in job.provider_answer
    assert f"no longer has {DEMO_TRAINING_FILE.name} (training file #{training_file.pk}" in job.last_error
    assert "upload the file again" in job.last_error
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


def test_a_job_id_the_provider_hands_out_again_is_refused_and_holds_nothing(ft_world) -> None:
    first = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    restart_simulator(ft_world.simulator, reuse_ids=True)
    second = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    assert second.status == "REFUSED" and second.provider_job_id == ""
    assert f"answered with job id {first.provider_job_id}, which job #{first.pk} (QUEUED) already tracks" in second.last_error
    assert CostHold.objects.get(source_id=str(second.pk)).released_at is not None
    assert ft_world.job(first).provider_job_id == first.provider_job_id


def test_a_job_whose_id_the_provider_gave_another_job_is_refused_on_sync(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world), auto_start=True)
    restart_simulator(ft_world.simulator, reuse_ids=True)
    state = ft_world.simulator.state
    state.upload_file(filename="first.jsonl", purpose="fine-tune", content=chat_lines(3, prefix="a"))
    other = state.upload_file(filename="other.jsonl", purpose="fine-tune", content=chat_lines(4, prefix="b"))
    impostor = state.create_job({"model": "open-mistral-7b", "training_files": [{"file_id": other.id}]})
    assert impostor.id == job.provider_job_id  # the provider re-used the id
    job = finetuning_job_sync(job=job)
    assert job.status == "REFUSED" and job.fine_tuned_model == "" and job.model_version is None
    assert f"now trains on {other.id}" in job.last_error and "re-used the job id" in job.last_error
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


def test_a_job_the_provider_forgot_is_refused_on_sync_and_releases_its_hold(ft_world) -> None:
    job = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world))
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is None
    restart_simulator(ft_world.simulator)
    job = finetuning_job_sync(job=job, retry_policy=FAST_RETRY)
    assert job.status == "REFUSED" and "Job not found" in job.provider_answer
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None


# --- the training-data audit gate ---------------------------------------------------------------


PII_LINES = b"".join(
    json.dumps({"messages": [{"role": "user", "content": f"Mail me at person{n}@example.com please ({n})"},
                             {"role": "assistant", "content": f"Will do, case {n} noted."}]}).encode() + b"\n"
    for n in range(6)
)


def test_a_file_whose_audit_found_pii_is_refused_before_it_reaches_the_provider(ft_world) -> None:
    with pytest.raises(Conflict) as refused:
        training_file_upload(agent=ft_world.agent, content=io.BytesIO(PII_LINES), filename="pii.jsonl")
    assert refused.value.code == "audit_findings"
    message = refused.value.message
    assert "pii.jsonl: its audit (dataset #" in message and "found 6 PII occurrences (email 6)" in message
    assert "Scrub (placeholders)" in message and "audit_dataset pii.jsonl --scrub OUT" in message
    assert "models_app.override_training_audit" in message
    assert ft_world.requests("/v1/files") == [] and not TrainingFile.objects.exists()
    # The audit was kept, so the person can read it and scrub the dataset in the admin.
    assert Dataset.objects.get().latest_audit.pii_total == 6


def test_an_audited_dataset_with_pii_is_refused_and_its_scrubbed_copy_is_not(ft_world) -> None:
    from audits.report import audit_file
    from audits.scrub import scrub_file
    from audits.services import dataset_record_audit

    source, scrubbed = DEMO_TRAINING_FILE.parent / "pii_test.jsonl", DEMO_TRAINING_FILE.parent / "pii_test_scrubbed.jsonl"
    try:
        source.write_bytes(PII_LINES)
        dataset = Dataset.objects.get(audit_runs=dataset_record_audit(path=source, report=audit_file(source), agent=ft_world.agent))
        with pytest.raises(Conflict, match="found 6 PII occurrences"):
            training_file_from_dataset(dataset=dataset)
        scrub_file(source=source, destination=scrubbed, mode="placeholder")
        clean = Dataset.objects.get(audit_runs=dataset_record_audit(path=scrubbed, report=audit_file(scrubbed), agent=ft_world.agent))
        training_file = training_file_from_dataset(dataset=clean)
    finally:
        source.unlink(missing_ok=True)
        scrubbed.unlink(missing_ok=True)
    assert training_file.dataset == clean
    assert finetuning_job_create(agent=ft_world.agent, training_file=training_file).status == "QUEUED"


def test_an_audit_override_needs_the_permission_and_is_recorded_on_the_job(ft_world) -> None:
    person = UserFactory(username="lead")
    person.user_permissions.add(*Permission.objects.filter(codename__in=["add_trainingfile", "add_finetuningjob"]))
    upload = dict(agent=ft_world.agent, filename="pii.jsonl", audit_override_reason="synthetic addresses")
    with pytest.raises(PermissionDenied, match="models_app.override_training_audit"):
        training_file_upload(content=io.BytesIO(PII_LINES), actor=person, **upload)
    with pytest.raises(PermissionDenied, match="needs a person"):
        training_file_upload(content=io.BytesIO(PII_LINES), actor=None, **upload)
    person.user_permissions.add(Permission.objects.get(codename="override_training_audit"))
    person = type(person).objects.get(pk=person.pk)  # permissions are cached per instance
    training_file = training_file_upload(content=io.BytesIO(PII_LINES), actor=person, **upload)
    with pytest.raises(Conflict, match="audit_dataset pii.jsonl --scrub"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, actor=person)
    job = finetuning_job_create(agent=ft_world.agent, training_file=training_file, actor=person,
                                audit_override_reason="synthetic addresses")
    assert job.status == "QUEUED" and job.audit_override_reason == "synthetic addresses"
    clean = finetuning_job_create(agent=ft_world.agent, training_file=upload_demo(ft_world), audit_override_reason="not needed")
    assert clean.audit_override_reason == ""  # nothing was overridden

    # "Audit again" still queued (or failed) does not switch the gate off: the finished audit counts.
    from audits.services import audit_start

    audit_start(dataset=training_file.dataset, actor=None)
    training_file = TrainingFile.objects.get(pk=training_file.pk)
    assert training_file.dataset.latest_audit.status == "queued"
    with pytest.raises(Conflict, match="found 6 PII occurrences"):
        finetuning_job_create(agent=ft_world.agent, training_file=training_file, actor=person)


def test_an_openai_compatible_account_cannot_fine_tune(ft_world) -> None:
    account = provider_account_upsert(name="vllm", kind="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key_env="")
    with pytest.raises(Conflict, match="cannot fine-tune"):  # the account's refusal (409), not invalid input
        training_file_upload(agent=ft_world.agent, content=io.BytesIO(chat_lines(2)), filename="x.jsonl", provider=account)


# --- adopting the job a lost creation answer left at the provider ----------------------------------


def lost_creation(world, **options: Any) -> FineTuningJob:
    """A job whose creation met a 500: kept NOT_CREATED, its estimate held, nothing at the provider."""
    training_file = options.pop("training_file", None) or upload_demo(world)
    world.simulator.state.queue_faults(500)
    job = finetuning_job_create(agent=world.agent, training_file=training_file, **options)
    assert job.status == "NOT_CREATED" and not job.provider_job_id and "may have created the job anyway" in job.last_error
    return job


def orphan_at_provider(world, job: FineTuningJob, **changes: Any) -> str:
    """What `_submit` sends for `job`, sent with the real SDK straight to the simulator: the job a
    creation whose answer was lost leaves at the provider, tracked by no row."""
    request = {
        "base_model": job.base_model, "training_file_ids": [job.training_file.provider_file_id],
        "hyperparameters": job.hyperparameters, "suffix": job.suffix or None, "auto_start": job.auto_start,
    } | changes
    return provider_for(world.provider).create_job(**request).id


def person_with(*codenames: str, username: str = "lead"):
    person = UserFactory(username=username)
    person.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return type(person).objects.get(pk=person.pk)  # fresh permission cache


def job_lookups(world, provider_job_id: str) -> list[int]:
    return [s for m, p, s in world.simulator.state.request_log if m == "GET" and p == f"/v1/fine_tuning/jobs/{provider_job_id}"]


def test_an_adopted_job_is_followed_to_success_and_charged_once(ft_world) -> None:
    job = lost_creation(ft_world, hyperparameters={"epochs": 2}, auto_start=True)
    hold = CostHold.objects.get(source_id=str(job.pk))
    # The simulated job takes a second; the provider's clock stands still until the adoption is checked,
    # so a loaded machine still finds the job moving when it is adopted.
    provider_state, paused_at = ft_world.simulator.state, time.time()
    provider_state.clock = lambda: paused_at
    orphan = orphan_at_provider(ft_world, job)
    assert [c.snapshot.id for c in finetuning_adoption_candidates(job=job) if c.matches] == [orphan]
    person = person_with("change_finetuningjob")

    job = finetuning_job_adopt(job=job, provider_job_id=f" {orphan} ", actor=person, reason="found in the provider's list")
    assert job.provider_job_id == orphan and job.status in ("QUEUED", "VALIDATED", "RUNNING")
    assert job.last_error == "" and job.provider_answer == "" and job.submitted_at is not None
    assert job_lookups(ft_world, orphan) == [200]  # checked at the provider (its retrieve call) first
    latest = job.history.first()
    assert latest.history_user == person and latest.history_change_reason.startswith(f"adopted provider job {orphan}")
    assert job in jobs_to_sync()  # beat follows it from now on
    hold.refresh_from_db()
    assert hold.released_at is None  # the adopted job keeps holding its estimate

    provider_state.clock = time.time
    # Beat's per-job task takes it from here, as if the creation had answered.
    wait_until(lambda: sync_fine_tuning_job(job.pk) == "SUCCESS", timeout=10, what="the adopted job to succeed")
    job = ft_world.job(job)
    assert job.model_version is not None and job.model_version.model_id == job.fine_tuned_model
    entry = CostEntry.objects.get(operation="fine_tuning")
    assert (entry.idempotency_key, entry.amount_usd, entry.source_object) == (f"finetune:{job.pk}", Decimal("4"), job)
    hold.refresh_from_db()
    assert hold.released_at is not None
    assert sync_fine_tuning_job(job.pk).startswith("nothing to do") and finetuning_job_sync(job=job).pk == job.pk
    assert CostEntry.objects.filter(operation="fine_tuning").count() == 1
    assert len(ft_world.simulator.state.list_jobs(model=None, status=None, suffix=None)) == 1  # never created twice


def test_adopting_a_job_that_already_succeeded_registers_and_charges_it_at_once(ft_world) -> None:
    job = lost_creation(ft_world, auto_start=True)
    orphan = orphan_at_provider(ft_world, job)
    wait_until(lambda: ft_world.simulator.state.get_job(orphan).status(time.time()) == "SUCCESS",
               timeout=10, what="the orphan to finish")
    job = finetuning_job_adopt(job=job, provider_job_id=orphan)
    assert job.status == "SUCCESS" and job.model_version is not None and job.cost_recorded_at is not None
    assert CostEntry.objects.get(operation="fine_tuning").idempotency_key == f"finetune:{job.pk}"
    assert CostHold.objects.get(source_id=str(job.pk)).released_at is not None
    assert job not in jobs_to_sync()


def test_an_unknown_provider_job_is_refused_with_what_to_do(ft_world) -> None:
    job = lost_creation(ft_world)
    with pytest.raises(NotFound, match="provider 'sim-ft' has no fine-tuning job 'job-nope'") as refused:
        finetuning_job_adopt(job=job, provider_job_id="job-nope")
    assert "fine_tune status --provider sim-ft" in refused.value.message and refused.value.status_code == 404
    job = ft_world.job(job)
    assert job.status == "NOT_CREATED" and job.provider_job_id == ""
    with pytest.raises(InvalidInput, match="provider_job_id"):
        finetuning_job_adopt(job=job, provider_job_id="  ")


def test_a_provider_job_another_row_tracks_is_refused(ft_world) -> None:
    training_file = upload_demo(ft_world)
    tracked = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    job = lost_creation(ft_world, training_file=training_file)
    with pytest.raises(Conflict, match=f"already tracked by job #{tracked.pk} \\(QUEUED\\)") as refused:
        finetuning_job_adopt(job=job, provider_job_id=tracked.provider_job_id)
    assert refused.value.status_code == 409 and f"Cancel job #{job.pk} if it is a leftover" in refused.value.message
    assert job_lookups(ft_world, tracked.provider_job_id) == []  # refused before the provider was asked

    # The orphan adopted by one row cannot be adopted by a second one.
    orphan = orphan_at_provider(ft_world, job)
    finetuning_job_adopt(job=job, provider_job_id=orphan)
    second = lost_creation(ft_world, training_file=training_file)
    with pytest.raises(Conflict, match=f"already tracked by job #{job.pk}"):
        finetuning_job_adopt(job=second, provider_job_id=orphan)
    assert ft_world.job(second).provider_job_id == ""


def test_only_a_job_waiting_for_its_creation_answer_can_adopt(ft_world) -> None:
    training_file = upload_demo(ft_world)
    queued = finetuning_job_create(agent=ft_world.agent, training_file=training_file)
    cancelled = finetuning_job_cancel(job=lost_creation(ft_world, training_file=training_file))
    assert cancelled.status == "CANCELLED"
    orphan = orphan_at_provider(ft_world, cancelled)
    with pytest.raises(Conflict, match=f"already tracks provider job {queued.provider_job_id}"):
        finetuning_job_adopt(job=queued, provider_job_id=orphan)
    with pytest.raises(Conflict, match="is CANCELLED, not waiting for a creation answer") as refused:
        finetuning_job_adopt(job=cancelled, provider_job_id=orphan)
    assert "--no-submit" in refused.value.message
    assert job_lookups(ft_world, orphan) == []
    assert ft_world.job(queued).provider_job_id == queued.provider_job_id and ft_world.job(cancelled).provider_job_id == ""


def test_adopting_needs_the_change_permission(ft_world) -> None:
    job = lost_creation(ft_world)
    orphan = orphan_at_provider(ft_world, job)
    viewer = person_with("view_finetuningjob", username="viewer")
    with pytest.raises(PermissionDenied, match="user 'viewer' may not adopt provider fine-tuning jobs: .*models_app.change_finetuningjob"):
        finetuning_job_adopt(job=job, provider_job_id=orphan, actor=viewer)
    assert job_lookups(ft_world, orphan) == [] and ft_world.job(job).provider_job_id == ""


def test_a_provider_job_trained_on_something_else_is_refused(ft_world) -> None:
    job = lost_creation(ft_world, hyperparameters={"epochs": 2})
    other_file = training_file_upload(agent=ft_world.agent, content=io.BytesIO(chat_lines(5)), filename="other.jsonl")
    orphan = orphan_at_provider(ft_world, job, training_file_ids=[other_file.provider_file_id], hyperparameters={"epochs": 3})
    with pytest.raises(Conflict, match=f"provider job {orphan} is not the one job #{job.pk} asked for") as refused:
        finetuning_job_adopt(job=job, provider_job_id=orphan)
    assert f"training files {other_file.provider_file_id}, not {job.training_file.provider_file_id}" in refused.value.message
    assert "epochs 3.0, not 2" in refused.value.message
    assert ft_world.job(job).status == "NOT_CREATED"
    [candidate] = finetuning_adoption_candidates(job=job)
    assert not candidate.matches and candidate.snapshot.id == orphan


@pytest.mark.django_db(transaction=True)
def test_two_rows_adopting_the_same_provider_job_at_once_one_wins(ft_world) -> None:
    training_file = upload_demo(ft_world)
    rows = [lost_creation(ft_world, training_file=training_file) for _ in range(2)]
    orphan = orphan_at_provider(ft_world, rows[0])
    barrier = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def adopt(job: FineTuningJob) -> None:
        try:
            barrier.wait()
            outcomes[job.pk] = finetuning_job_adopt(job=job, provider_job_id=orphan).provider_job_id
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcomes[job.pk] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=adopt, args=(job,)) for job in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    won = [pk for pk, outcome in outcomes.items() if outcome == orphan]
    lost = [outcome for outcome in outcomes.values() if isinstance(outcome, Conflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert f"already tracked by job #{won[0]}" in lost[0].message
    assert list(FineTuningJob.objects.filter(provider_job_id=orphan).values_list("pk", flat=True)) == won
