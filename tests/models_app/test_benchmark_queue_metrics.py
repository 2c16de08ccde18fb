"""A benchmark run created while the broker is away: the run and its chunks are committed, the chunk
messages are not sent (logged), and nothing but the run's age says it waits for nothing — until the
resume sweep sends its chunks again QUEUED_CHUNK_RESEND_AFTER_SECONDS after they were queued.
/metrics exports that age (genesis_benchmark_run_seconds_queued, watched by BenchmarkRunNotStarted).
A chunk whose retry the broker could not take is sent again by the sweep's next pass."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import current_app
from celery.exceptions import Reject
from django.core.management import call_command
from django.utils import timezone

from models_app.benchmarks.metrics import BenchmarkRunsCollector
from models_app.benchmarks.models import BenchmarkChunk, BenchmarkRun
from models_app.benchmarks.selectors import benchmark_runs_waiting_to_start
from models_app.benchmarks.services import benchmark_run_create
from models_app.benchmarks.sweep import QUEUED_CHUNK_RESEND_AFTER_SECONDS, benchmark_runs_resume_stalled
from models_app.benchmarks.tasks import benchmark_chunk_run
from models_app.registry.models import Agent
from tests.models_app.conftest import point_demo_provider_at

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_away() -> Iterator[None]:
    """The Celery broker at a port nothing listens on (as Redis down would leave it), one attempt."""
    conf = current_app.conf
    before = (conf.broker_url, conf.broker_transport, conf.broker_connection_max_retries, conf.task_publish_retry)
    conf.broker_url, conf.broker_transport = "redis://127.0.0.1:1/0", None
    conf.broker_connection_max_retries, conf.task_publish_retry = 0, False
    current_app._pool, current_app.amqp._producer_pool = None, None  # connections made from the new URL
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport, conf.broker_connection_max_retries, conf.task_publish_retry = before
        current_app._pool, current_app.amqp._producer_pool = None, None


def queued_gauge() -> dict[str, float]:
    (family,) = [family for family in BenchmarkRunsCollector().collect() if family.name == "genesis_benchmark_run_seconds_queued"]
    return {sample.labels["agent"]: sample.value for sample in family.samples}


def test_a_run_whose_chunks_could_not_be_sent_waits_visibly_until_the_sweep_sends_them(
    broker_away, django_capture_on_commit_callbacks, caplog
):
    call_command("seed_demo", stdout=io.StringIO())
    assert queued_gauge() == {}  # nothing queued: no series (an idle agent says nothing)
    with caplog.at_level(logging.WARNING, logger="genesis.tasks"), django_capture_on_commit_callbacks(execute=True):
        run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 40})
    run.refresh_from_db()
    chunks = list(BenchmarkChunk.objects.filter(run=run))
    assert run.status == "queued" and len(chunks) > 1 and {chunk.status for chunk in chunks} == {"queued"}
    # One attempt, not one per chunk: each waits for the broker's connection timeout.
    assert caplog.text.count("could not enqueue benchmark chunk") == 1
    assert f"{len(chunks) - 1} more benchmark chunk(s) not sent either" in caplog.text

    # Its age, per agent, from the moment it was queued; other agents have no series.
    assert set(queued_gauge()) == {"qa_agent"} and 0 <= queued_gauge()["qa_agent"] < 60
    later = run.created_at + timedelta(minutes=16)
    assert benchmark_runs_waiting_to_start(now=later) == [("qa_agent", 16 * 60.0)]

    # The sweep (every minute) leaves the chunks alone until they have waited the re-send interval:
    # only then does it send them again. Until then, the age above is all there is to see.
    just_before = run.created_at + timedelta(seconds=QUEUED_CHUNK_RESEND_AFTER_SECONDS - 30)
    just_after = run.created_at + timedelta(seconds=QUEUED_CHUNK_RESEND_AFTER_SECONDS + 30)
    with django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers=None, now=just_before) == []
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert sorted(benchmark_runs_resume_stalled(live_workers=None, now=just_after)) == sorted(c.pk for c in chunks)
    assert len(sent) == 1
    # The run keeps its queued-since time: a re-send does not make it look younger.
    assert benchmark_runs_waiting_to_start(now=later) == [("qa_agent", 16 * 60.0)]


def test_the_oldest_queued_run_of_each_agent_counts_and_a_started_one_leaves(django_capture_on_commit_callbacks):
    call_command("seed_demo", stdout=io.StringIO())
    with django_capture_on_commit_callbacks(execute=False):  # no message sent: nothing takes the runs
        qa = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
        content = benchmark_run_create(agent=Agent.objects.get(slug="content_agent"))
    BenchmarkRun.objects.filter(pk=content.pk).update(created_at=content.created_at - timedelta(hours=1))
    content.refresh_from_db()
    now = qa.created_at + timedelta(minutes=5)
    waiting = dict(benchmark_runs_waiting_to_start(now=now))
    assert waiting["qa_agent"] == pytest.approx(300.0)
    assert waiting["content_agent"] == pytest.approx((now - content.created_at).total_seconds())
    # A run a worker has claimed a chunk of is running: no longer waiting to start.
    BenchmarkRun.objects.filter(pk=qa.pk).update(status="running", started_at=now)
    assert [agent for agent, _ in benchmark_runs_waiting_to_start(now=now)] == ["content_agent"]


def test_a_chunk_whose_retry_could_not_be_sent_is_sent_again_by_the_next_sweep(
    seeded_demo, simulator_factory, broker_away, django_capture_on_commit_callbacks
):
    # Every provider call fails (500) through all its retries: the chunk is released to retry later.
    simulator = simulator_factory()
    simulator.state.queue_faults(*[500] * 400)
    point_demo_provider_at(simulator, rate_limit_per_minute=60_000, max_concurrency=8)
    with django_capture_on_commit_callbacks(execute=False):  # no message sent: the test runs the chunk
        run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 2})
    chunk = BenchmarkChunk.objects.filter(run=run).order_by("index").first()

    # The task as a worker runs it (not eagerly): its retry goes to the broker, which is away.
    benchmark_chunk_run.push_request(id="retry-not-sent", retries=0, called_directly=False, is_eager=False,
                                     hostname="w@test", delivery_info={})
    try:
        with pytest.raises(Reject):  # Celery drops the message
            benchmark_chunk_run.run(chunk.pk)
    finally:
        benchmark_chunk_run.pop_request()

    chunk.refresh_from_db()
    assert chunk.status == "queued" and chunk.lease_token is None and chunk.attempts == 1
    # No message is on its way: the sweep a minute later sends the chunk again, not ten minutes later.
    assert chunk.enqueued_at is None
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert chunk.pk in benchmark_runs_resume_stalled(live_workers=None, now=timezone.now() + timedelta(minutes=1))
    assert sent
