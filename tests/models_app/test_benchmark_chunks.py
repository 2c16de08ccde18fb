"""How a benchmark chunk is laid out, written and throttled: the staggered chunk layout, a batch of
results written in one transaction (and again row by row when another worker wrote some of its
pairs), and call slots handed between a process's threads yet shared fairly across processes."""

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

from costs.models import CostEntry
from models_app.benchmarks.answers import Answer
from models_app.benchmarks.limits import KEY_PREFIX, RedisProviderLimiter
from models_app.benchmarks.models import BenchmarkChunk, BenchmarkResult, BenchmarkRun, BenchmarkUnscoredAnswer
from models_app.benchmarks.runner import _chunk_context, _store_answers, benchmark_chunk_claim
from models_app.benchmarks.selectors import benchmark_run_cost
from models_app.benchmarks.services import _chunk_starts, benchmark_run_cancel, benchmark_run_create
from models_app.registry.models import Agent

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
    assert [len(items) for items in BenchmarkChunk.objects.filter(run=run).order_by("index").values_list("items", flat=True)] == [16] * 6


def _answers(lease, count: int) -> list[Answer]:
    return [
        Answer(version_id, case_id, "scored", output="42", score=1.0, reason="matches", finish_reason="stop",
                latency_ms=50.0, prompt_tokens=10, completion_tokens=2, cost_usd=Decimal("0.000003"))
        for version_id, case_id in lease.items[:count]
    ]


def _first_chunk_claimed():
    """A new qa_agent run (chunks of 16 pairs), its first chunk claimed by worker-a, and its context."""
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    chunk = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
    lease = benchmark_chunk_claim(chunk_id=chunk.pk, worker="worker-a@test")
    context = _chunk_context(BenchmarkRun.objects.select_related("agent", "candidate__provider", "baseline__provider").get(pk=run.pk), lease)
    return run, chunk, lease, context


@pytest.mark.django_db
def test_a_batch_whose_pairs_were_partly_written_meanwhile_writes_the_rest_and_counts_each_once(demo_simulator):
    run, chunk, lease, context = _first_chunk_claimed()
    answers = _answers(lease, 3)

    assert _store_answers(context, lease, answers[:1]) == (1, True)  # e.g. written by another worker
    long_ago = timezone.now() - timedelta(minutes=1)
    BenchmarkChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=long_ago)
    assert _store_answers(context, lease, answers) == (2, True)

    run.refresh_from_db()
    assert BenchmarkResult.objects.filter(run=run).count() == 3 and run.completed_items == 3
    assert BenchmarkChunk.objects.get(pk=chunk.pk).heartbeat_at > long_ago  # the batch renewed the lease
    # The first pair was answered (and paid) twice: the second answer has no result row, but its
    # money is on the ledger against the run, and in the run's cost.
    paid_again = CostEntry.objects.get(idempotency_key__contains=":paid-again:")
    assert paid_again.source_object == run and paid_again.amount_usd == Decimal("0.000003")
    assert "paid again" in paid_again.source and paid_again.input_tokens == 10
    assert benchmark_run_cost(run=run) == 4 * Decimal("0.000003")

    benchmark_run_cancel(run=run, actor=None, reason="test")
    created, still_running = _store_answers(context, lease, _answers(lease, 4)[3:])
    assert (created, still_running) == (1, False)  # an answer already paid for is kept; the chunk stops


@pytest.mark.django_db
def test_an_answer_paid_twice_after_the_run_ended_is_added_to_its_cost_once(demo_simulator):
    run, chunk, lease, context = _first_chunk_claimed()
    answers = _answers(lease, 2)
    _store_answers(context, lease, answers)
    benchmark_run_cancel(run=run, actor=None, reason="test")
    run.refresh_from_db()
    assert run.cost_usd == 2 * Decimal("0.000003")

    # A second holder's answers to the same pairs arrive after the run ended: charged, counted once.
    assert _store_answers(context, lease, answers) == (0, False)
    _store_answers(context, lease, answers)  # the same batch again (a retry) charges nothing more
    run.refresh_from_db()
    assert CostEntry.objects.filter(idempotency_key__contains=":paid-again:").count() == 2
    assert run.cost_usd == benchmark_run_cost(run=run) == 4 * Decimal("0.000003")


def _limiter(client, provider: str, **options) -> RedisProviderLimiter:
    settings_ = {"max_concurrency": 2, "rate_limit_per_minute": None, "lease_seconds": 5, "wait_limit_seconds": 5}
    return RedisProviderLimiter(client, provider=provider, **{**settings_, **options})


def _new_provider_keys() -> tuple[redis.Redis, str, str]:
    """A Redis client, a provider name no other test uses, and the key of its slot leases."""
    provider = f"test-{uuid.uuid4().hex[:8]}"
    return redis.Redis.from_url(settings.REDIS_URL), provider, f"{KEY_PREFIX}:{provider}:in-flight"


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@needs_redis
def test_a_slot_given_back_goes_to_a_waiting_thread_of_the_same_process_else_back_to_redis():
    client, provider, slots_key = _new_provider_keys()
    limiter = _limiter(client, provider, max_concurrency=1, keep_seconds=60)
    leases: dict[str, list[bytes]] = {}
    release_first = threading.Event()

    def call(name: str, hold: threading.Event | None = None) -> None:
        with limiter.slot():
            leases[name] = client.zrange(slots_key, 0, -1)
            if hold is not None:
                hold.wait(5)

    first = threading.Thread(target=call, args=("first", release_first))
    first.start()
    _wait_until(lambda: "first" in leases)
    asker = threading.Thread(target=call, args=("asker",))  # polls Redis for the one slot
    asker.start()
    _wait_until(lambda: limiter._asking)
    local = threading.Thread(target=call, args=("local",))  # waits here for a slot handed on
    local.start()
    _wait_until(lambda: limiter._waiting == 1)
    release_first.set()
    for thread in (first, asker, local):
        thread.join(5)
        assert not thread.is_alive()

    assert leases["local"] == leases["first"]  # the same lease, handed on without a round trip
    assert len(leases["asker"]) == 1  # nobody waited here any more: back to Redis, where the asker got it
    assert client.zcard(slots_key) == 0 and not limiter._handed_on
    with pytest.raises(RuntimeError):
        with limiter.slot():
            raise RuntimeError("the call failed")
    assert client.zcard(slots_key) == 0  # a failed call (and its backoff) holds no slot


@needs_redis
def test_a_single_waiter_is_handed_one_slot_however_many_calls_end_together():
    client, provider, slots_key = _new_provider_keys()
    limiter = _limiter(client, provider, max_concurrency=2, keep_seconds=60)
    (one, one_taken), (two, two_taken) = limiter._take(), limiter._take()
    with limiter._turns:
        limiter._waiting = 1  # one thread waits here: both calls end before it wakes up
    limiter._give_back(one, one_taken)
    limiter._give_back(two, two_taken)
    assert [token for token, _ in limiter._handed_on] == [one]
    assert client.zrange(slots_key, 0, -1) == [one.encode()]  # the second went back to Redis at once

    with limiter._turns:
        limiter._waiting = 0
    assert limiter._take()[0] == one  # the waiter's slot, still in force
    limiter.release(one)
    assert client.zcard(slots_key) == 0


@needs_redis
def test_slots_circulating_in_one_process_take_turns_with_other_processes_and_still_pace_each_call():
    client = redis.Redis.from_url(settings.REDIS_URL)
    provider = f"test-{uuid.uuid4().hex[:8]}"
    # Two "processes" (limiter instances) sharing one slot; the busy one has three threads calling
    # without a pause, so its slot is always wanted here, yet it goes back to Redis after 0.1 s.
    # Its wait is counted in the busy process's calls, not in seconds, which would measure how loaded the
    # machine is (1.1 s was seen in CI on 2 cores): a turn comes every 0.1 s, some ten calls of 10 ms.
    # Starved (a slot kept here for good), `other` sees thousands, then raises its busy error after 30 s.
    busy = _limiter(client, provider, max_concurrency=1, keep_seconds=0.1, wait_limit_seconds=120)
    other = _limiter(client, provider, max_concurrency=1, keep_seconds=0.1, wait_limit_seconds=30)
    busy_calls = 0
    stop = threading.Event()

    def keep_calling() -> None:
        nonlocal busy_calls
        while not stop.is_set():
            with busy.slot():
                busy_calls += 1
                time.sleep(0.01)

    threads = [threading.Thread(target=keep_calling) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        _wait_until(lambda: busy_calls >= 3, timeout=60)  # the busy process has its slot circulating
        calls_before_asking = busy_calls
        with other.slot():
            busy_calls_while_waiting = busy_calls - calls_before_asking
        _wait_until(lambda: busy_calls > calls_before_asking + busy_calls_while_waiting, timeout=60)  # they go on
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert busy_calls_while_waiting < 200  # its turn came within a few of the busy process's turns

    paced = _limiter(client, f"test-{uuid.uuid4().hex[:8]}", max_concurrency=1, rate_limit_per_minute=1200, keep_seconds=60)
    starts: list[float] = []

    def paced_calls() -> None:
        for _ in range(2):
            with paced.slot():
                starts.append(time.monotonic())

    threads = [threading.Thread(target=paced_calls) for _ in range(3)]
    asked_at = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 1 200 a minute: starts booked 50 ms apart, whether the slot came from Redis or was handed on (most
    # of these five hand-overs are local). Measured from before the first, as a thread the machine's load
    # delays records its start late, never early: gaps between recorded starts shrink under load (30 ms).
    assert max(starts) - asked_at >= 5 * 0.05 * 0.9


@needs_redis
def test_a_rate_limit_the_slots_cannot_reach_books_no_start_and_one_they_can_does():
    client = redis.Redis.from_url(settings.REDIS_URL)
    # 16 slots of calls lasting 1 ms or more start at most 960 000 calls a minute.
    for per_minute, paced in ((10_000_000, False), (1_000_000, False), (900_000, True), (600, True)):
        provider = f"test-{uuid.uuid4().hex[:8]}"
        limiter = _limiter(client, provider, max_concurrency=16, rate_limit_per_minute=per_minute)
        with limiter.slot():
            pass
        assert client.exists(f"{KEY_PREFIX}:{provider}:next-start") == paced, per_minute


def test_redis_out_of_reach_is_a_transient_error_and_giving_a_slot_back_never_raises():
    from models_app.providers import TransientProviderError

    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limiter = _limiter(unreachable, f"test-{uuid.uuid4().hex[:8]}")
    with pytest.raises(TransientProviderError, match="cannot be reached"):
        with limiter.slot():
            pass
    limiter.release("a-token")  # best effort: the lease would run out by itself


@pytest.mark.django_db
def test_an_answer_whose_judge_failed_after_its_run_was_cancelled_is_written_unscored_and_counted(demo_simulator):
    run, chunk, lease, context = _first_chunk_claimed()
    scored, judge_failed = _answers(lease, 2)
    judge_failed.kind, judge_failed.error, judge_failed.score = "unscored", "judge: 503 service unavailable", 0.0
    _store_answers(context, lease, [scored])

    benchmark_run_cancel(run=run, actor=None, reason="test")
    cost_when_cancelled = BenchmarkRun.objects.get(pk=run.pk).cost_usd
    _store_answers(context, lease, [judge_failed])  # its model answered (and was paid) before the cancel

    row = BenchmarkResult.objects.get(run=run, model_version_id=judge_failed.model_version_id, case_id=judge_failed.case_id)
    assert row.score == 0 and not row.scored and row.error.startswith("not scored") and "503" in row.error
    assert BenchmarkRun.objects.get(pk=run.pk).cost_usd == cost_when_cancelled + judge_failed.cost_usd
    # Its 0 is no grade: the cancelled run's means count only the answer that was scored.
    from models_app.benchmarks.selectors import benchmark_run_summary

    summary = benchmark_run_summary(run=BenchmarkRun.objects.get(pk=run.pk))
    assert summary["candidate"]["n"] + summary["baseline"]["n"] == 1


@needs_redis
def test_a_worker_whose_clock_is_wrong_neither_loses_nor_overstays_its_slot():
    # Leases and the pacer use Redis's clock: a worker an hour behind must still hold its slot (its
    # own clock would have written a lease that ran out an hour ago), and one an hour ahead must not
    # keep it an hour past its death.
    from models_app.providers import TransientProviderError

    client, provider, slots_key = _new_provider_keys()
    behind = _limiter(client, provider, max_concurrency=1, clock=lambda: time.time() - 3600)
    other = _limiter(client, provider, max_concurrency=1, wait_limit_seconds=0.2)
    with behind.slot():
        with pytest.raises(TransientProviderError, match="stayed busy"):
            other._take()

    ahead = _limiter(client, provider, max_concurrency=1, clock=lambda: time.time() + 3600)
    token, _ = ahead._take()
    assert client.zscore(slots_key, token) < time.time() + 10  # lease_seconds (5) from Redis's now
    ahead.release(token)


def _kept_answer(context, lease, answer):
    """`answer` kept because its judge failed (the model was paid), as a chunk's round leaves it."""
    failed = Answer(answer.model_version_id, answer.case_id, "unscored", output=answer.output, prompt_tokens=10,
                     completion_tokens=2, cost_usd=Decimal("0.000003"), error="judge: 503 service unavailable")
    _store_answers(context, lease, [failed])
    return BenchmarkUnscoredAnswer.objects.get(run_id=lease.run_id, case_id=answer.case_id,
                                               model_version_id=answer.model_version_id)


@pytest.mark.django_db
def test_a_judge_paid_after_the_run_wrote_its_kept_answer_is_charged_on_top(demo_simulator):
    run, chunk, lease, context = _first_chunk_claimed()
    kept = _kept_answer(context, lease, _answers(lease, 1)[0])
    benchmark_run_cancel(run=run, actor=None, reason="test")  # the kept answer becomes an unscored result
    assert BenchmarkRun.objects.get(pk=run.pk).cost_usd == Decimal("0.000003")

    # The judge asked again in that chunk's round answers now, after the run ended: its tokens were paid.
    judged = Answer(kept.model_version_id, kept.case_id, "scored", output=kept.output, score=1.0, prompt_tokens=10,
                     completion_tokens=2, judge_prompt_tokens=30, judge_completion_tokens=5,
                     cost_usd=Decimal("0.000005"), kept_id=kept.pk, kept_cost_usd=Decimal("0.000003"))
    _store_answers(context, lease, [judged])
    _store_answers(context, lease, [judged])  # written again: charged once

    entry = CostEntry.objects.get(idempotency_key__contains=":paid-again:")
    assert entry.amount_usd == Decimal("0.000002") and (entry.input_tokens, entry.output_tokens) == (30, 5)
    run.refresh_from_db()
    assert run.cost_usd == benchmark_run_cost(run=run) == Decimal("0.000005")
    assert BenchmarkResult.objects.get(run=run, case_id=kept.case_id).scored is False  # the result stays unscored


@pytest.mark.django_db
def test_a_kept_answer_whose_pair_another_worker_answered_is_charged_when_the_run_ends(demo_simulator):
    run, chunk, lease, context = _first_chunk_claimed()
    answer = _answers(lease, 1)[0]
    _kept_answer(context, lease, answer)
    _store_answers(context, lease, [answer])  # another holder of the chunk answered and judged the pair
    benchmark_run_cancel(run=run, actor=None, reason="test")

    run.refresh_from_db()
    entry = CostEntry.objects.get(idempotency_key__endswith=":paid-again:run-end")
    assert entry.amount_usd == Decimal("0.000003") and entry.source_object == run
    assert run.cost_usd == benchmark_run_cost(run=run) == 2 * Decimal("0.000003")
    assert BenchmarkResult.objects.get(run=run, case_id=answer.case_id).scored  # the judged result is kept


@pytest.mark.django_db
def test_the_answer_threads_log_with_the_chunk_tasks_fields(demo_simulator, monkeypatch):
    """A line logged while a case is answered (a provider's warning) runs in one of the chunk's pool threads,
    where Celery knows no task: it carried neither the task nor the chunk. The fields a handler reads as
    each line is emitted, in that thread, are the task's (genesis/logging.py)."""
    import logging

    from genesis.logging import record_fields
    from models_app.benchmarks import runner
    from models_app.benchmarks.tasks import benchmark_chunk_run

    seen: list[tuple[str, dict]] = []
    answer_pair = runner._answer_pair

    def answer_pair_noting_its_fields(context, version_id, case_id):  # the real answer, and what a line logs
        line = logging.LogRecord("models_app.providers", logging.WARNING, __file__, 1, "slow answer", (), None)
        seen.append((threading.current_thread().name, record_fields(line)))
        return answer_pair(context, version_id, case_id)

    monkeypatch.setattr(runner, "_answer_pair", answer_pair_noting_its_fields)
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    chunk = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
    benchmark_chunk_run.apply(args=(chunk.pk,), task_id="chunk-task")
    assert len(seen) == 16 and all(thread.startswith(f"benchmark-chunk-{chunk.pk}_") for thread, _ in seen)
    assert all(fields == {"task": "models_app.benchmark_chunk_run", "task_id": "chunk-task", "chunk_id": chunk.pk}
               for _, fields in seen), seen[:2]
    assert BenchmarkChunk.objects.get(pk=chunk.pk).status == "done"
