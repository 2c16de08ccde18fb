"""A WaltzRL build on a real Celery worker that is killed mid-build: the message comes back, a second
worker resumes from the first item not done, and no prompt is answered, judged or charged twice."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from kombu import Connection

from costs.models import CostEntry
from models_app.registry.models import Agent
from safety.models import WaltzBuild, WaltzItem
from safety.services import waltz_build_create
from tests.models_app.conftest import point_demo_provider_at, wait_until


def test_a_worker_killed_mid_build_is_resumed_without_paying_twice_for_any_prompt(
    empty_broker, seeded_demo, simulator_factory, start_worker
) -> None:
    if not settings.REDIS_URL:
        pytest.skip("redelivery of an unacknowledged message is Redis' visibility timeout; the file-system broker has none")
    simulator = simulator_factory(latency_ms=25)
    point_demo_provider_at(simulator, rate_limit_per_minute=60_000, max_concurrency=4)
    arrivals: list[float] = []
    next_fault = simulator.state.next_fault

    def note_arrival() -> int | None:
        arrivals.append(time.monotonic())
        return next_fault()

    simulator.state.next_fault = note_arrival
    first = start_worker(queues="default")
    build = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=120)
    wait_until(lambda: WaltzItem.objects.filter(build=build, done=True).count() >= 15, timeout=60)
    first.kill()  # SIGKILL, parent and pool: no ack, no cleanup

    build.refresh_from_db()
    assert build.status == "running"
    done_at_kill = WaltzItem.objects.filter(build=build, done=True).count()
    assert 15 <= done_at_kill < build.total_items

    # Give the unacknowledged message back, as Redis' visibility timeout would.
    time.sleep(1.1)
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": 1}
    with Connection(settings.CELERY_BROKER_URL, transport_options=options) as connection:
        connection.default_channel.qos.restore_visible(num=100, interval=1)
    start_worker(queues="default")
    build = wait_until(lambda: WaltzBuild.objects.filter(pk=build.pk, status__in=["succeeded", "failed"]).first(), timeout=120)

    assert build.status == "succeeded", build.error
    assert build.attempts == 2
    entries = CostEntry.objects.filter(operation="data_prep", source_id=str(build.pk))
    keys = list(entries.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    # One answer per prompt on the ledger: none answered (or charged) twice.
    assert sum(1 for key in keys if key.endswith(":answer")) == build.total_items
    # The simulator was asked at most once more than the ledger holds: the call in flight at the kill.
    assert 0 <= len(arrivals) - len(keys) <= 1
    assert sum(entry.amount_usd for entry in entries) == build.cost_usd


def test_a_build_whose_message_was_lost_is_sent_again_by_the_sweep_and_finishes(
    empty_broker, seeded_demo, simulator_factory, start_worker
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from safety.services import waltz_builds_resend_stranded

    point_demo_provider_at(simulator_factory(), rate_limit_per_minute=60_000, max_concurrency=4)
    lost = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=30, enqueue=False)  # its message never sent
    fresh = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=30, seed=1, enqueue=False)
    WaltzBuild.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=6))
    start_worker(queues="default")

    assert waltz_builds_resend_stranded() == [lost.pk]  # the fresh one may still have its message on the way
    build = wait_until(lambda: WaltzBuild.objects.filter(pk=lost.pk, status__in=["succeeded", "failed"]).first(), timeout=90)
    assert build.status == "succeeded", build.error
    assert WaltzBuild.objects.get(pk=fresh.pk).status == "queued"
    assert waltz_builds_resend_stranded() == []


def test_a_build_a_worker_is_on_is_not_failed_under_it_and_a_build_ended_meanwhile_stops_paying(
    transactional_db, seeded_demo, simulator_factory
) -> None:
    """Race review, finding 2: the task's give-up path failed a build (and released its hold) while a
    second delivery of its message was working on it; that worker then paid for every item left."""
    import threading

    from django.db import connection
    from django.utils import timezone

    from safety.services import _fail, waltz_build_execute, waltz_build_fail

    point_demo_provider_at(simulator_factory(latency_ms=20), rate_limit_per_minute=60_000, max_concurrency=4)
    build = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=60, enqueue=False)

    def work() -> None:
        try:
            waltz_build_execute(build_id=build.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    wait_until(lambda: WaltzItem.objects.filter(build=build, done=True).count() >= 5, timeout=60)

    # The give-up path leaves a build another worker holds to that worker.
    assert waltz_build_fail(build_id=build.pk, error="the provider kept failing").status == "running"

    # Ended by another path all the same: the worker stops before its next item's calls.
    ended_at = timezone.now()
    _fail(build.pk, "ended while running")
    worker.join(timeout=60)
    assert not worker.is_alive()
    build.refresh_from_db()
    assert build.status == "failed" and build.completed_items < build.total_items
    notes = CostEntry.objects.filter(source_id=str(build.pk), recorded_at__gt=ended_at).values_list("note", flat=True)
    # At most the item in flight when it ended (its answer, judge calls, revision: "item 7 judge-1").
    assert len({note.rsplit(" ", 1)[0] for note in notes}) <= 1


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                    reason="a live worker's hold is a PostgreSQL advisory lock")
def test_a_running_build_whose_worker_died_is_sent_again_a_minute_after_it_started_by_the_audits_rule(
    seeded_demo, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """Chaos review: builds waited 5 minutes where audits waited 32 for the same proof (a free lock);
    both now go by genesis/locks.py `running_without_worker`. Off PostgreSQL the lock proves nothing
    (it is always free), and the old rule sent a build a live worker was on to a second worker after 5
    minutes: there only the hard time limit counts."""
    from datetime import timedelta

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from genesis.locks import WORKER_GONE_AFTER_SECONDS
    from safety.selectors import LOCK_NAMESPACE
    from safety.services import waltz_builds_resend_stranded

    agent = Agent.objects.get(slug="qa_agent")
    killed, held, starting = (waltz_build_create(agent=agent, target=30, seed=seed, enqueue=False) for seed in range(3))
    now = timezone.now()
    WaltzBuild.objects.filter(pk__in=[killed.pk, held.pk]).update(
        status="running", started_at=now - timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 30))
    WaltzBuild.objects.filter(pk=starting.pk).update(status="running", started_at=now - timedelta(seconds=5))
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
                            autocommit=True)
    try:  # a live worker on `held`
        other.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, held.pk))
        with django_capture_on_commit_callbacks() as callbacks:
            assert waltz_builds_resend_stranded() == [killed.pk]
    finally:
        other.close()
    assert [callback.args[:2] for callback in callbacks] == [("safety.run_waltz_build", killed.pk)]

    WaltzBuild.objects.filter(pk__in=[killed.pk, held.pk, starting.pk]).update(started_at=now - timedelta(minutes=6))
    monkeypatch.setattr(connection, "vendor", "sqlite")
    assert waltz_builds_resend_stranded() == []


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                    reason="the sweep tells a dead worker by its PostgreSQL advisory lock")
def test_a_build_waiting_out_its_own_retry_is_left_to_it_by_the_sweep_until_a_minute_after_it_is_due(
    seeded_demo, simulator_factory, admin_client
) -> None:
    """A build whose task met a transient provider failure is "running" with no lock
    held while its retry counts down; the sweep sent it again, and the second message started a second
    retry chain beside the first, each spending the build's attempts."""
    from datetime import timedelta

    from celery.exceptions import Retry
    from django.utils import timezone

    from genesis.locks import WORKER_GONE_AFTER_SECONDS
    from safety.selectors import waltz_builds_stranded
    from safety.tasks import run_waltz_build

    point_demo_provider_at(simulator_factory(error_rate=1.0))
    build = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=30, seed=0, enqueue=False)
    with pytest.raises(Retry):  # the retry Celery would schedule
        run_waltz_build.run(build.pk)
    build.refresh_from_db()
    assert build.status == "running" and build.retry_at is not None and build.retry_at > timezone.now()
    page = admin_client.get(f"/admin/safety/waltzbuild/{build.pk}/change/").content.decode()
    assert "the provider failed transiently; the worker tries again at" in page

    # Started long ago, lock free: without the retry's due time this is a dead worker's build.
    long_ago = timezone.now() - timedelta(minutes=10)
    WaltzBuild.objects.filter(pk=build.pk).update(started_at=long_ago)
    assert waltz_builds_stranded() == []
    assert waltz_builds_stranded(now=build.retry_at + timedelta(seconds=WORKER_GONE_AFTER_SECONDS - 1)) == []
    assert waltz_builds_stranded(now=build.retry_at + timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 1)) == [build.pk]

    # The retry clears it when it starts (here it fails again and sets a new due time).
    WaltzBuild.objects.filter(pk=build.pk).update(retry_at=long_ago)
    with pytest.raises(Retry):
        run_waltz_build.run(build.pk)
    build.refresh_from_db()
    assert build.attempts == 2 and build.retry_at > timezone.now()
