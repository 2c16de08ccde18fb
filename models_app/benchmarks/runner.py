"""The benchmark runner: a worker claims a chunk of (model, case) pairs (a lease with a heartbeat),
asks the models from a pool of threads within the provider's shared limits, scores the answers and
writes them in small batches. The sweep that hands the chunks of dead workers on is sweep.py; how a run
goes as a whole is services.py; the ledger side of each answer is ledger.py."""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from threading import Event
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from costs.pricing import Price, inference_cost
from genesis.errors import Conflict
from genesis.integrity import is_unique_violation
from genesis.jobs import check_move
from genesis.logging import with_task_fields
from models_app.benchmarks import scorers
from models_app.benchmarks.answers import JUDGE_REFUSED, RESULT_WRITTEN_ALREADY, Answer, result_row
from models_app.benchmarks.ledger import charge_paid_twice, cost_if_run_ended, post_costs_on_commit, price_for_estimate
from models_app.benchmarks.limits import ProviderLimiter, RedisProviderLimiter
from models_app.benchmarks.models import (
    FINISHED_RUN_STATUSES,
    RUN_TRANSITIONS,
    BenchmarkCase,
    BenchmarkChunk,
    BenchmarkChunkStatus,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkUnscoredAnswer,
)
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL, uses_judge
from models_app.benchmarks.services import benchmark_run_fail, benchmark_run_finish_if_complete, write_unscored_results
from models_app.benchmarks.suites import case_messages
from models_app.providers import (
    PermanentProviderError,
    ProviderAuthError,
    ProviderDestinationRefused,
    TransientProviderError,
    UnknownModelError,
    UnsupportedParameterError,
    call_with_retries,
)
from models_app.providers.base import ChatProvider, ChatResult
from models_app.providers.retry import BATCH_CALL_RETRY
from models_app.registry.gateway import provider_for
from models_app.registry.models import ModelVersion, ProviderAccount
from models_app.simulator.markers import strip_answer_markers

logger = logging.getLogger(__name__)


# Chunk leases. A worker renews its chunk's heartbeat at least this often…
CHUNK_HEARTBEAT_SECONDS = 5.0
# …so a running chunk whose heartbeat is older than this has lost its worker and is handed on.
CHUNK_STALLED_AFTER_SECONDS = 60.0
# A queued chunk is sent again after this long when nothing else says its message is lost: a broker
# outage at enqueue time, a receipt that could not be noted, a sweep without a ping. A worker killed
# after receiving the message does not wait for this: the chunk names it (`received_by`) and the sweep
# re-sends at once once it no longer answers (with every chunk that names nobody, for a worker killed
# before it could note the receipt). A duplicate is harmless. (The resume sweep's rule, sweep.py; here
# because a chunk's retry must come sooner: chunk_retry_wait_limit.)
QUEUED_CHUNK_RESEND_AFTER_SECONDS = 600.0
# Rounds of transient failures a chunk may go through (each after per-call retries) before the run fails.
MAX_CHUNK_ATTEMPTS = 6
# Claims of one chunk (retries, hand-overs after dead workers) after which the run fails instead of
# trying forever: a chunk that keeps killing its workers or its task needs a person.
MAX_CHUNK_CLAIMS = 12
# Results are written in small batches: often enough that a killed worker loses little, rarely
# enough that writing does not dominate a fast provider.
FLUSH_EVERY_SECONDS = 0.25
FLUSH_MAX_RESULTS = 48
# Per call: retries of transient errors inside the chunk, with backoff (the provider layer's policy).
CALL_RETRY_POLICY = BATCH_CALL_RETRY
# A call refused for what it is, not for the case it carries: every call of the run would be refused too.
CALL_CANNOT_SUCCEED = (ProviderAuthError, ProviderDestinationRefused, UnknownModelError, UnsupportedParameterError)
JUDGE_CACHE_SECONDS = 30 * 24 * 3600
# A shared call slot outlives a killed holder by at most this long (live holders renew theirs).
LIMITER_LEASE_SECONDS = 6.0


@dataclass(frozen=True)
class ChunkLease:
    chunk_id: int
    run_id: int
    token: uuid.UUID
    items: list[tuple[int, int]]
    claims: int


@dataclass
class ChunkOutcome:
    chunk_id: int
    run_id: int | None = None
    scored: int = 0
    skipped_reason: str = ""
    retry_in: float | None = None  # set when transient failures remain: the task retries after this long
    error: str = ""
    run_finished: bool = False


def worker_identity(*, node: str) -> str:
    """Who holds a chunk: the Celery node name (what a ping answers) and the process id, because the
    pool processes of one worker share its node name."""
    return f"{node}#{os.getpid()}"


def worker_node(identity: str) -> str:
    return identity.rpartition("#")[0] or identity


def _holder_alive(holder: str, claimant: str) -> bool | None:
    """Whether the process holding a chunk still exists, when it runs on the claimant's worker (same
    node, so the same host); None when only its heartbeat can tell."""
    node, _, pid = holder.rpartition("#")
    if not node or node != worker_node(claimant) or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def benchmark_chunk_received(*, chunk_id: int, worker: str) -> bool:
    """Note that the Celery node `worker` received a message for this chunk and has not claimed it
    yet, so that if it dies holding the message (unacknowledged until Redis' visibility timeout) the
    resume sweep sends the chunk again at once. One UPDATE, only while the chunk is queued: a running
    chunk's holder is already watched. Returns whether a queued chunk was marked."""
    return bool(
        BenchmarkChunk.objects.filter(pk=chunk_id, status=BenchmarkChunkStatus.QUEUED).update(received_by=worker[:200])
    )


def benchmark_chunk_retry_not_sent(*, chunk_id: int) -> bool:
    """The chunk was released to retry (`enqueued_at` set: its task's retry message on its way), but
    the broker could not take that message, and Celery drops the one being handled. Forget the
    enqueue, so the resume sweep sends the chunk at its next pass rather than
    QUEUED_CHUNK_RESEND_AFTER_SECONDS later. Only while the chunk is queued and unheld; a message sent
    meanwhile by the sweep is then only duplicated, which is harmless. Returns whether it was queued."""
    return bool(
        BenchmarkChunk.objects.filter(pk=chunk_id, status=BenchmarkChunkStatus.QUEUED, lease_token__isnull=True)
        .update(enqueued_at=None)
    )


@transaction.atomic
def benchmark_chunk_claim(*, chunk_id: int, worker: str) -> ChunkLease | None:
    """Take the chunk for `worker` (see `worker_identity`), or None when it is done, its run is over,
    or another live process holds it. A chunk whose holder is gone (a dead pool process of the same
    worker, or no heartbeat for CHUNK_STALLED_AFTER_SECONDS) is taken over."""
    chunk = BenchmarkChunk.objects.select_for_update().filter(pk=chunk_id).first()
    if chunk is None:
        return None
    now = timezone.now()
    # The first chunk claimed starts the run; one conditional UPDATE, so two claims at once start it once.
    check_move(RUN_TRANSITIONS, name=f"benchmark run #{chunk.run_id}", current=BenchmarkRunStatus.QUEUED, to=BenchmarkRunStatus.RUNNING)
    BenchmarkRun.objects.filter(pk=chunk.run_id, status=BenchmarkRunStatus.QUEUED).update(
        status=BenchmarkRunStatus.RUNNING, started_at=now
    )
    run_status = BenchmarkRun.objects.filter(pk=chunk.run_id).values_list("status", flat=True).get()
    if run_status != BenchmarkRunStatus.RUNNING or chunk.status == BenchmarkChunkStatus.DONE:
        return None
    if chunk.status == BenchmarkChunkStatus.RUNNING and chunk.worker != worker:
        alive = _holder_alive(chunk.worker, worker)
        fresh = chunk.heartbeat_at is not None and chunk.heartbeat_at > now - timedelta(seconds=CHUNK_STALLED_AFTER_SECONDS)
        if alive or (alive is None and fresh):
            return None
    chunk.status = BenchmarkChunkStatus.RUNNING
    chunk.worker = worker[:200]
    chunk.lease_token = uuid.uuid4()
    chunk.attempts += 1
    chunk.heartbeat_at = now
    chunk.started_at = chunk.started_at or now
    chunk.save(update_fields=["status", "worker", "lease_token", "attempts", "heartbeat_at", "started_at"])
    return ChunkLease(
        chunk_id=chunk.pk, run_id=chunk.run_id, token=chunk.lease_token, items=[(int(a), int(b)) for a, b in chunk.items],
        claims=chunk.attempts,
    )


def _heartbeat(lease: ChunkLease) -> bool:
    """Renew the lease; False when the chunk was handed to another worker or the run is over (one
    statement: the run's status is read by the same UPDATE)."""
    renewed = BenchmarkChunk.objects.filter(
        pk=lease.chunk_id, lease_token=lease.token, status=BenchmarkChunkStatus.RUNNING,
        run__status=BenchmarkRunStatus.RUNNING,
    ).update(heartbeat_at=timezone.now())
    return bool(renewed)


@transaction.atomic
def _release_chunk(lease: ChunkLease, *, done: bool, error: str = "", enqueued: bool = True) -> None:
    """Give the lease back: the chunk is done, or queued again. `enqueued` says a message for it is on
    its way (the task retries itself); without one, the resume sweep sends it at its next pass. The
    receiver of earlier messages is cleared: the next message's receiver notes itself."""
    changes: dict[str, Any] = {
        "status": BenchmarkChunkStatus.DONE if done else BenchmarkChunkStatus.QUEUED,
        "lease_token": None,
        "received_by": "",
        "finished_at": timezone.now() if done else None,
        "enqueued_at": timezone.now() if not done and enqueued else None,
    }
    if error:
        changes["error"] = error[:2000]  # otherwise the note of what happened before (e.g. a hand-over) stays
    BenchmarkChunk.objects.filter(pk=lease.chunk_id, lease_token=lease.token).update(**changes)


class _JudgeCache:
    """The LLM judge's verdicts in the shared cache (Redis when configured), so a judged reply is
    never judged, or paid for, again — across workers and restarts."""

    def get(self, key: str) -> Mapping[str, Any] | None:
        return cache.get(f"genesis:benchmarks:{key}")

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        cache.set(f"genesis:benchmarks:{key}", dict(value), JUDGE_CACHE_SECONDS)


def _limiter_for(account: ProviderAccount) -> ProviderLimiter:
    """The shared (Redis) limits of a provider account; none without Redis, where the provider's
    own in-process gate is the only limit."""
    if not settings.REDIS_URL:
        return ProviderLimiter()
    identity = (account.pk, account.max_concurrency, account.rate_limit_per_minute, account.timeout_seconds)
    limiter = _limiters.get(identity)
    if limiter is None:
        import redis

        limiter = RedisProviderLimiter(
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5),
            provider=f"{account.pk}-{account.name}",
            max_concurrency=account.max_concurrency,
            rate_limit_per_minute=account.rate_limit_per_minute or None,
            lease_seconds=LIMITER_LEASE_SECONDS,
            wait_limit_seconds=max(30.0, account.timeout_seconds),
        )
        _limiters[identity] = limiter
    return limiter


@dataclass(frozen=True)
class _Route:
    """How a chunk's threads reach one provider account: its process-wide client and shared limits,
    looked up once per chunk rather than at every call."""

    provider: ChatProvider
    limiter: ProviderLimiter

    @classmethod
    def of(cls, account: ProviderAccount) -> _Route:

        return cls(provider=provider_for(account), limiter=_limiter_for(account))


@dataclass
class _ChunkContext:
    run: BenchmarkRun
    cases: dict[int, BenchmarkCase]
    versions: dict[int, ModelVersion]
    routes: dict[int, _Route]  # by model version id
    prices: dict[int, Price]
    judge_price: Price | None
    judge_route: _Route | None
    # Answers of earlier rounds whose judge failed, by (model version id, case id).
    unscored: dict[tuple[int, int], BenchmarkUnscoredAnswer] = field(default_factory=dict)
    stop: Event = field(default_factory=Event)


def _ask(route: _Route, model: str, messages: list[dict[str, str]], parameters: Mapping[str, Any]) -> ChatResult:
    provider, limiter = route.provider, route.limiter

    def attempt() -> ChatResult:
        with limiter.slot():
            return provider.chat(model=model, messages=messages, parameters=parameters)

    # The shared slot is held only during the call itself, never during a backoff wait.
    return call_with_retries(attempt, policy=CALL_RETRY_POLICY)


def _answer_pairs(context: _ChunkContext, todo: deque[tuple[int, int]], answers: queue.SimpleQueue[Any]) -> None:
    """One of a chunk's threads: take pairs from `todo` until none is left, putting each answer (or
    the unexpected exception) on `answers` for the chunk's main thread, which writes them. Its call
    slot is handed to another thread of the process between calls (benchmark_limits)."""
    while True:
        try:
            version_id, case_id = todo.popleft()
        except IndexError:
            return
        try:
            answers.put(_answer_pair(context, version_id, case_id))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread, which fails the run
            answers.put(exc)
            if not isinstance(exc, Exception):
                raise


def _answer_pair(context: _ChunkContext, version_id: int, case_id: int) -> Answer:
    """Runs in a worker thread: no database access here (the main thread writes)."""
    if context.stop.is_set():
        return Answer(version_id, case_id, "skipped")
    kept = context.unscored.get((version_id, case_id))
    # Asked and paid in an earlier round whose judge failed: only the judge is asked again.
    answer = _kept_answer(kept, version_id, case_id) if kept is not None else _ask_model(context, version_id, case_id)
    if answer.kind == "scored":
        _score_answer(context, context.cases[case_id], answer)
    return answer


def _kept_answer(kept: Any, version_id: int, case_id: int) -> Answer:
    return Answer(
        version_id, case_id, "scored", output=kept.output, finish_reason=kept.finish_reason, latency_ms=kept.latency_ms,
        prompt_tokens=kept.prompt_tokens, completion_tokens=kept.completion_tokens,
        judge_prompt_tokens=kept.judge_prompt_tokens, judge_completion_tokens=kept.judge_completion_tokens,
        tokens_estimated=kept.tokens_estimated, cost_usd=kept.cost_usd, kept_id=kept.pk, kept_cost_usd=kept.cost_usd,
        kept_judge_tokens=(kept.judge_prompt_tokens, kept.judge_completion_tokens),
    )


def _ask_model(context: _ChunkContext, version_id: int, case_id: int) -> Answer:
    """The model's answer to the case, not scored yet; or why there is none."""
    params, case, version = context.run.parameters, context.cases[case_id], context.versions[version_id]
    generation = {key: params[key] for key in ("temperature", "top_p", "max_tokens", "random_seed") if params.get(key) is not None}
    messages = case_messages(case_messages=case.messages, system_prompt=str(params.get("system_prompt") or ""))
    try:
        result = _ask(context.routes[version_id], version.model_id, messages, generation)
    except CALL_CANNOT_SUCCEED as error:
        # Not about this case: every pair would fail the same way, so the run fails now, saying why.
        return Answer(version_id, case_id, "fatal", error=f"{version.model_id}: {error}")
    except PermanentProviderError as error:
        return Answer(version_id, case_id, "refused", reason="the provider refused this case", error=str(error)[:2000])
    except TransientProviderError as error:
        return Answer(version_id, case_id, "transient", error=str(error), retry_after=error.retry_after, attempts=error.attempts)
    return Answer(
        version_id, case_id, "scored", output=result.text, finish_reason=result.finish_reason,
        latency_ms=result.latency_ms, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        tokens_estimated=result.tokens_estimated, cost_usd=inference_cost(
            price=context.prices[version_id], input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens
        ),
    )


def _score_answer(context: _ChunkContext, case: BenchmarkCase, answer: Answer) -> None:
    """Score the answer in place with the case's scorer, asking the judge when the scorer needs one and
    adding what the judge cost; a judge that fails transiently leaves the answer unscored (kept)."""
    # Every judge reply received for this answer, counted as it arrives: a composite scorer may have
    # paid one judge before another failed, and what was paid must reach the ledger either way.
    judge_spent = [0, 0]
    judge_estimated = [False]  # any of those replies came without usage: its counts were estimated
    judge = None
    if context.judge_route is not None:
        judge_route = context.judge_route

        def ask_judge(model: str, judge_messages: list[dict[str, str]]) -> scorers.JudgeReply:
            reply = _ask(judge_route, model, judge_messages, {"temperature": 0.0, "max_tokens": 200})
            judge_spent[0] += reply.prompt_tokens
            judge_spent[1] += reply.completion_tokens
            judge_estimated[0] = judge_estimated[0] or reply.tokens_estimated
            return scorers.JudgeReply(reply.text, reply.prompt_tokens, reply.completion_tokens)

        judge = scorers.JudgeContext(
            ask=ask_judge, cache=_JudgeCache(),
            default_model=str(context.run.parameters.get("judge_model") or DEFAULT_JUDGE_MODEL),
            question=strip_answer_markers(str(case.messages[-1].get("content", ""))),
        )
    graded: scorers.Score | None
    try:
        graded = scorers.score_output(spec=case.scorer, output=answer.output, reference=case.reference, judge=judge)
    except scorers.ScorerSpecError as error:
        graded = scorers.Score(0.0, f"scorer error: {error}")
    except TransientProviderError as error:
        # The judge failed transiently: the answer is kept, and only the judge is asked again later.
        answer.kind, answer.error, answer.retry_after = "unscored", f"judge: {error}", error.retry_after
        answer.attempts = error.attempts
        graded = None
    except CALL_CANNOT_SUCCEED as error:
        # No answer of the run can be judged: this one is kept for its cost, and the run fails.
        graded = None
        answer.scored, answer.reason, answer.error = False, "not graded: the judge cannot be called", f"judge: {error}"
        answer.run_error = f"the judge cannot be called: {error}"
    except PermanentProviderError as error:
        # The judge refused this answer (a content filter, say): there is no grade, and a missing grade must
        # never help the candidate — a filter may refuse exactly its worst answers. So the pair is compared
        # as the worst case for the candidate (0 for its answer, 1 for the baseline's), and says so.
        worst = 0.0 if answer.model_version_id == context.run.candidate_id else 1.0
        graded = scorers.Score(worst, f"not graded: the judge refused it; counted as the worst case for the candidate ({worst:g})")
        answer.error = f"{JUDGE_REFUSED}{str(error)[:2000]}"
    if any(judge_spent):
        assert context.judge_price is not None  # looked up with the judge's route, which was asked
        answer.judge_prompt_tokens += judge_spent[0]
        answer.judge_completion_tokens += judge_spent[1]
        answer.cost_usd += inference_cost(price=context.judge_price, input_tokens=judge_spent[0], output_tokens=judge_spent[1])
        answer.judge_estimated_this_round = judge_estimated[0]
        answer.tokens_estimated = answer.tokens_estimated or judge_estimated[0]
    if graded is not None:
        answer.score, answer.reason = graded.score, graded.reason


def _store_answers(context: _ChunkContext, lease: ChunkLease, answers: list[Answer]) -> tuple[int, bool]:
    """Write a batch of results, renew the lease and add to the run's progress in one transaction
    (one commit a batch; a batch holding judge retries commits those in a second one). Returns (new
    results, lease still ours and run still running).

    The rows go in without a look first: the unique (run, model, case) constraint is what keeps a
    pair from being written twice. Only when another worker wrote some of them meanwhile (a chunk
    handed on while its first holder still lived) does the insert fail; the batch is then written
    again one row at a time, skipping the pairs already there. Those pairs were paid for twice, so
    this worker's answers to them still go on the ledger (`charge_paid_twice`).

    Answers that involve a kept answer (its judge failed now, or it was judged at last) are written
    apart, by `_store_judge_retries`."""
    run = context.run
    retries = [answer for answer in answers if answer.kind == "unscored" or answer.kept_id is not None]
    if retries:
        answers = [answer for answer in answers if not (answer.kind == "unscored" or answer.kept_id is not None)]
    try:
        with transaction.atomic():
            BenchmarkResult.objects.bulk_create([result_row(run.pk, a) for a in answers])
            created, still_ours = len(answers), _count_progress(lease, answers)
    except IntegrityError as exc:
        if not is_unique_violation(exc, *RESULT_WRITTEN_ALREADY):
            raise
        with transaction.atomic():
            written, paid_twice = [], []
            for answer in answers:
                try:
                    with transaction.atomic():
                        result_row(run.pk, answer).save(force_insert=True)
                    written.append(answer)
                except IntegrityError as exc:
                    if not is_unique_violation(exc, *RESULT_WRITTEN_ALREADY):
                        raise
                    paid_twice.append(answer)
            created, still_ours = len(written), _count_progress(lease, written)
            charge_paid_twice(run, paid_twice, attempt=f"claim-{lease.claims}")
    if retries:
        created += _store_judge_retries(run, retries, attempt=f"claim-{lease.claims}")
    return created, still_ours


def _count_progress(lease: ChunkLease, created: list[Answer]) -> bool:
    """Inside the batch's transaction: renew the lease, then add the new results to the run's
    progress (the chunk's row before the run's, the order the other services lock them in)."""
    still_ours = _heartbeat(lease)
    if created:
        cost = sum((answer.cost_usd for answer in created), Decimal(0))
        BenchmarkRun.objects.filter(pk=lease.run_id).update(
            completed_items=F("completed_items") + len(created), cost_usd=cost_if_run_ended(cost)
        )
    return still_ours


@transaction.atomic
def _store_judge_retries(run: BenchmarkRun, answers: list[Answer], *, attempt: str) -> int:
    """Write the answers of a batch that concern the LLM judge's retries: kept answers judged at last
    become results (their kept row goes), answers whose judge failed are kept for the next round.
    When the run has ended meanwhile, those are written as unscored results instead: nobody would
    judge them, and their cost must still count. Returns the new scored results.

    The run's row is locked first, as the ending services do before `write_unscored_answers_as_results`
    (and before the results and kept rows): either they see the rows kept here, or this sees the run
    ended. Rare (judge failures only), so the lock costs the ordinary batches nothing. A judged answer
    whose pair was written meanwhile (the run ended and wrote its kept answer, or another holder
    judged it) still paid its judge: `charge_paid_twice`."""
    run_id = run.pk
    status = BenchmarkRun.objects.select_for_update().filter(pk=run_id).values_list("status", flat=True).get()
    judged = [answer for answer in answers if answer.kind != "unscored"]
    unscored = [answer for answer in answers if answer.kind == "unscored"]
    created, paid_twice = [], []
    for answer in judged:
        try:
            with transaction.atomic():
                result_row(run_id, answer).save(force_insert=True)
            created.append(answer)
        except IntegrityError as exc:
            if not is_unique_violation(exc, *RESULT_WRITTEN_ALREADY):
                raise
            paid_twice.append(answer)  # written already (the chunk handed on, or the run ended and wrote its kept answers)
    BenchmarkUnscoredAnswer.objects.filter(pk__in=[answer.kept_id for answer in judged]).delete()
    late_cost = Decimal(0)
    if status in FINISHED_RUN_STATUSES:
        unscored_cost, written_already = write_unscored_results(run_id, unscored)
        late_cost = sum((answer.cost_usd for answer in created), Decimal(0)) + unscored_cost
        paid_twice += written_already
    else:
        _keep_unscored(run_id, unscored)
    if created or late_cost:
        BenchmarkRun.objects.filter(pk=run_id).update(
            completed_items=F("completed_items") + len(created), cost_usd=F("cost_usd") + late_cost
        )
    charge_paid_twice(run, paid_twice, attempt=attempt)
    return len(created)


def _keep_unscored(run_id: int, answers: list[Answer]) -> None:
    """Keep answers whose judge failed, for the chunk's next round to ask only the judge."""
    for answer in answers:
        if answer.kept_id is not None:
            # Kept already and failed again: a composite scorer may have paid another judge meanwhile.
            BenchmarkUnscoredAnswer.objects.filter(pk=answer.kept_id).update(
                judge_prompt_tokens=answer.judge_prompt_tokens, judge_completion_tokens=answer.judge_completion_tokens,
                tokens_estimated=answer.tokens_estimated, cost_usd=answer.cost_usd, error=answer.error[:2000],
                updated_at=timezone.now(),
            )
    BenchmarkUnscoredAnswer.objects.bulk_create(
        [
            BenchmarkUnscoredAnswer(
                run_id=run_id, model_version_id=a.model_version_id, case_id=a.case_id, output=a.output,
                finish_reason=a.finish_reason[:32], latency_ms=a.latency_ms, prompt_tokens=a.prompt_tokens,
                completion_tokens=a.completion_tokens, judge_prompt_tokens=a.judge_prompt_tokens,
                judge_completion_tokens=a.judge_completion_tokens, tokens_estimated=a.tokens_estimated,
                cost_usd=a.cost_usd, error=a.error[:2000],
            )
            for a in answers
            if a.kept_id is None
        ],
        ignore_conflicts=True,  # kept already by another holder of the chunk
    )


def benchmark_chunk_execute(*, chunk_id: int, worker: str) -> ChunkOutcome:
    """Claim a chunk, answer and score its remaining pairs, write them, and finish the run when
    this was the last chunk. Not one transaction on purpose: it runs for seconds to minutes, and
    each batch of results commits on its own so a killed worker keeps what it wrote."""
    lease = benchmark_chunk_claim(chunk_id=chunk_id, worker=worker)
    if lease is None:
        return ChunkOutcome(chunk_id=chunk_id, skipped_reason="done, run over, or held by a live worker")
    try:
        return _execute_claimed_chunk(lease)
    except BaseException as error:
        # A database error, a soft time limit, a bug: give the lease back now (the chunk's threads
        # have stopped by then), so the task's retry, which may run in another process, can claim it at
        # once instead of waiting for the heartbeat to age. No enqueued_at: the resume sweep sends it
        # again at its next pass in case nothing retries it. Best effort: the database may be the
        # error, and then the lease simply ages as before.
        try:
            _release_chunk(lease, done=False, error=f"the chunk's task stopped: {type(error).__name__}: {error}",
                           enqueued=False)
        except Exception as release_error:  # noqa: BLE001 - the original error is what matters
            logger.warning("benchmark chunk %s: could not give its lease back (%s)", chunk_id, release_error)
        raise


def _execute_claimed_chunk(lease: ChunkLease) -> ChunkOutcome:
    """`benchmark_chunk_execute` once the chunk is ours: answer the pairs not yet written, then say
    how the chunk ends (done, retried later, handed on, or the run failed)."""
    run = BenchmarkRun.objects.select_related("agent", "candidate__provider", "baseline__provider").get(pk=lease.run_id)
    if lease.claims > MAX_CHUNK_CLAIMS:
        previous = BenchmarkChunk.objects.filter(pk=lease.chunk_id).values_list("error", flat=True).get()
        message = f"chunk {lease.chunk_id} was started {lease.claims - 1} times without finishing" + (
            f"; last: {previous}" if previous else ""
        )
        return _fail_chunk_and_run(lease, ChunkOutcome(chunk_id=lease.chunk_id), error=message)
    try:
        context = _chunk_context(run, lease)
    except Conflict as error:
        return _fail_chunk_and_run(lease, ChunkOutcome(chunk_id=lease.chunk_id), error=error.message)
    done = set(
        BenchmarkResult.objects.filter(run_id=run.pk, case_id__in={case_id for _, case_id in lease.items}).values_list(
            "model_version_id", "case_id"
        )
    )
    collected = _collect_answers(context, lease, [item for item in lease.items if item not in done])
    if collected.outcome.scored:
        post_costs_on_commit(run.pk)
    return _conclude_chunk(lease, collected)


def _fail_chunk_and_run(lease: ChunkLease, outcome: ChunkOutcome, *, error: str, run_error: str = "") -> ChunkOutcome:
    _release_chunk(lease, done=False, error=error)
    benchmark_run_fail(run_id=lease.run_id, error=run_error or error)
    outcome.error, outcome.run_finished = error, True
    return outcome


@dataclass
class _Collected:
    """What the chunk's main thread gathered from its threads: written results (in `outcome`), answers
    waiting for the next write, pairs to retry, and why it stopped early if it did."""

    outcome: ChunkOutcome
    buffer: list[Answer] = field(default_factory=list)
    transient: list[Answer] = field(default_factory=list)
    fatal: str = ""
    lost_lease: bool = False

    def take(self, answer: Answer | BaseException, context: _ChunkContext) -> None:
        if isinstance(answer, BaseException):  # a bug must fail the run with its message, not loop
            logger.error("benchmark chunk %s: unexpected error", self.outcome.chunk_id, exc_info=answer)
            self.fatal = self.fatal or f"internal error while scoring: {type(answer).__name__}: {answer}"
            context.stop.set()
        elif answer.kind in ("scored", "refused"):
            self.buffer.append(answer)
            if answer.run_error:  # written with the others first: it was paid for
                self.fatal = self.fatal or answer.run_error
                context.stop.set()
        elif answer.kind == "unscored":
            self.buffer.append(answer)  # kept (paid for) at the next write
            self.transient.append(answer)  # and its judge asked again in the next round
        elif answer.kind == "transient":
            self.transient.append(answer)
        elif answer.kind == "fatal":
            self.fatal = self.fatal or answer.error
            context.stop.set()

    def write(self, context: _ChunkContext, lease: ChunkLease) -> None:
        """Write the buffered answers (or only renew the lease); a lease lost meanwhile stops the threads."""
        created, still_ours = _store_answers(context, lease, self.buffer) if self.buffer else (0, _heartbeat(lease))
        self.outcome.scored += created
        self.buffer = []
        if not still_ours and not context.stop.is_set():
            self.lost_lease = True
            context.stop.set()  # the threads skip what they have not started


def _collect_answers(context: _ChunkContext, lease: ChunkLease, pending: list[tuple[int, int]]) -> _Collected:
    """Ask the pending pairs from a pool of threads; the calling thread writes their answers in small
    batches (every FLUSH_EVERY_SECONDS or FLUSH_MAX_RESULTS), renewing the lease at least every
    CHUNK_HEARTBEAT_SECONDS while it waits."""
    collected = _Collected(outcome=ChunkOutcome(chunk_id=lease.chunk_id, run_id=lease.run_id))
    # As many threads as call slots: with two chunks in two processes that is twice the slots, so a
    # slot handed on finds a thread ready (benchmarks/limits.py); more threads measured slower (GIL).
    threads = min(len(pending), max(v.provider.max_concurrency for v in context.versions.values())) or 1
    todo = deque(pending)
    answers: queue.SimpleQueue[Answer | BaseException] = queue.SimpleQueue()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"benchmark-chunk-{lease.chunk_id}") as pool:
        try:
            # Their lines (a provider's warning) carry the task's fields, as this thread's do (genesis/logging.py).
            answer_pairs = with_task_fields(_answer_pairs)
            workers = [pool.submit(answer_pairs, context, todo, answers) for _ in range(threads)]
            remaining = len(pending)
            last_write = time.monotonic()
            while remaining:
                write_at = last_write + (FLUSH_EVERY_SECONDS if collected.buffer else CHUNK_HEARTBEAT_SECONDS)
                try:
                    collected.take(answers.get(timeout=max(0.0, write_at - time.monotonic())), context)
                    remaining -= 1
                except queue.Empty:
                    if all(worker.done() for worker in workers) and answers.empty():
                        # Every thread ended (a BaseException) with pairs left: stop rather than wait forever.
                        collected.fatal = collected.fatal or f"the chunk's threads stopped with {remaining} pair(s) unanswered"
                        break
                full = len(collected.buffer) >= FLUSH_MAX_RESULTS or not remaining
                if (collected.buffer and full) or time.monotonic() >= write_at:
                    collected.write(context, lease)
                    last_write = time.monotonic()
            if collected.buffer:
                collected.write(context, lease)
        except BaseException:
            # A database error, a soft time limit…: the threads must not go on asking (and paying).
            context.stop.set()
            raise
    return collected


def _conclude_chunk(lease: ChunkLease, collected: _Collected) -> ChunkOutcome:
    """Release the chunk as its answers say: the run fails on a fatal answer or after too many rounds
    of transient failures, a lost lease leaves the chunk to its new holder, transient failures retry
    the chunk later (honouring Retry-After), and a complete chunk may finish the run."""
    outcome = collected.outcome
    if collected.fatal:
        return _fail_chunk_and_run(lease, outcome, error=collected.fatal)
    if collected.lost_lease:
        outcome.skipped_reason = "the run stopped or the chunk was handed to another worker"
        return outcome
    if collected.transient:
        message = f"{len(collected.transient)} pair(s) failed transiently {_attempts_made(collected.transient)}, e.g. {collected.transient[0].error}"
        attempts = BenchmarkChunk.objects.filter(pk=lease.chunk_id).values_list("attempts", flat=True).get()
        if attempts >= MAX_CHUNK_ATTEMPTS:
            return _fail_chunk_and_run(
                lease, outcome, error=message, run_error=f"chunk {lease.chunk_id} gave up after {attempts} rounds: {message}"
            )
        waits = [a.retry_after for a in collected.transient if a.retry_after is not None]
        wanted, limit = max([5.0 * attempts, *waits]), chunk_retry_wait_limit()
        if wanted > limit:
            message += (f"; the provider asked to wait {wanted:.0f}s, longer than a chunk waits for its retry: "
                        f"retried in {limit:.0f}s")
        _release_chunk(lease, done=False, error=message)
        outcome.retry_in = min(wanted, limit)
        outcome.error = message
        return outcome
    _release_chunk(lease, done=True)
    outcome.run_finished = benchmark_run_finish_if_complete(run_id=lease.run_id) is not None
    return outcome


def _attempts_made(transient: list[Answer]) -> str:
    """How many calls the failed pairs were given: a long Retry-After stops a pair's retries at its
    first call."""
    made = sorted({answer.attempts for answer in transient if answer.attempts}) or [CALL_RETRY_POLICY.max_attempts]
    if len(made) == 1:
        return f"after {made[0]} attempt{'' if made[0] == 1 else 's'} each"
    return f"after {made[0]} to {made[-1]} attempts each"


def chunk_retry_wait_limit() -> float:
    """The longest a chunk waits for its retry, whatever Retry-After the provider sent (an HTTP date
    decades away would otherwise become the countdown): half the time after which the resume sweep
    sends a queued chunk again (it would send it a second time meanwhile) and of the broker's
    visibility timeout (Redis hands out again a message held unacknowledged longer, and a retry's
    message is held by the worker until its countdown ends)."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout")
    held_for = float(visibility) if isinstance(visibility, int | float) and visibility > 0 else QUEUED_CHUNK_RESEND_AFTER_SECONDS
    return min(QUEUED_CHUNK_RESEND_AFTER_SECONDS, held_for) / 2


def _chunk_context(run: BenchmarkRun, lease: ChunkLease) -> _ChunkContext:
    case_ids = {case_id for _, case_id in lease.items}
    cases = {case.pk: case for case in BenchmarkCase.objects.filter(pk__in=case_ids)}
    versions = {run.baseline_id: run.baseline, run.candidate_id: run.candidate}
    prices = {pk: price_for_estimate(version.model_id, version.base_model) for pk, version in versions.items()}
    judge_account = judge_price = None
    if any(uses_judge(case.scorer) for case in cases.values()):
        judge_price = price_for_estimate(str(run.parameters.get("judge_model") or DEFAULT_JUDGE_MODEL), None)
        provider_name = run.parameters.get("judge_provider")
        judge_account = (
            ProviderAccount.objects.filter(name=provider_name).first() if provider_name else run.candidate.provider
        )
        if judge_account is None:
            raise Conflict(f"judge provider '{provider_name}' does not exist")
    routes = {pk: _Route.of(version.provider) for pk, version in versions.items()}
    unscored = {}
    if judge_account is not None:  # only the judge leaves answers unscored
        unscored = {
            (answer.model_version_id, answer.case_id): answer
            for answer in BenchmarkUnscoredAnswer.objects.filter(run_id=run.pk, case_id__in=case_ids)
        }
    return _ChunkContext(run=run, cases=cases, versions=versions, routes=routes, prices=prices, judge_price=judge_price,
                         judge_route=_Route.of(judge_account) if judge_account is not None else None, unscored=unscored)


_limiters: dict[tuple[Any, ...], ProviderLimiter] = {}


# Other apps' paid calls (the safety app's WaltzRL builds) take their slots from the same shared limits.
provider_limiter = _limiter_for
