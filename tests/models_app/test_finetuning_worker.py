"""Fine-tuning job tracking through real Celery: a real worker process (and a real beat process) on
the test database and broker, the simulator over real HTTP.

The crash test kills a worker with SIGKILL while its sync is waiting on the provider, then lets the
broker hand the unacknowledged message to a new worker. Redis does that once the message's
visibility timeout has passed (40 minutes in settings, above the longest task); the test runs
kombu's own restore (`QoS.restore_visible`) with a 1-second timeout instead of waiting — the same
code a worker runs, on the same message, only sooner. Beat's next tick would also queue a new sync
for the job; the test sends that too, and a duplicate of the per-job message, and the model is still
registered once and charged once.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from kombu import Connection

from costs.models import CostEntry
from genesis.celery import app
from genesis.schedules import DEFAULT_SCHEDULES, install_default_schedules
from models_app.finetuning.models import FineTuningJob
from models_app.finetuning.services import finetuning_job_create, finetuning_job_start
from models_app.finetuning.tasks import sync_active_fine_tuning_jobs, sync_fine_tuning_job
from models_app.finetuning.training_files import training_file_upload
from models_app.registry.models import ModelVersion
from tests.conftest import BeatProcess
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, set_simulator, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SCHEDULE_NAME = "fine-tuning: sync active jobs"


def running_job(world) -> FineTuningJob:
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    job = finetuning_job_create(agent=world.agent, training_file=training_file)
    return finetuning_job_start(job=job)


def registered(job: FineTuningJob) -> FineTuningJob | None:
    fresh = FineTuningJob.objects.get(pk=job.pk)
    return fresh if fresh.model_version_id else None


def assert_registered_once(world, job: FineTuningJob) -> FineTuningJob:
    job = FineTuningJob.objects.select_related("model_version").get(pk=job.pk)
    assert job.status == "SUCCESS"
    versions = ModelVersion.objects.filter(agent=world.agent, kind="fine_tuned")
    assert [version.model_id for version in versions] == [job.fine_tuned_model]
    assert job.model_version == versions.get()
    entries = CostEntry.objects.filter(operation="fine_tuning")
    assert [(entry.idempotency_key, str(entry.amount_usd)) for entry in entries] == [(f"finetune:{job.pk}", "4.000000")]
    return job


def wait_for_task(worker, task_id: str, *, timeout: float = 30.0) -> None:
    wait_until(
        lambda: f"[{task_id}] succeeded" in worker.log_path.read_text(errors="replace"),
        timeout=timeout, what=f"task {task_id} to finish on the worker",
    )


def test_beat_entry_is_installed_every_minute_for_a_registered_task(db) -> None:
    entry = next(schedule for schedule in DEFAULT_SCHEDULES if schedule.name == SCHEDULE_NAME)
    assert entry.task in app.tasks and entry.task == sync_active_fine_tuning_jobs.name
    install_default_schedules()
    task = PeriodicTask.objects.get(name=SCHEDULE_NAME)
    assert (task.task, task.interval.every, task.interval.period, task.enabled) == (entry.task, 60, "seconds", True)


def test_the_worker_syncs_a_job_to_success_and_registers_it_with_its_cost(ft_world, celery_worker) -> None:
    job = running_job(ft_world)
    wait_until(lambda: ft_world.simulator.state.get_job(job.provider_job_id).status(time.time()) == "SUCCESS",
               timeout=10, what="the simulated job to finish")
    # What beat sends every minute; the worker fans out one sync per moving job.
    tick = sync_active_fine_tuning_jobs.delay()
    wait_until(lambda: registered(job), timeout=30, what="the worker to register the fine-tuned model")
    wait_for_task(celery_worker, tick.id)
    job = assert_registered_once(ft_world, job)
    assert job.model_version.status == "registered" and job.model_version.model_id.startswith("ft:open-mistral-7b:")
    assert job.cost_recorded_at is not None


def test_a_worker_killed_during_sync_and_replaced_registers_the_model_once(ft_world, start_worker) -> None:
    if not settings.REDIS_URL:
        pytest.skip("redelivery of an unacknowledged message is Redis' visibility timeout; the file-system broker has none")
    job = running_job(ft_world)
    simulator = ft_world.simulator
    wait_until(lambda: simulator.state.get_job(job.provider_job_id).status(time.time()) == "SUCCESS",
               timeout=10, what="the simulated job to finish")

    # The provider is now slow, so the sync is surely waiting on it when the worker dies.
    arrivals: list[float] = []
    next_fault = simulator.state.next_fault

    def note_arrival() -> int | None:
        arrivals.append(time.monotonic())
        return next_fault()

    simulator.state.next_fault = note_arrival
    set_simulator(simulator, latency_ms=5000)
    first = start_worker()
    original = sync_fine_tuning_job.delay(job.pk)
    wait_until(lambda: arrivals, timeout=60, interval=0.05, what="the sync to ask the provider")
    time.sleep(0.3)
    first.kill()

    # Killed mid-sync: nothing of the success was written.
    job = FineTuningJob.objects.get(pk=job.pk)
    assert job.status == "RUNNING" and job.model_version_id is None
    assert not CostEntry.objects.filter(operation="fine_tuning").exists()

    # The message was never acknowledged: give it back to the queue as Redis' visibility timeout would.
    set_simulator(simulator, latency_ms=0)
    time.sleep(1.1)
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": 1}
    with Connection(settings.CELERY_BROKER_URL, transport_options=options) as connection:
        connection.default_channel.qos.restore_visible(num=100, interval=1)

    second = start_worker()
    wait_until(lambda: registered(job), timeout=30, what="the redelivered sync to register the model")
    assert_registered_once(ft_world, job)
    wait_for_task(second, original.id)  # the very message the killed worker held

    # Beat's next tick, and one more copy of the per-job message: still once.
    tick = sync_active_fine_tuning_jobs.delay()
    duplicate = sync_fine_tuning_job.delay(job.pk)
    wait_for_task(second, tick.id)
    wait_for_task(second, duplicate.id)
    assert_registered_once(ft_world, job)


def test_real_beat_and_worker_move_a_job_to_success(ft_world, celery_worker, tmp_path) -> None:
    install_default_schedules()
    # The schedule as a person would edit it in the admin: every second, for the test, and only it.
    PeriodicTask.objects.exclude(name=SCHEDULE_NAME).update(enabled=False)
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name=SCHEDULE_NAME).update(interval=every_second)
    job = running_job(ft_world)
    beat = BeatProcess(tmp_path / "beat.log")
    try:
        wait_until(lambda: registered(job), timeout=45, interval=0.25, what="beat and the worker to register the model")
    finally:
        beat.stop()
    assert_registered_once(ft_world, job)
    assert "models_app.sync_active_fine_tuning_jobs" in (tmp_path / "beat.log").read_text(errors="replace")
