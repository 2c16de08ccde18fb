"""Every write of benchmarks: suites, runs and their chunks, case results, verdicts and overrides.

How a run goes (the admin, the API and the commands all start it with `benchmark_run_create`):

1. `benchmark_run_create` resolves the suite, candidate and baseline, estimates the cost and checks
   it against the budget (costs.budget_check: a refusal is a Conflict), moves the candidate to
   benchmarking (an approved_for_rollout one keeps its status), and splits the (model, case) pairs
   into chunks — rows — each sent to the `benchmarks` queue once the transaction commits.
2. A worker's `benchmark_chunk_execute` claims a chunk (a lease: worker name + token + heartbeat),
   asks the models from max_concurrency threads that take pairs one after another within the shared
   limits in Redis (models_app/benchmarks/limits.py), scores the answers, and its main thread writes
   them in small batches (one transaction each: the rows, the lease's heartbeat, the run's
   progress). Each result is unique per (run, model, case): a pair is scored once.
   Its cost goes on the ledger once, under the result's idempotency key, posted just after by
   `benchmark_run_post_costs` (a `default`-queue task): the result row is the outbox. Posting in the
   chunk itself would hold every batch for the ledger's budget locks (several round trips a result,
   more than the provider call's share of the chunk's time).
   An answer whose LLM judge fails transiently is kept (BenchmarkUnscoredAnswer) with its cost, so
   the chunk's retry asks only the judge: the model is never asked, nor paid, twice.
3. The chunk that completes the run computes the comparison (models_app/benchmarks/stats.py) and
   moves the candidate: PASS → approved_for_rollout, INCONCLUSIVE → registered, FAIL → rejected.
   A candidate that was already approved_for_rollout is left there (see `_decide_candidate`).

Cancelling or failing a run does not wait for the answers already in flight: they are written when
they land, and their cost is added to the run's total then (and posted to the ledger like any other).

Resuming: a killed worker's chunks keep a lease nobody renews. `benchmark_runs_resume_stalled`
(beat, every minute; also called by a waiting `benchmark_finetuned`) hands them to live workers,
which skip the pairs already scored. Only an answer received but not yet written when the worker
died (at most one batch, ~¼ s of work) is asked again. A chunk whose task raises (a database error, a
soft time limit) gives its lease back at once, so its retry need not wait for the heartbeat to age.
A worker killed while it held chunk messages it had not claimed yet (waiting for a pool process, or a
retry's countdown) leaves them unacknowledged in Redis until the visibility timeout; each worker notes
on the chunk that it received the message (`benchmark_chunk_received`, called as the message arrives),
so the same sweep sends such a chunk again as soon as that worker no longer answers.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from threading import Event
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Case, F, When
from django.utils import timezone

from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from genesis.permissions import require_permission
from models_app.benchmarks import stats as benchmark_stats, scorers
from models_app.benchmarks.limits import ProviderLimiter, RedisProviderLimiter
from models_app.benchmarks.suites import cases_fingerprint, parse_suite_jsonl
from models_app.benchmarks.models import (
    BenchmarkCase,
    BenchmarkChunk,
    BenchmarkChunkStatus,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkSuite,
    BenchmarkUnscoredAnswer,
    BenchmarkVerdict,
    BenchmarkVerdictOverride,
)
from models_app.registry.models import Agent, ModelStatus, ModelVersion, ProviderAccount
from models_app.providers import (
    PermanentProviderError,
    ProviderAuthError,
    RetryPolicy,
    TransientProviderError,
    UnknownModelError,
    UnsupportedParameterError,
    call_with_retries,
)
from models_app.providers.base import ChatResult
from models_app.benchmarks.selectors import (
    BENCHMARKABLE_STATUSES,
    active_run_for_candidate,
    benchmark_run_cost,
    benchmark_run_pairs,
    default_candidate,
    latest_suite,
)
from models_app.registry.services import model_version_transition
from models_app.simulator.markers import strip_answer_markers

logger = logging.getLogger(__name__)

OVERRIDE_PERMISSION = "models_app.override_benchmark_verdict"
# An override changes the model version's status, so it also needs the right to change versions.
CHANGE_VERSION_PERMISSION = "models_app.change_modelversion"
MAX_ERRORS_SHOWN = 20

# Chunk leases. A worker renews its chunk's heartbeat at least this often…
CHUNK_HEARTBEAT_SECONDS = 5.0
# …so a running chunk whose heartbeat is older than this has lost its worker and is handed on.
CHUNK_STALLED_AFTER_SECONDS = 60.0
# A queued chunk is sent again after this long when nothing else says its message is lost: a broker
# outage at enqueue time, a receipt that could not be noted, a sweep without a ping. A worker killed
# after receiving the message does not wait for this: the chunk names it (`received_by`) and the sweep
# re-sends at once once it no longer answers. A duplicate is harmless.
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
# Per call: retries of transient errors (429, 5xx, timeouts) inside the chunk, with backoff.
CALL_RETRY_POLICY = RetryPolicy(max_attempts=4, base_delay_seconds=0.5, max_delay_seconds=10.0)
JUDGE_CACHE_SECONDS = 30 * 24 * 3600
# A shared call slot outlives a killed holder by at most this long (live holders renew theirs).
LIMITER_LEASE_SECONDS = 6.0
DEFAULT_JUDGE_MODEL = "mistral-large-latest"
# A run's estimate is held against the budgets until it is finished and paid; a hold whose run was
# lost (its rows deleted by hand) stops counting after this.
BENCHMARK_HOLD_LASTS = timedelta(days=1)
CHARS_PER_TOKEN_ESTIMATE = 4

RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    BenchmarkRunStatus.QUEUED: frozenset({BenchmarkRunStatus.RUNNING, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED}),
    BenchmarkRunStatus.RUNNING: frozenset(
        {BenchmarkRunStatus.COMPLETED, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED}
    ),
    BenchmarkRunStatus.COMPLETED: frozenset(),
    BenchmarkRunStatus.FAILED: frozenset(),
    BenchmarkRunStatus.CANCELLED: frozenset(),
}
FINISHED_RUN_STATUSES = (BenchmarkRunStatus.COMPLETED, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED)
VERDICT_TO_STATUS = {
    BenchmarkVerdict.PASS: ModelStatus.APPROVED_FOR_ROLLOUT,
    BenchmarkVerdict.INCONCLUSIVE: ModelStatus.REGISTERED,
    BenchmarkVerdict.FAIL: ModelStatus.REJECTED,
}


def _move_run(run: BenchmarkRun, to_status: str) -> None:
    if to_status not in RUN_TRANSITIONS[run.status]:
        allowed = ", ".join(sorted(RUN_TRANSITIONS[run.status])) or "none (finished)"
        raise Conflict(f"benchmark run #{run.pk} is {run.status} and cannot become {to_status}; allowed next: {allowed}")
    run.status = to_status


# --- suites ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteImport:
    suite: BenchmarkSuite
    created: bool  # False when the file held exactly the cases of the latest version


@transaction.atomic
def benchmark_suite_import(
    *,
    agent: Agent,
    slug: str,
    lines: Iterable[str],
    description: str | None = None,
    source: str = "",
    actor: Any = None,
) -> SuiteImport:
    """Import a JSONL suite (models_app/benchmarks/suites) as the next version of `agent`/`slug`.

    The file is validated line by line and refused as a whole, with every problem and its line
    number, if anything is wrong. Cases of an existing version never change (runs refer to them):
    different cases make a new version; the same cases return the latest version (so re-seeding
    and re-importing are idempotent)."""
    require_permission(actor=actor, permission="models_app.add_benchmarksuite", action="import benchmark suites")
    slug = slug.strip()
    if not slug or not all(ch.isalnum() or ch in "-_" for ch in slug) or len(slug) > 64:
        raise InvalidInput(f"slug: '{slug}' must be 1-64 letters, digits, '-' or '_'")
    parsed = parse_suite_jsonl(lines)
    if parsed.errors:
        shown = "; ".join(str(error) for error in parsed.errors[:MAX_ERRORS_SHOWN])
        more = f"; and {len(parsed.errors) - MAX_ERRORS_SHOWN} more" if len(parsed.errors) > MAX_ERRORS_SHOWN else ""
        raise InvalidInput(f"suite file refused, {len(parsed.errors)} problem(s): {shown}{more}")
    description = parsed.description if description is None else description
    # Serialise imports of one agent's suites, so two imports cannot both take the next version number.
    Agent.objects.select_for_update().filter(pk=agent.pk).first()
    fingerprint = cases_fingerprint(parsed.cases)
    latest = BenchmarkSuite.objects.filter(agent=agent, slug=slug).order_by("-version").first()
    if latest is not None and latest.fingerprint == fingerprint:
        if description and latest.description != description:
            latest.description = description
            latest.save(update_fields=["description"])
        return SuiteImport(suite=latest, created=False)
    suite = BenchmarkSuite.objects.create(
        agent=agent, slug=slug, version=(latest.version + 1) if latest else 1, description=description or "",
        fingerprint=fingerprint, case_count=len(parsed.cases), source=source[:200], created_by=actor,
    )
    BenchmarkCase.objects.bulk_create(
        BenchmarkCase(suite=suite, key=case.key, position=index, messages=case.messages, reference=case.reference,
                      scorer=case.scorer, tags=case.tags)
        for index, case in enumerate(parsed.cases)
    )
    logger.info("benchmark suite %s imported (%s cases) by %s", suite, suite.case_count, actor or "the system")
    return SuiteImport(suite=suite, created=True)


# --- cost estimate --------------------------------------------------------------------------------------


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE))


def _price(model: str, base_model: str | None) -> Any:
    """The price in force for `model` (costs app), or a Conflict saying where to add it."""
    from costs.selectors import price_in_force

    try:
        return price_in_force(model=model, base_model=base_model)
    except NotFound as exc:
        raise Conflict(f"cannot estimate the benchmark's cost: {exc.message}") from None


def case_messages(*, case_messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """What the model is sent: the agent's system prompt first, unless the case brings its own."""
    messages = [dict(message) for message in case_messages]
    if system_prompt and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def benchmark_cost_estimate(
    *, cases: list[BenchmarkCase], versions: list[ModelVersion], parameters: Mapping[str, Any]
) -> Decimal:
    """Dollars the run should cost: prompt tokens (about four characters each) plus a reply of
    twice the reference's length (at least 64 tokens, at most max_tokens) per case and model, plus
    the judge's calls for llm_judge cases. An estimate for the budget check, not a bill."""
    from costs.pricing import inference_cost

    max_tokens = int(parameters.get("max_tokens") or 512)
    system_prompt = str(parameters.get("system_prompt") or "")
    judge_price = None
    total = Decimal(0)
    for version in versions:
        price = _price(version.model_id, version.base_model)
        for case in cases:
            prompt = sum(_tokens(m.get("content", "")) for m in case_messages(case_messages=case.messages, system_prompt=system_prompt))
            reference = "" if case.reference is None else str(case.reference)
            reply = min(max_tokens, max(64, 2 * _tokens(reference)))
            total += inference_cost(price=price, input_tokens=prompt, output_tokens=reply)
            if _uses_judge(case.scorer):
                if judge_price is None:
                    judge_price = _price(str(parameters.get("judge_model") or DEFAULT_JUDGE_MODEL), None)
                judge_prompt = prompt + reply + _tokens(str(case.scorer)) + 120
                total += inference_cost(price=judge_price, input_tokens=judge_prompt, output_tokens=64)
    return total


def _uses_judge(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    if spec.get("name") in ("llm_judge", "judge"):
        return True
    return any(_uses_judge(part) for part in spec.get("scorers", []) or [])


# --- creating, cancelling and overriding runs ---------------------------------------------------------------

PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "max_tokens": (int,),
    "random_seed": (int,),
    "chunk_size": (int,),
    "judge_model": (str,),
    "judge_provider": (str,),
    "bootstrap_seed": (int,),
}


def _run_parameters(*, agent: Agent, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    unknown = sorted(set(overrides or {}) - set(PARAMETER_TYPES))
    if unknown:
        raise InvalidInput(f"parameters: unknown {', '.join(unknown)}; known: {', '.join(sorted(PARAMETER_TYPES))}")
    for name, value in (overrides or {}).items():
        if isinstance(value, bool) or not isinstance(value, PARAMETER_TYPES[name]):
            raise InvalidInput(f"parameters.{name}: expected {PARAMETER_TYPES[name][0].__name__}, got {value!r}")
    if (overrides or {}).get("chunk_size") is not None and not 1 <= overrides["chunk_size"] <= 1000:  # type: ignore[index]
        raise InvalidInput("parameters.chunk_size: must be between 1 and 1000")
    benchmarks = settings.GENESIS.benchmarks
    return {
        # Generation settings: the agent's, frozen now so both models (and a resumed run) get the same.
        "system_prompt": agent.system_prompt,
        "temperature": agent.temperature,
        "top_p": agent.top_p,
        "max_tokens": agent.max_tokens,
        # Gate settings, frozen too: a run's verdict must not change with a later settings change.
        "min_relative_improvement": settings.BENCHMARK_MIN_RELATIVE_IMPROVEMENT,
        "min_cases": settings.BENCHMARK_MIN_CASES,
        "gate_rule": settings.BENCHMARK_GATE_RULE,
        "bootstrap_resamples": benchmarks.bootstrap_resamples,
        # bootstrap_seed is set from the run's id once the run exists (benchmark_run_create), unless given.
        "confidence": 0.95,
        "judge_model": DEFAULT_JUDGE_MODEL,
        **dict(overrides or {}),
    }


def _resolve_versions(
    *, agent: Agent, candidate: ModelVersion | None, baseline: ModelVersion | None
) -> tuple[ModelVersion, ModelVersion]:
    from models_app.registry.selectors import baseline_version

    candidate = candidate or default_candidate(agent=agent)
    if candidate is None:
        raise Conflict(
            f"agent '{agent.slug}' has no fine-tuned version to benchmark (registered or approved_for_rollout): "
            "register one first, or name it with --candidate"
        )
    baseline = baseline or baseline_version(agent=agent)
    if baseline is None:
        raise Conflict(f"agent '{agent.slug}' has no baseline (no live version and no baseline version): register one")
    for role, version in (("candidate", candidate), ("baseline", baseline)):
        if version.agent_id != agent.pk:
            raise InvalidInput(f"{role}: {version.model_id} belongs to agent '{version.agent.slug}', not '{agent.slug}'")
        if not version.provider.enabled:
            raise Conflict(f"{role}: provider '{version.provider.name}' of {version.model_id} is disabled; enable it in the admin")
    if candidate.pk == baseline.pk:
        raise InvalidInput(f"candidate and baseline are the same version ({candidate.model_id}); compare two different models")
    return candidate, baseline


def _chunk_size(*, parameters: Mapping[str, Any], concurrency: int) -> int:
    if parameters.get("chunk_size"):
        return int(parameters["chunk_size"])
    # Enough pairs to keep the chunk's threads busy for many rounds (each chunk costs a claim, a
    # context and a hand-over of some tens of ms of CPU, and its end leaves threads idle: measured with
    # bench/benchmark_runner, 16 rounds beat 8, which beat 4), few enough that several workers share a
    # large run. A killed worker loses no scored pair whatever the size.
    return min(250, max(16, 16 * concurrency))


def _chunk_starts(count: int, size: int, *, stagger: bool) -> list[int]:
    """Where each chunk of `count` pairs starts. With `stagger`, the first chunk is half as long:
    workers that start together then reach the end of their chunks at different moments, so one
    worker's hand-over to its next chunk (last write, release, next claim: a few hundred ms) is
    covered by the other's calls instead of all of them leaving the provider idle at once."""
    first = max(1, size // 2) if stagger and count > size else size
    return [0, *range(first, count, size)]


@transaction.atomic
def benchmark_run_create(
    *,
    agent: Agent,
    suite: BenchmarkSuite | None = None,
    candidate: ModelVersion | None = None,
    baseline: ModelVersion | None = None,
    actor: Any = None,
    requested_via: str = "",
    parameters: Mapping[str, Any] | None = None,
    budget_override_reason: str | None = None,
) -> BenchmarkRun:
    """Queue a run of `suite` (default: the agent's latest) on `candidate` (default: its newest
    benchmarkable fine-tune) and `baseline` (default: its live model). Refused (Conflict) when the
    budget cannot take the estimate, unless a person with costs.override_budget gives a reason."""
    from costs.models import Operation
    from costs.services import budget_check

    require_permission(actor=actor, permission="models_app.add_benchmarkrun", action="start benchmark runs")
    suite = suite or latest_suite(agent=agent)
    if suite is None:
        raise Conflict(f"agent '{agent.slug}' has no benchmark suite: import one (admin or `import_benchmark_suite`)")
    if suite.agent_id != agent.pk:
        raise InvalidInput(f"suite: {suite} belongs to agent '{suite.agent.slug}', not '{agent.slug}'")
    candidate, baseline = _resolve_versions(agent=agent, candidate=candidate, baseline=baseline)
    # Lock the candidate: two runs started at once for one candidate must not both go ahead.
    candidate = ModelVersion.objects.select_for_update().select_related("provider", "agent").get(pk=candidate.pk)
    active = active_run_for_candidate(candidate=candidate)
    if active is not None:
        raise Conflict(f"{candidate.model_id} is already being benchmarked by run #{active.pk} ({active.status}); wait for it or cancel it")
    if candidate.status not in BENCHMARKABLE_STATUSES:
        raise Conflict(
            f"{candidate.model_id} is {candidate.status}; only a registered or approved_for_rollout version can be "
            "benchmarked (a rejected one needs a new fine-tune)"
        )
    params = _run_parameters(agent=agent, overrides=parameters)
    cases = list(suite.cases.order_by("position"))
    if not cases:
        raise Conflict(f"suite {suite} has no case")
    estimate = benchmark_cost_estimate(cases=cases, versions=[baseline, candidate], parameters=params)
    run = BenchmarkRun.objects.create(
        agent=agent, suite=suite, suite_version=suite.version, candidate=candidate, baseline=baseline,
        parameters=params, total_items=2 * len(cases), estimated_cost_usd=estimate, requested_by=actor,
        requested_via=requested_via[:120], candidate_status_before=candidate.status,
    )
    if "bootstrap_seed" not in params:
        # Derived from the run, not a constant: two runs of one suite are independent resampling experiments,
        # and deciding the same run again gives the same verdict.
        run.parameters = {**params, "bootstrap_seed": benchmark_stats.run_seed(run_id=run.pk)}
        run.save(update_fields=["parameters"])
    # The estimate is held for the run until it is finished and paid; a refusal rolls the run back.
    check = budget_check(agent=agent, estimate_usd=estimate, actor=actor, override_reason=budget_override_reason,
                         hold_for=run, operation=Operation.BENCHMARK, hold_lasts=BENCHMARK_HOLD_LASTS)
    if check.overridden:
        run.budget_override_reason = budget_override_reason or ""
        run.save(update_fields=["budget_override_reason"])
    # An approved candidate keeps its status while it is benchmarked again: an experiment may be about
    # to start with it, and a run in progress is no reason to make that start need an override.
    if candidate.status != ModelStatus.APPROVED_FOR_ROLLOUT:
        # Moved by the system on the requester's behalf: starting a run needs add_benchmarkrun, not the
        # right to change model statuses by hand. Who asked is on the run and in the reason.
        model_version_transition(
            version=candidate, to_status=ModelStatus.BENCHMARKING, actor=None,
            reason=f"benchmark run #{run.pk} requested by {_who(actor, requested_via)}",
        )
    # Pairs in case order, baseline then candidate: a partial run still holds complete pairs.
    items = [[version.pk, case.pk] for case in cases for version in (baseline, candidate)]
    size = _chunk_size(parameters=params, concurrency=max(baseline.provider.max_concurrency, candidate.provider.max_concurrency))
    starts = _chunk_starts(len(items), size, stagger=not params.get("chunk_size"))
    now = timezone.now()
    chunks = BenchmarkChunk.objects.bulk_create(
        BenchmarkChunk(run=run, index=index, items=items[start:end], enqueued_at=now)
        for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(items)], strict=True))
    )
    _send_chunks_on_commit([chunk.pk for chunk in chunks])
    logger.info(
        "benchmark run #%s queued: %s vs %s on %s (%s pairs in %s chunks, estimate $%s)",
        run.pk, candidate.model_id, baseline.model_id, suite, len(items), len(chunks), estimate,
    )
    return run


def _who(actor: Any, requested_via: str = "") -> str:
    name = actor.get_username() if getattr(actor, "pk", None) else "the system"
    return f"{name} ({requested_via})" if requested_via else name


def _send_chunks_on_commit(chunk_ids: list[int]) -> None:
    from models_app.benchmarks.tasks import benchmark_chunk_run

    def send() -> None:
        for chunk_id in chunk_ids:
            try:
                benchmark_chunk_run.delay(chunk_id)
            except Exception as exc:  # noqa: BLE001 - the chunk row stays queued; the resume sweep sends it again
                logger.warning("could not enqueue benchmark chunk %s (%s); the resume sweep will", chunk_id, exc)

    transaction.on_commit(send)


def _restore_candidate(run: BenchmarkRun, *, actor: Any, reason: str) -> None:
    """A run that ends without a verdict gives the candidate back the status it had."""
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    target = run.candidate_status_before or ModelStatus.REGISTERED
    if candidate.status != ModelStatus.BENCHMARKING or target == ModelStatus.BENCHMARKING:
        return  # someone moved it meanwhile; leave their decision alone
    model_version_transition(version=candidate, to_status=target, actor=actor, reason=reason)


@transaction.atomic
def benchmark_run_cancel(*, run: BenchmarkRun, actor: Any, reason: str = "") -> BenchmarkRun:
    """Stop a queued or running run. Workers stop asking models at their next batch; results
    already written stay (and stay paid for)."""
    require_permission(actor=actor, permission="models_app.change_benchmarkrun", action="cancel benchmark runs")
    run = BenchmarkRun.objects.select_for_update().get(pk=run.pk)
    _move_run(run, BenchmarkRunStatus.CANCELLED)
    run.cancelled_by = actor if getattr(actor, "pk", None) else None
    run.finished_at = timezone.now()
    run.error = f"cancelled by {actor or 'the system'}" + (f": {reason}" if reason else "")
    _write_unscored_answers_as_results(run)
    # What has landed so far; answers still in flight add theirs when they are written (_count_progress).
    run.cost_usd = benchmark_run_cost(run=run)
    run.save(update_fields=["status", "cancelled_by", "finished_at", "error", "cost_usd"])
    _restore_candidate(run, actor=None, reason=f"benchmark run #{run.pk} cancelled by {_who(actor)}")
    _release_budget_when_settled(run)
    return run


@transaction.atomic
def benchmark_verdict_override(*, run: BenchmarkRun, actor: Any, reason: str) -> BenchmarkVerdictOverride:
    """Approve the candidate for rollout despite a non-PASS verdict. Needs a person with the permissions
    models_app.override_benchmark_verdict and models_app.change_modelversion (the override changes the
    version's status), and a reason; recorded as a BenchmarkVerdictOverride and in the model version's
    history, both under the overrider's name."""
    if actor is None or not getattr(actor, "pk", None):
        raise PermissionDenied(
            f"overriding a benchmark verdict needs a person with the permissions '{OVERRIDE_PERMISSION}' and "
            f"'{CHANGE_VERSION_PERMISSION}'"
        )
    require_permission(actor=actor, permission=OVERRIDE_PERMISSION, action="override benchmark verdicts")
    # Checked here, before anything is read or locked, rather than left to model_version_transition:
    # the rule belongs to the override, whichever page or command calls it.
    require_permission(actor=actor, permission=CHANGE_VERSION_PERMISSION, action="override benchmark verdicts")
    if not reason.strip():
        raise InvalidInput("reason: say why the candidate should go to rollout despite the verdict")
    run = BenchmarkRun.objects.select_for_update().select_related("candidate").get(pk=run.pk)
    if run.status != BenchmarkRunStatus.COMPLETED:
        raise Conflict(f"run #{run.pk} is {run.status}; only a completed run's verdict can be overridden")
    if run.verdict == BenchmarkVerdict.PASS:
        raise Conflict(f"run #{run.pk} passed; there is nothing to override")
    candidate = ModelVersion.objects.select_for_update().get(pk=run.candidate_id)
    if candidate.status == ModelStatus.APPROVED_FOR_ROLLOUT:
        # A re-run does not demote an approved candidate (_decide_candidate): there is nothing to lift.
        raise Conflict(f"{candidate.model_id} is already {ModelStatus.APPROVED_FOR_ROLLOUT}; there is nothing to override")
    before = candidate.status
    model_version_transition(
        version=candidate, to_status=ModelStatus.APPROVED_FOR_ROLLOUT, actor=actor, verdict_overridden=True,
        reason=f"benchmark verdict {run.verdict} of run #{run.pk} overridden: {reason.strip()}",
    )
    override = BenchmarkVerdictOverride.objects.create(
        run=run, actor=actor, verdict_before=run.verdict, candidate_status_before=before,
        candidate_status_after=ModelStatus.APPROVED_FOR_ROLLOUT, reason=reason.strip(),
    )
    logger.warning("benchmark verdict %s of run #%s overridden by %s: %s", run.verdict, run.pk, actor, reason)
    return override


# --- finishing runs --------------------------------------------------------------------------------------------


@transaction.atomic
def benchmark_run_fail(*, run_id: int, error: str) -> BenchmarkRun:
    run = BenchmarkRun.objects.select_for_update().get(pk=run_id)
    if run.is_finished:
        return run
    _move_run(run, BenchmarkRunStatus.FAILED)
    run.error = error[:4000]
    run.finished_at = timezone.now()
    _write_unscored_answers_as_results(run)
    # What has landed so far; answers still in flight add theirs when they are written (_count_progress).
    run.cost_usd = benchmark_run_cost(run=run)
    run.save(update_fields=["status", "error", "finished_at", "cost_usd"])
    _restore_candidate(run, actor=None, reason=f"benchmark run #{run.pk} failed")
    _release_budget_when_settled(run)
    logger.error("benchmark run #%s failed: %s", run.pk, error)
    return run


@transaction.atomic
def benchmark_run_finish_if_complete(*, run_id: int) -> BenchmarkRun | None:
    """Compare and decide once every chunk is done; None while work remains. Safe to call twice."""
    run = BenchmarkRun.objects.select_for_update().select_related("candidate", "baseline", "agent").get(pk=run_id)
    if run.status != BenchmarkRunStatus.RUNNING:
        return run if run.is_finished else None
    if run.chunks.exclude(status=BenchmarkChunkStatus.DONE).exists():
        return None
    scored = run.results.count()
    if scored != run.total_items:
        # Every chunk says done but pairs are missing: a bug, not a reason to guess a verdict.
        return benchmark_run_fail(run_id=run.pk, error=f"all chunks finished but only {scored} of {run.total_items} pairs were scored")
    params = run.parameters
    comparison = benchmark_stats.compare_paired(
        benchmark_run_pairs(run=run),
        threshold=float(params.get("min_relative_improvement", settings.BENCHMARK_MIN_RELATIVE_IMPROVEMENT)),
        min_cases=int(params.get("min_cases", settings.BENCHMARK_MIN_CASES)),
        # A run created before the rule was a setting was decided by today's improves_and_reaches.
        rule=str(params.get("gate_rule", benchmark_stats.RULE_IMPROVES_AND_REACHES)),
        resamples=int(params.get("bootstrap_resamples", settings.GENESIS.benchmarks.bootstrap_resamples)),
        seed=int(params.get("bootstrap_seed", benchmark_stats.run_seed(run_id=run.pk))),
        confidence=float(params.get("confidence", 0.95)),
    )
    data = comparison.as_dict()
    data["errors"] = run.results.exclude(error="").count()
    _move_run(run, BenchmarkRunStatus.COMPLETED)
    run.verdict = comparison.verdict
    run.finished_at = timezone.now()
    run.cost_usd = benchmark_run_cost(run=run)
    data["candidate_status"] = _decide_candidate(run, comparison, data["reasons"])
    run.comparison = data
    run.save(update_fields=["status", "verdict", "finished_at", "cost_usd", "comparison"])
    _release_budget_when_settled(run)
    logger.info("benchmark run #%s completed: %s", run.pk, "; ".join(comparison.reasons))
    return run


def _decide_candidate(run: BenchmarkRun, comparison: benchmark_stats.Comparison, reasons: list[str]) -> str:
    """Move the candidate as the verdict says and return its status; when it is left elsewhere, say
    why in `reasons`.

    A candidate that was approved_for_rollout before the run stays approved whatever the new verdict:
    an experiment may be using it (a draft about to start), and demoting it behind that experiment's
    back is not a benchmark's call. The verdict is recorded on the run and said in its reasons and in
    the log; a person decides (reject or retire it by hand, or roll it out anyway)."""
    target = VERDICT_TO_STATUS[BenchmarkVerdict(comparison.verdict)]
    approved = ModelStatus.APPROVED_FOR_ROLLOUT
    candidate = ModelVersion.objects.select_for_update().get(pk=run.candidate_id)
    was_approved = run.candidate_status_before == approved
    if was_approved and target != approved and candidate.status in (approved, ModelStatus.BENCHMARKING):
        message = (
            f"the candidate stays {approved} despite this {comparison.verdict}: it was approved before the run and an "
            "experiment may use it, so a re-run does not demote it; reject or retire it by hand if this verdict "
            "should stop its rollout"
        )
        reasons.append(message)
        logger.warning("benchmark run #%s of %s: %s", run.pk, candidate.model_id, message)
        target = approved
    if candidate.status == target:
        return target  # an approved candidate re-run: nothing moves
    if candidate.status == ModelStatus.BENCHMARKING:
        # Moved to benchmarking when the run started: give it the verdict's status.
        model_version_transition(
            version=candidate, to_status=target, actor=None,
            reason=f"benchmark run #{run.pk}: {comparison.verdict} ({comparison.reasons[0]})",
        )
        return target
    reasons.append(
        f"the candidate was not moved to {target}: it was {candidate.status} when the run finished (changed meanwhile)"
    )
    return candidate.status


# --- chunks: claim, execute, resume ---------------------------------------------------------------------------


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


@transaction.atomic
def benchmark_chunk_claim(*, chunk_id: int, worker: str) -> ChunkLease | None:
    """Take the chunk for `worker` (see `worker_identity`), or None when it is done, its run is over,
    or another live process holds it. A chunk whose holder is gone (a dead pool process of the same
    worker, or no heartbeat for CHUNK_STALLED_AFTER_SECONDS) is taken over."""
    chunk = BenchmarkChunk.objects.select_for_update().filter(pk=chunk_id).first()
    if chunk is None:
        return None
    now = timezone.now()
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


@dataclass
class _Answer:
    """What a worker thread brings back for one (model, case) pair."""

    model_version_id: int
    case_id: int
    # scored | refused | transient | fatal | skipped, or unscored: the model answered (and was paid) but
    # its judge failed transiently, so the answer is kept for the retry.
    kind: str
    output: str = ""
    score: float = 0.0
    reason: str = ""
    error: str = ""
    finish_reason: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    retry_after: float | None = None
    kept_id: int | None = None  # the BenchmarkUnscoredAnswer this answer was taken from
    # What that kept answer had cost before this round (its model, earlier judges), and its judge
    # tokens then: counted wherever the kept answer is counted.
    kept_cost_usd: Decimal = Decimal(0)
    kept_judge_tokens: tuple[int, int] = (0, 0)

    def spent_this_round(self) -> _Answer:
        """This answer cut down to what this round paid: all of it, or for a kept answer only the
        judge calls made since it was kept."""
        if self.kept_id is None:
            return self
        return replace(
            self, cost_usd=self.cost_usd - self.kept_cost_usd, prompt_tokens=0, completion_tokens=0,
            judge_prompt_tokens=self.judge_prompt_tokens - self.kept_judge_tokens[0],
            judge_completion_tokens=self.judge_completion_tokens - self.kept_judge_tokens[1],
        )


class _JudgeCache:
    """The LLM judge's verdicts in the shared cache (Redis when configured), so a judged reply is
    never judged, or paid for, again — across workers and restarts."""

    def get(self, key: str) -> Mapping[str, Any] | None:
        return cache.get(f"genesis:benchmarks:{key}")

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        cache.set(f"genesis:benchmarks:{key}", dict(value), JUDGE_CACHE_SECONDS)


_limiters: dict[tuple[Any, ...], ProviderLimiter] = {}


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


# Other apps' paid calls (the safety app's WaltzRL builds) take their slots from the same shared limits.
provider_limiter = _limiter_for


@dataclass(frozen=True)
class _Route:
    """How a chunk's threads reach one provider account: its process-wide client and shared limits,
    looked up once per chunk rather than at every call."""

    provider: Any
    limiter: ProviderLimiter

    @classmethod
    def of(cls, account: ProviderAccount) -> _Route:
        from models_app.registry.gateway import provider_for

        return cls(provider=provider_for(account), limiter=_limiter_for(account))


@dataclass
class _ChunkContext:
    run: BenchmarkRun
    cases: dict[int, BenchmarkCase]
    versions: dict[int, ModelVersion]
    routes: dict[int, _Route]  # by model version id
    prices: dict[int, Any]
    judge_price: Any
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


def _answer_pair(context: _ChunkContext, version_id: int, case_id: int) -> _Answer:
    """Runs in a worker thread: no database access here (the main thread writes)."""
    from costs.pricing import inference_cost

    if context.stop.is_set():
        return _Answer(version_id, case_id, "skipped")
    run, case, version = context.run, context.cases[case_id], context.versions[version_id]
    params = run.parameters
    kept = context.unscored.get((version_id, case_id))
    if kept is not None:
        # Asked and paid in an earlier round whose judge failed: only the judge is asked again.
        answer = _Answer(
            version_id, case_id, "scored", output=kept.output, finish_reason=kept.finish_reason, latency_ms=kept.latency_ms,
            prompt_tokens=kept.prompt_tokens, completion_tokens=kept.completion_tokens,
            judge_prompt_tokens=kept.judge_prompt_tokens, judge_completion_tokens=kept.judge_completion_tokens,
            cost_usd=kept.cost_usd, kept_id=kept.pk, kept_cost_usd=kept.cost_usd,
            kept_judge_tokens=(kept.judge_prompt_tokens, kept.judge_completion_tokens),
        )
    else:
        generation = {key: params[key] for key in ("temperature", "top_p", "max_tokens", "random_seed") if params.get(key) is not None}
        messages = case_messages(case_messages=case.messages, system_prompt=str(params.get("system_prompt") or ""))
        try:
            result = _ask(context.routes[version_id], version.model_id, messages, generation)
        except (ProviderAuthError, UnknownModelError, UnsupportedParameterError) as error:
            # Not about this case: every pair would fail the same way, so the run fails now, saying why.
            return _Answer(version_id, case_id, "fatal", error=f"{version.model_id}: {error}")
        except PermanentProviderError as error:
            return _Answer(version_id, case_id, "refused", reason="the provider refused this case", error=str(error)[:2000])
        except TransientProviderError as error:
            return _Answer(version_id, case_id, "transient", error=str(error), retry_after=error.retry_after)
        answer = _Answer(
            version_id, case_id, "scored", output=result.text, finish_reason=result.finish_reason,
            latency_ms=result.latency_ms, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            cost_usd=inference_cost(
                price=context.prices[version_id], input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens
            ),
        )
    judge = None
    # Every judge reply received for this answer, counted as it arrives: a composite scorer may have
    # paid one judge before another failed, and what was paid must reach the ledger either way.
    judge_spent = [0, 0]
    if context.judge_route is not None:
        judge_route = context.judge_route

        def ask_judge(model: str, judge_messages: list[dict[str, str]]) -> scorers.JudgeReply:
            reply = _ask(judge_route, model, judge_messages, {"temperature": 0.0, "max_tokens": 200})
            judge_spent[0] += reply.prompt_tokens
            judge_spent[1] += reply.completion_tokens
            return scorers.JudgeReply(reply.text, reply.prompt_tokens, reply.completion_tokens)

        question = strip_answer_markers(str(case.messages[-1].get("content", "")))
        judge = scorers.JudgeContext(
            ask=ask_judge, cache=_JudgeCache(), default_model=str(params.get("judge_model") or DEFAULT_JUDGE_MODEL),
            question=question,
        )
    try:
        graded = scorers.score_output(spec=case.scorer, output=answer.output, reference=case.reference, judge=judge)
    except scorers.ScorerSpecError as error:
        graded = scorers.Score(0.0, f"scorer error: {error}")
    except TransientProviderError as error:
        # The judge failed transiently: the answer is kept, and only the judge is asked again later.
        answer.kind, answer.error, answer.retry_after = "unscored", f"judge: {error}", error.retry_after
        graded = None
    except PermanentProviderError as error:
        graded = scorers.Score(0.0, f"judge refused: {str(error)[:200]}")
    if any(judge_spent):
        answer.judge_prompt_tokens += judge_spent[0]
        answer.judge_completion_tokens += judge_spent[1]
        answer.cost_usd += inference_cost(price=context.judge_price, input_tokens=judge_spent[0], output_tokens=judge_spent[1])
    if graded is not None:
        answer.score, answer.reason = graded.score, graded.reason
    return answer


def result_cost_key(*, run_id: int, model_version_id: int, case_id: int) -> str:
    return f"benchmark:{run_id}:{model_version_id}:{case_id}"


def _result_row(run_id: int, answer: _Answer) -> BenchmarkResult:
    return BenchmarkResult(
        run_id=run_id, model_version_id=answer.model_version_id, case_id=answer.case_id, output=answer.output,
        score=answer.score, reason=answer.reason[:300], error=answer.error, finish_reason=answer.finish_reason[:32],
        latency_ms=answer.latency_ms, prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
        judge_prompt_tokens=answer.judge_prompt_tokens, judge_completion_tokens=answer.judge_completion_tokens,
        cost_usd=answer.cost_usd,
        cost_key=result_cost_key(run_id=run_id, model_version_id=answer.model_version_id, case_id=answer.case_id),
    )


@transaction.atomic
def benchmark_run_post_costs(*, run_id: int, batch_size: int = 200) -> int:
    """Put the run's results on the ledger: one entry per paid result, under its cost key, and the
    results marked posted in the same transaction. The batch goes in with costs.cost_record_many (one
    lock of the budgets, one insert, thresholds checked once) rather than one cost_record each, which
    cost more CPU than the benchmark's own provider calls. Idempotent, and several calls may run at
    once (each takes rows the others have not locked). Returns how many results it posted."""
    from costs.models import Operation
    from costs.services import Charge, cost_record_many

    run = BenchmarkRun.objects.select_related("agent").get(pk=run_id)
    rows = list(
        BenchmarkResult.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(run_id=run_id, cost_posted_at__isnull=True)
        .select_related("model_version", "case")
        .order_by("pk")[:batch_size]
    )
    cost_record_many(charges=[
        Charge(
            agent=run.agent, operation=Operation.BENCHMARK, idempotency_key=row.cost_key, amount_usd=row.cost_usd,
            model=row.model_version.model_id, base_model=row.model_version.base_model,
            input_tokens=row.prompt_tokens + row.judge_prompt_tokens,
            output_tokens=row.completion_tokens + row.judge_completion_tokens,
            source=f"benchmark run #{run.pk}: case {row.case.key} on {row.model_version.model_id}", source_object=row,
        )
        for row in rows
        if row.cost_usd  # nothing was paid (e.g. the provider refused the case)
    ])
    BenchmarkResult.objects.filter(pk__in=[row.pk for row in rows]).update(cost_posted_at=timezone.now())
    return len(rows)


def benchmark_run_post_all_costs(*, run_id: int) -> int:
    """`benchmark_run_post_costs` until nothing is left (each batch commits on its own, so the
    budget rows are never locked for long), then let a finished run's budget hold go."""
    total = 0
    while posted := benchmark_run_post_costs(run_id=run_id):
        total += posted
    with transaction.atomic():
        # The run's row lock orders this after a finishing transaction, so that between the two of
        # them one always sees the run finished and every result posted.
        _release_budget_when_settled(BenchmarkRun.objects.select_for_update().get(pk=run_id))
    return total


def _release_budget_when_settled(run: BenchmarkRun) -> None:
    """A finished run whose results are all on the ledger holds no budget any more (its real cost
    is spent now). Called when a run finishes and after each posting; idempotent."""
    from costs.services import cost_hold_release

    if run.is_finished and not BenchmarkResult.objects.filter(run_id=run.pk, cost_posted_at__isnull=True).exists():
        cost_hold_release(source=run)


def _post_costs_on_commit(run_id: int) -> None:
    from models_app.benchmarks.tasks import benchmark_costs_post

    def send() -> None:
        try:
            benchmark_costs_post.delay(run_id)
        except Exception as exc:  # noqa: BLE001 - the results stay unposted; the resume sweep posts them
            logger.warning("could not enqueue the ledger posting of benchmark run #%s (%s)", run_id, exc)

    transaction.on_commit(send)


def _store_answers(context: _ChunkContext, lease: ChunkLease, answers: list[_Answer]) -> tuple[int, bool]:
    """Write a batch of results, renew the lease and add to the run's progress in one transaction
    (one commit a batch; a batch holding judge retries commits those in a second one). Returns (new
    results, lease still ours and run still running).

    The rows go in without a look first: the unique (run, model, case) constraint is what keeps a
    pair from being written twice. Only when another worker wrote some of them meanwhile (a chunk
    handed on while its first holder still lived) does the insert fail; the batch is then written
    again one row at a time, skipping the pairs already there. Those pairs were paid for twice, so
    this worker's answers to them still go on the ledger (`_charge_paid_twice`).

    Answers that involve a kept answer (its judge failed now, or it was judged at last) are written
    apart, by `_store_judge_retries`."""
    run = context.run
    retries = [answer for answer in answers if answer.kind == "unscored" or answer.kept_id is not None]
    if retries:
        answers = [answer for answer in answers if not (answer.kind == "unscored" or answer.kept_id is not None)]
    try:
        with transaction.atomic():
            BenchmarkResult.objects.bulk_create([_result_row(run.pk, a) for a in answers])
            created, still_ours = len(answers), _count_progress(lease, answers)
    except IntegrityError:
        with transaction.atomic():
            written, paid_twice = [], []
            for answer in answers:
                try:
                    with transaction.atomic():
                        _result_row(run.pk, answer).save(force_insert=True)
                    written.append(answer)
                except IntegrityError:
                    paid_twice.append(answer)
            created, still_ours = len(written), _count_progress(lease, written)
            _charge_paid_twice(run, paid_twice, attempt=f"claim-{lease.claims}")
    if retries:
        created += _store_judge_retries(run, retries, attempt=f"claim-{lease.claims}")
    return created, still_ours


def _count_progress(lease: ChunkLease, created: list[_Answer]) -> bool:
    """Inside the batch's transaction: renew the lease, then add the new results to the run's
    progress (the chunk's row before the run's, the order the other services lock them in)."""
    still_ours = _heartbeat(lease)
    if created:
        cost = sum((answer.cost_usd for answer in created), Decimal(0))
        BenchmarkRun.objects.filter(pk=lease.run_id).update(
            completed_items=F("completed_items") + len(created), cost_usd=_cost_if_run_ended(cost)
        )
    return still_ours


def _cost_if_run_ended(cost: Decimal) -> Case:
    """The run's cost_usd plus `cost` when the run has ended, else unchanged. A run cancelled or
    failed while answers were in flight summed its cost without them: they add theirs. Evaluated on
    the row as the UPDATE finds it once the ending transaction committed, so each answer is counted
    either there or here, never both."""
    return Case(When(status__in=FINISHED_RUN_STATUSES, then=F("cost_usd") + cost), default=F("cost_usd"))


def _charge_paid_twice(run: BenchmarkRun, answers: Sequence[_Answer], *, attempt: str) -> None:
    """Put on the ledger, against the run itself, what was paid for pairs whose result another
    answer had already written — a chunk handed on while its first holder still ran, or a kept
    answer judged again after its run ended: no result row carries that money, but it was spent.
    Inside the writing transaction. One entry per pair and `attempt` (the chunk's claim, or the
    run's end), so writing the same answers again charges nothing more. The run's row is locked
    first, as for late results, so a run ending meanwhile counts each such answer once
    (benchmark_run_cost sums these entries with the results)."""
    from costs.models import Operation
    from costs.selectors import ledger_keys_recorded
    from costs.services import Charge, cost_record_many

    paid = [answer.spent_this_round() for answer in answers]
    keyed = {
        f"{result_cost_key(run_id=run.pk, model_version_id=a.model_version_id, case_id=a.case_id)}:paid-again:{attempt}": a
        for a in paid
        if a.cost_usd
    }
    for key in ledger_keys_recorded(keys=keyed):
        del keyed[key]  # charged when these answers were written before
    if not keyed:
        return
    cost = sum((answer.cost_usd for answer in keyed.values()), Decimal(0))
    BenchmarkRun.objects.filter(pk=run.pk).update(cost_usd=_cost_if_run_ended(cost))
    versions = ModelVersion.objects.in_bulk({answer.model_version_id for answer in keyed.values()})
    case_keys = dict(BenchmarkCase.objects.filter(pk__in={answer.case_id for answer in keyed.values()}).values_list("pk", "key"))
    cost_record_many(charges=[
        Charge(
            agent=run.agent, operation=Operation.BENCHMARK, idempotency_key=key, amount_usd=answer.cost_usd,
            model=versions[answer.model_version_id].model_id, base_model=versions[answer.model_version_id].base_model,
            input_tokens=answer.prompt_tokens + answer.judge_prompt_tokens,
            output_tokens=answer.completion_tokens + answer.judge_completion_tokens,
            source=f"benchmark run #{run.pk}: case {case_keys[answer.case_id]} on "
                   f"{versions[answer.model_version_id].model_id} paid again ({attempt}) after its result was written",
            source_object=run,
        )
        for key, answer in keyed.items()
    ])


@transaction.atomic
def _store_judge_retries(run: BenchmarkRun, answers: list[_Answer], *, attempt: str) -> int:
    """Write the answers of a batch that concern the LLM judge's retries: kept answers judged at last
    become results (their kept row goes), answers whose judge failed are kept for the next round.
    When the run has ended meanwhile, those are written as unscored results instead: nobody would
    judge them, and their cost must still count. Returns the new scored results.

    The run's row is locked first, as the ending services do before `_write_unscored_answers_as_results`
    (and before the results and kept rows): either they see the rows kept here, or this sees the run
    ended. Rare (judge failures only), so the lock costs the ordinary batches nothing. A judged answer
    whose pair was written meanwhile (the run ended and wrote its kept answer, or another holder
    judged it) still paid its judge: `_charge_paid_twice`."""
    run_id = run.pk
    status = BenchmarkRun.objects.select_for_update().filter(pk=run_id).values_list("status", flat=True).get()
    judged = [answer for answer in answers if answer.kind != "unscored"]
    unscored = [answer for answer in answers if answer.kind == "unscored"]
    created, paid_twice = [], []
    for answer in judged:
        try:
            with transaction.atomic():
                _result_row(run_id, answer).save(force_insert=True)
            created.append(answer)
        except IntegrityError:
            paid_twice.append(answer)  # written already (the chunk handed on, or the run ended and wrote its kept answers)
    BenchmarkUnscoredAnswer.objects.filter(pk__in=[answer.kept_id for answer in judged]).delete()
    late_cost = Decimal(0)
    if status in FINISHED_RUN_STATUSES:
        unscored_cost, written_already = _write_unscored_results(run_id, unscored)
        late_cost = sum((answer.cost_usd for answer in created), Decimal(0)) + unscored_cost
        paid_twice += written_already
    else:
        _keep_unscored(run_id, unscored)
    if created or late_cost:
        BenchmarkRun.objects.filter(pk=run_id).update(
            completed_items=F("completed_items") + len(created), cost_usd=F("cost_usd") + late_cost
        )
    _charge_paid_twice(run, paid_twice, attempt=attempt)
    return len(created)


def _keep_unscored(run_id: int, answers: list[_Answer]) -> None:
    """Keep answers whose judge failed, for the chunk's next round to ask only the judge."""
    for answer in answers:
        if answer.kept_id is not None:
            # Kept already and failed again: a composite scorer may have paid another judge meanwhile.
            BenchmarkUnscoredAnswer.objects.filter(pk=answer.kept_id).update(
                judge_prompt_tokens=answer.judge_prompt_tokens, judge_completion_tokens=answer.judge_completion_tokens,
                cost_usd=answer.cost_usd, error=answer.error[:2000], updated_at=timezone.now(),
            )
    BenchmarkUnscoredAnswer.objects.bulk_create(
        [
            BenchmarkUnscoredAnswer(
                run_id=run_id, model_version_id=a.model_version_id, case_id=a.case_id, output=a.output,
                finish_reason=a.finish_reason[:32], latency_ms=a.latency_ms, prompt_tokens=a.prompt_tokens,
                completion_tokens=a.completion_tokens, judge_prompt_tokens=a.judge_prompt_tokens,
                judge_completion_tokens=a.judge_completion_tokens, cost_usd=a.cost_usd, error=a.error[:2000],
            )
            for a in answers
            if a.kept_id is None
        ],
        ignore_conflicts=True,  # kept already by another holder of the chunk
    )


def _write_unscored_results(run_id: int, answers: list[_Answer]) -> tuple[Decimal, list[_Answer]]:
    """Write answers that will never be scored (their run ended) as results marked not scored, for
    their cost to reach the ledger. Their score of 0 counts in no mean, histogram or regression (the
    selectors read scored results only). Returns the cost of the rows written and the answers whose
    pair was written already (paid twice: the caller charges them)."""
    cost, written, written_already = Decimal(0), 0, []
    for answer in answers:
        row = _result_row(run_id, answer)
        row.score, row.scored, row.reason = 0.0, False, "not scored"
        row.error = f"not scored: the run ended before the judge answered ({answer.error})"
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            written_already.append(answer)
            continue
        cost, written = cost + answer.cost_usd, written + 1
    if written:
        _post_costs_on_commit(run_id)
    return cost, written_already


def _write_unscored_answers_as_results(run: BenchmarkRun) -> None:
    """For a run ending now (its row locked): its kept answers become unscored results, so the run's
    total, summed next, and the ledger include what they cost."""
    kept = list(BenchmarkUnscoredAnswer.objects.select_for_update().filter(run_id=run.pk))
    if not kept:
        return
    _, written_already = _write_unscored_results(run.pk, [
        _Answer(
            row.model_version_id, row.case_id, "unscored", output=row.output, finish_reason=row.finish_reason,
            latency_ms=row.latency_ms, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
            judge_prompt_tokens=row.judge_prompt_tokens, judge_completion_tokens=row.judge_completion_tokens,
            cost_usd=row.cost_usd, error=row.error,
        )
        for row in kept
    ])
    # A kept answer whose pair has a result already (another holder of the chunk answered it too).
    _charge_paid_twice(run, written_already, attempt="run-end")
    BenchmarkUnscoredAnswer.objects.filter(pk__in=[row.pk for row in kept]).delete()


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
    """`benchmark_chunk_execute` once the chunk is ours."""
    chunk_id = lease.chunk_id
    run = BenchmarkRun.objects.select_related("agent", "candidate__provider", "baseline__provider").get(pk=lease.run_id)
    if lease.claims > MAX_CHUNK_CLAIMS:
        previous = BenchmarkChunk.objects.filter(pk=chunk_id).values_list("error", flat=True).get()
        message = f"chunk {chunk_id} was started {lease.claims - 1} times without finishing" + (f"; last: {previous}" if previous else "")
        _release_chunk(lease, done=False, error=message)
        benchmark_run_fail(run_id=run.pk, error=message)
        return ChunkOutcome(chunk_id=chunk_id, error=message, run_finished=True)
    try:
        context = _chunk_context(run, lease)
    except Conflict as error:
        _release_chunk(lease, done=False, error=error.message)
        benchmark_run_fail(run_id=run.pk, error=error.message)
        return ChunkOutcome(chunk_id=chunk_id, error=error.message, run_finished=True)
    done = set(
        BenchmarkResult.objects.filter(run_id=run.pk, case_id__in={case_id for _, case_id in lease.items}).values_list(
            "model_version_id", "case_id"
        )
    )
    pending = [item for item in lease.items if item not in done]
    outcome = ChunkOutcome(chunk_id=chunk_id)
    transient: list[_Answer] = []
    fatal: str = ""
    lost_lease = False
    buffer: list[_Answer] = []
    # As many threads as call slots: with two chunks in two processes that is twice the slots, so a
    # slot handed on finds a thread ready (benchmark_limits); more threads measured slower (GIL).
    threads = min(len(pending), max(v.provider.max_concurrency for v in context.versions.values())) or 1
    todo = deque(pending)
    answers: queue.SimpleQueue[_Answer | BaseException] = queue.SimpleQueue()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"benchmark-chunk-{chunk_id}") as pool:
        try:
            workers = [pool.submit(_answer_pairs, context, todo, answers) for _ in range(threads)]
            remaining = len(pending)
            last_write = time.monotonic()
            while remaining:
                write_at = last_write + (FLUSH_EVERY_SECONDS if buffer else CHUNK_HEARTBEAT_SECONDS)
                try:
                    answer = answers.get(timeout=max(0.0, write_at - time.monotonic()))
                except queue.Empty:
                    answer = None
                    if all(worker.done() for worker in workers) and answers.empty():
                        # Every thread ended (a BaseException) with pairs left: stop rather than wait forever.
                        fatal = fatal or f"the chunk's threads stopped with {remaining} pair(s) unanswered"
                        break
                if isinstance(answer, BaseException):  # a bug must fail the run with its message, not loop
                    remaining -= 1
                    logger.error("benchmark chunk %s: unexpected error", chunk_id, exc_info=answer)
                    fatal = fatal or f"internal error while scoring: {type(answer).__name__}: {answer}"
                    context.stop.set()
                elif answer is not None:
                    remaining -= 1
                    if answer.kind in ("scored", "refused"):
                        buffer.append(answer)
                    elif answer.kind == "unscored":
                        buffer.append(answer)  # kept (paid for) at the next write
                        transient.append(answer)  # and its judge asked again in the next round
                    elif answer.kind == "transient":
                        transient.append(answer)
                    elif answer.kind == "fatal":
                        fatal = fatal or answer.error
                        context.stop.set()
                due = time.monotonic() >= write_at
                if (buffer and (len(buffer) >= FLUSH_MAX_RESULTS or not remaining)) or due:
                    created, still_ours = _store_answers(context, lease, buffer) if buffer else (0, _heartbeat(lease))
                    outcome.scored += created
                    buffer = []
                    last_write = time.monotonic()
                    if not still_ours and not context.stop.is_set():
                        lost_lease = True
                        context.stop.set()  # the threads skip what they have not started
            if buffer:
                created, _ = _store_answers(context, lease, buffer)
                outcome.scored += created
        except BaseException:
            # A database error, a soft time limit…: the threads must not go on asking (and paying).
            context.stop.set()
            raise
    if outcome.scored:
        _post_costs_on_commit(run.pk)
    if fatal:
        _release_chunk(lease, done=False, error=fatal)
        benchmark_run_fail(run_id=run.pk, error=fatal)
        outcome.error, outcome.run_finished = fatal, True
        return outcome
    if lost_lease:
        outcome.skipped_reason = "the run stopped or the chunk was handed to another worker"
        return outcome
    if transient:
        message = (
            f"{len(transient)} pair(s) failed transiently after {CALL_RETRY_POLICY.max_attempts} attempts each, "
            f"e.g. {transient[0].error}"
        )
        attempts = BenchmarkChunk.objects.filter(pk=chunk_id).values_list("attempts", flat=True).get()
        if attempts >= MAX_CHUNK_ATTEMPTS:
            _release_chunk(lease, done=False, error=message)
            benchmark_run_fail(run_id=run.pk, error=f"chunk {chunk_id} gave up after {attempts} rounds: {message}")
            outcome.error, outcome.run_finished = message, True
            return outcome
        _release_chunk(lease, done=False, error=message)
        waits = [a.retry_after for a in transient if a.retry_after is not None]
        outcome.retry_in = max([5.0 * attempts, *waits])
        outcome.error = message
        return outcome
    _release_chunk(lease, done=True)
    finished = benchmark_run_finish_if_complete(run_id=run.pk)
    outcome.run_finished = finished is not None
    return outcome


def _chunk_context(run: BenchmarkRun, lease: ChunkLease) -> _ChunkContext:
    case_ids = {case_id for _, case_id in lease.items}
    cases = {case.pk: case for case in BenchmarkCase.objects.filter(pk__in=case_ids)}
    versions = {run.baseline_id: run.baseline, run.candidate_id: run.candidate}
    prices = {pk: _price(version.model_id, version.base_model) for pk, version in versions.items()}
    judge_account = judge_price = None
    if any(_uses_judge(case.scorer) for case in cases.values()):
        judge_price = _price(str(run.parameters.get("judge_model") or DEFAULT_JUDGE_MODEL), None)
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


@transaction.atomic
def benchmark_runs_resume_stalled(
    *,
    live_workers: Collection[str] | None,
    now: datetime | None = None,
    stalled_after_seconds: float = CHUNK_STALLED_AFTER_SECONDS,
    resend_queued_after_seconds: float = QUEUED_CHUNK_RESEND_AFTER_SECONDS,
) -> list[int]:
    """Hand the chunks of dead workers to live ones; returns the chunk ids sent again.

    A running chunk is taken back when its worker is not among `live_workers` (the names that
    answered a Celery ping; None when the ping could not be made) or its heartbeat is older than
    `stalled_after_seconds`. A queued chunk is sent again at once when the worker that received its
    message (`received_by`, see `benchmark_chunk_received`) is not among `live_workers`: killed
    before claiming the chunk, it left the message unacknowledged in Redis until the visibility
    timeout. Any other queued chunk is sent again once it has waited longer than
    `resend_queued_after_seconds` (a message lost some other way, or no ping to judge by). A chunk
    sent again forgets its receiver until the new message's receiver notes itself. Duplicated
    messages are harmless: a chunk is claimed by one worker at a time and scored pairs are skipped.
    Results left off the ledger for as long get their posting sent again."""
    now = now or timezone.now()
    stalled_before = now - timedelta(seconds=stalled_after_seconds)
    resend_before = now - timedelta(seconds=resend_queued_after_seconds)
    resend: list[int] = []
    chunks = list(
        BenchmarkChunk.objects.select_for_update(skip_locked=True).filter(
            run__status__in=[BenchmarkRunStatus.QUEUED, BenchmarkRunStatus.RUNNING],
            status__in=[BenchmarkChunkStatus.QUEUED, BenchmarkChunkStatus.RUNNING],
        )
    )

    def gone(node: str) -> bool:
        return live_workers is not None and node not in live_workers

    for chunk in chunks:
        if chunk.status == BenchmarkChunkStatus.RUNNING:
            worker_gone = gone(worker_node(chunk.worker))
            silent = chunk.heartbeat_at is None or chunk.heartbeat_at < stalled_before
            if not (worker_gone or silent):
                continue
            why = f"worker {chunk.worker} " + ("no longer answers" if worker_gone else f"sent no heartbeat since {chunk.heartbeat_at:%H:%M:%S}")
            logger.warning("benchmark run #%s chunk %s: %s; handing it to another worker", chunk.run_id, chunk.index, why)
            chunk.status, chunk.lease_token, chunk.error = BenchmarkChunkStatus.QUEUED, None, f"{why}; handed on"
        elif chunk.received_by and gone(chunk.received_by):
            why = f"worker {chunk.received_by} received its message and no longer answers"
            logger.warning("benchmark run #%s chunk %s: %s; sending it again", chunk.run_id, chunk.index, why)
            chunk.error = f"{why}; sent again"
        elif chunk.enqueued_at is not None and chunk.enqueued_at >= resend_before:
            continue
        chunk.enqueued_at, chunk.received_by = now, ""
        chunk.save(update_fields=["status", "lease_token", "error", "enqueued_at", "received_by"])
        resend.append(chunk.pk)
    if resend:
        _send_chunks_on_commit(resend)
    # The ledger's outbox: results whose posting message was lost (a worker killed before it ran).
    unposted = (
        BenchmarkResult.objects.filter(cost_posted_at__isnull=True, created_at__lt=now - timedelta(seconds=stalled_after_seconds))
        .values_list("run_id", flat=True)
        .distinct()
    )
    for run_id in unposted:
        _post_costs_on_commit(run_id)
    # A run whose chunks are all done but which is still running: its worker died (or its database
    # call failed) between releasing the last chunk and finishing the run. Finishing is safe twice.
    finished_chunks_only = BenchmarkRun.objects.filter(status=BenchmarkRunStatus.RUNNING).exclude(
        chunks__status__in=[BenchmarkChunkStatus.QUEUED, BenchmarkChunkStatus.RUNNING]
    )
    for run_id in finished_chunks_only.values_list("pk", flat=True):
        logger.warning("benchmark run #%s: every chunk is done but the run was not finished; finishing it", run_id)
        benchmark_run_finish_if_complete(run_id=run_id)
    return resend
