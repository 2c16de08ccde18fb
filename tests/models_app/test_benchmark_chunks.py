"""How a benchmark chunk is laid out, written and throttled: the staggered chunk layout, a batch of
results written in one transaction (and again row by row when another worker wrote some of its
pairs), and call slots kept between a thread's calls yet shared fairly across processes."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from models_app.benchmark_limits import KEY_PREFIX, RedisProviderLimiter
from models_app.models import Agent, BenchmarkChunk, BenchmarkResult, BenchmarkRun
from models_app.services.benchmarks import (
    _Answer,
    _chunk_context,
    _chunk_starts,
    _store_answers,
    benchmark_chunk_claim,
    benchmark_run_cancel,
    benchmark_run_create,
)

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="the shared limiter lives in Redis (REDIS_URL)")


def test_the_first_chunk_is_half_as_long_and_every_pair_is_in_one_chunk() -> None:
    starts = _chunk_starts(800, 128, stagger=True)
    sizes = [end - start for start, end in zip(starts, [*starts[1:], 800])]
    assert sizes == [64, 128, 128, 128, 128, 128, 96]
    assert _chunk_starts(800, 128, stagger=False) == list(range(0, 800, 128))
    assert _chunk_starts(100, 128, stagger=True) == [0]  # one chunk: nothing to stagger
    assert _chunk_starts(129, 128, stagger=True) == [0, 64]


@pytest.mark.django_db
def test_an_explicit_chunk_size_is_kept_exactly(demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    assert [len(items) for items in BenchmarkChunk.objects.filter(run=run).order_by("index").values_list("items", flat=True)] == [16] * 4


def _answers(lease, count: int) -> list[_Answer]:  # type: ignore[no-untyped-def]
    return [
        _Answer(version_id, case_id, "scored", output="42", score=1.0, reason="matches", finish_reason="stop",
                latency_ms=50.0, prompt_tokens=10, completion_tokens=2, cost_usd=Decimal("0.000003"))
        for version_id, case_id in lease.items[:count]
    ]


@pytest.mark.django_db
def test_a_batch_whose_pairs_were_partly_written_meanwhile_writes_the_rest_and_counts_each_once(demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    chunk = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
    lease = benchmark_chunk_claim(chunk_id=chunk.pk, worker="worker-a@test")
    context = _chunk_context(BenchmarkRun.objects.select_related("agent", "candidate__provider", "baseline__provider").get(pk=run.pk), lease)
    answers = _answers(lease, 3)

    assert _store_answers(context, lease, answers[:1]) == (1, True)  # e.g. written by another worker
    long_ago = timezone.now() - timedelta(minutes=1)
    BenchmarkChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=long_ago)
    assert _store_answers(context, lease, answers) == (2, True)

    run.refresh_from_db()
    assert BenchmarkResult.objects.filter(run=run).count() == 3 and run.completed_items == 3
    assert BenchmarkChunk.objects.get(pk=chunk.pk).heartbeat_at > long_ago  # the batch renewed the lease

    benchmark_run_cancel(run=run, actor=None, reason="test")
    created, still_running = _store_answers(context, lease, _answers(lease, 4)[3:])
    assert (created, still_running) == (1, False)  # an answer already paid for is kept; the chunk stops


def _limiter(client, provider: str, **options) -> RedisProviderLimiter:  # type: ignore[no-untyped-def]
    settings_ = {"max_concurrency": 2, "rate_limit_per_minute": None, "lease_seconds": 5, "wait_limit_seconds": 5}
    return RedisProviderLimiter(client, provider=provider, **{**settings_, **options})


@needs_redis
def test_a_thread_keeps_its_slot_between_calls_and_gives_it_back_at_the_end_or_on_a_failure():
    client = redis.Redis.from_url(settings.REDIS_URL)
    provider = f"test-{uuid.uuid4().hex[:8]}"
    slots_key = f"{KEY_PREFIX}:{provider}:in-flight"
    limiter = _limiter(client, provider, keep_seconds=60)

    with limiter.keeping_slot():
        with limiter.slot():
            leases = client.zrange(slots_key, 0, -1)
        assert client.zrange(slots_key, 0, -1) == leases  # kept between calls
        with limiter.slot():
            assert client.zrange(slots_key, 0, -1) == leases  # the same lease, not a second one
        with pytest.raises(RuntimeError):
            with limiter.slot():
                raise RuntimeError("the call failed")
        assert client.zcard(slots_key) == 0  # a failed call (and its backoff) holds no slot
        with limiter.slot():
            pass
        assert client.zcard(slots_key) == 1
    assert client.zcard(slots_key) == 0
    with limiter.slot():  # outside keeping_slot(), every call gives its slot back
        pass
    assert client.zcard(slots_key) == 0


@needs_redis
def test_kept_slots_take_turns_with_other_processes_and_still_pace_each_call():
    client = redis.Redis.from_url(settings.REDIS_URL)
    provider = f"test-{uuid.uuid4().hex[:8]}"
    # Two "processes" (limiter instances) sharing one slot: the busy one keeps it at most 0.1 s.
    busy, other = (_limiter(client, provider, max_concurrency=1, keep_seconds=0.1) for _ in range(2))
    stop = threading.Event()

    def keep_calling() -> None:
        with busy.keeping_slot():
            while not stop.is_set():
                with busy.slot():
                    time.sleep(0.01)

    thread = threading.Thread(target=keep_calling)
    thread.start()
    try:
        time.sleep(0.05)
        started = time.monotonic()
        with other.slot():
            waited = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert waited < 1.0  # its turn came while the busy thread was still calling

    paced = _limiter(client, f"test-{uuid.uuid4().hex[:8]}", rate_limit_per_minute=1200, keep_seconds=60)
    started = time.monotonic()
    with paced.keeping_slot():
        for _ in range(5):
            with paced.slot():
                pass
    assert time.monotonic() - started >= 4 * 0.05 * 0.9  # 1 200 a minute: 50 ms apart, kept slot or not
