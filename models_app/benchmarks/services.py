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
   moves the candidate: PASS → approved_for_rollout, INCONCLUSIVE → registered, FAIL → rejected —
   when the baseline is the agent's live version then; against any other baseline the run is a
   comparison and the candidate gets its status back. A candidate that was already
   approved_for_rollout is left there (see `_decide_candidate`).

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
so the same sweep sends such a chunk again as soon as that worker no longer answers — and, since
the worker may have been killed between taking a message and noting it, every queued chunk that no
worker has noted goes again with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from costs.models import Operation
from costs.services import budget_check
from genesis.errors import Conflict, InvalidInput, PermissionDenied
from genesis.integrity import is_unique_violation
from genesis.jobs import advance
from genesis.permissions import Actor, require_permission
from genesis.tasks import send_task
from models_app.benchmarks import stats as benchmark_stats
from models_app.benchmarks.answers import JUDGE_REFUSED, RESULT_WRITTEN_ALREADY, Answer, result_row
from models_app.benchmarks.ledger import (
    benchmark_cost_estimate,
    charge_paid_twice,
    post_costs_on_commit,
    release_budget_when_settled,
)
from models_app.benchmarks.models import (
    RUN_TRANSITIONS,
    BenchmarkCase,
    BenchmarkChunk,
    BenchmarkChunkStatus,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkSuite,
    BenchmarkUnscoredAnswer,
    BenchmarkVerdict,
    BenchmarkVerdictOverride,
)
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL
from models_app.benchmarks.selectors import (
    BENCHMARKABLE_STATUSES,
    active_run_for_candidate,
    benchmark_run_cost,
    benchmark_run_number,
    benchmark_run_pairs,
    comparison_only_note,
    default_candidate,
    latest_suite,
    run_approves_candidate,
)
from models_app.benchmarks.suites import cases_fingerprint, parse_suite_jsonl
from models_app.registry.gateway import destination_refusal
from models_app.registry.models import Agent, ModelStatus, ModelVersion
from models_app.registry.selectors import live_version
from models_app.registry.services import model_version_transition

logger = logging.getLogger(__name__)

OVERRIDE_PERMISSION = "models_app.override_benchmark_verdict"
# An override changes the model version's status, so it also needs the right to change versions.
CHANGE_VERSION_PERMISSION = "models_app.change_modelversion"
MAX_ERRORS_SHOWN = 20

# A run's estimate is held against the budgets until it is finished and paid; a hold whose run was
# lost (its rows deleted by hand) stops counting after this.
BENCHMARK_HOLD_LASTS = timedelta(days=1)

VERDICT_TO_STATUS = {
    BenchmarkVerdict.PASS: ModelStatus.APPROVED_FOR_ROLLOUT,
    BenchmarkVerdict.INCONCLUSIVE: ModelStatus.REGISTERED,
    BenchmarkVerdict.FAIL: ModelStatus.REJECTED,
}


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
    actor: Actor = None,
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

    candidate = candidate or default_candidate(agent=agent)
    if candidate is None:
        raise Conflict(
            f"agent '{agent.slug}' has no fine-tuned version to benchmark (registered or approved_for_rollout): "
            "register one first, or name the candidate model explicitly"
        )
    # The gate compares a candidate with the model it would replace. Any other version may be named, for
    # a comparison that decides nothing (see _decide_candidate).
    baseline = baseline or live_version(agent=agent)
    if baseline is None:
        raise Conflict(
            f"agent '{agent.slug}' has no live version to benchmark against (the gate compares a candidate with "
            "the model it would replace): put the agent's first baseline live (admin: Change status…), or name a "
            "baseline for a comparison that approves nothing"
        )
    for role, version in (("candidate", candidate), ("baseline", baseline)):
        if version.agent_id != agent.pk:
            raise InvalidInput(f"{role}: {version.model_id} belongs to agent '{version.agent.slug}', not '{agent.slug}'")
        if not version.provider.enabled:
            raise Conflict(f"{role}: provider '{version.provider.name}' of {version.model_id} is disabled; enable it in the admin")
        # Said now, not by a worker minutes later: every call of the run would be refused.
        if refusal := destination_refusal(version.provider):
            raise Conflict(f"{role}: provider '{version.provider.name}' of {version.model_id} may not be called: {refusal}")
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
    actor: Actor = None,
    requested_via: str = "",
    parameters: Mapping[str, Any] | None = None,
    budget_override_reason: str | None = None,
) -> BenchmarkRun:
    """Queue a run of `suite` (default: the agent's latest) on `candidate` (default: its newest
    benchmarkable fine-tune) and `baseline` (default: its live model; any other version of the agent
    makes a comparison whose verdict decides nothing about the candidate). Refused (Conflict) when the
    budget cannot take the estimate, unless a person with costs.override_budget gives a reason."""

    require_permission(actor=actor, permission="models_app.add_benchmarkrun", action="start benchmark runs")
    suite = suite or latest_suite(agent=agent)
    if suite is None:
        raise Conflict(f"agent '{agent.slug}' has no benchmark suite: import one (admin or `import_benchmark_suite`)")
    if suite.agent_id != agent.pk:
        raise InvalidInput(f"suite: {suite} belongs to agent '{suite.agent.slug}', not '{agent.slug}'")
    candidate, baseline = _resolve_versions(agent=agent, candidate=candidate, baseline=baseline)
    candidate = _lock_benchmarkable(candidate)
    params = _run_parameters(agent=agent, overrides=parameters)
    # Frozen with the run: the verdict reads its interval at this run's share of α (reruns.rerun_alpha).
    params["run_number"] = benchmark_run_number(candidate=candidate, suite=suite)
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
    _queue_chunks(run, cases=cases, baseline=baseline, candidate=candidate)
    return run


def _lock_benchmarkable(candidate: ModelVersion) -> ModelVersion:
    """The candidate, locked (two runs started at once for one candidate must not both go ahead), or a
    Conflict saying why it cannot be benchmarked now."""
    candidate = ModelVersion.objects.select_for_update().select_related("provider", "agent").get(pk=candidate.pk)
    active = active_run_for_candidate(candidate=candidate)
    if active is not None:
        raise Conflict(f"{candidate.model_id} is already being benchmarked by run #{active.pk} ({active.status}); wait for it or cancel it")
    if candidate.status not in BENCHMARKABLE_STATUSES:
        raise Conflict(
            f"{candidate.model_id} is {candidate.status}; only a registered or approved_for_rollout version can be "
            "benchmarked (a rejected one needs a new fine-tune)"
        )
    return candidate


def _queue_chunks(run: BenchmarkRun, *, cases: list[BenchmarkCase], baseline: ModelVersion, candidate: ModelVersion) -> None:
    """Split the run's pairs into chunk rows and send them once the transaction commits."""
    # Pairs in case order, baseline then candidate: a partial run still holds complete pairs.
    items = [[version.pk, case.pk] for case in cases for version in (baseline, candidate)]
    size = _chunk_size(parameters=run.parameters, concurrency=max(baseline.provider.max_concurrency, candidate.provider.max_concurrency))
    starts = _chunk_starts(len(items), size, stagger=not run.parameters.get("chunk_size"))
    now = timezone.now()
    chunks = BenchmarkChunk.objects.bulk_create(
        BenchmarkChunk(run=run, index=index, items=items[start:end], enqueued_at=now)
        for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(items)], strict=True))
    )
    send_chunks_on_commit([chunk.pk for chunk in chunks])
    logger.info(
        "benchmark run #%s queued: %s vs %s on %s (%s answers — %s cases × 2 models — in %s chunk(s), estimate $%s)",
        run.pk, candidate.model_id, baseline.model_id, run.suite, len(items), len(cases), len(chunks), run.estimated_cost_usd,
    )


def _who(actor: Actor, requested_via: str = "") -> str:
    name = actor.get_username() if actor is not None and actor.pk else "the system"
    return f"{name} ({requested_via})" if requested_via else name


def send_chunks_on_commit(chunk_ids: list[int]) -> None:
    # A chunk that cannot be sent stays queued: the resume sweep sends it again. The first refusal ends
    # the sending: a broker that is down makes each attempt wait for its connection timeout, and the
    # person who started the run would wait that long once per chunk for nothing.
    def send_all() -> None:
        for position, chunk_id in enumerate(chunk_ids):
            if not send_task("models_app.benchmark_chunk_run", chunk_id, what=f"benchmark chunk {chunk_id}"):
                if left := len(chunk_ids) - position - 1:
                    logger.warning("%s more benchmark chunk(s) not sent either: the resume sweep sends them", left)
                return

    transaction.on_commit(send_all)


def _restore_candidate(run: BenchmarkRun, *, actor: Actor, reason: str) -> None:
    """A run that ends without a verdict gives the candidate back the status it had."""
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    target = run.candidate_status_before or ModelStatus.REGISTERED
    if candidate.status != ModelStatus.BENCHMARKING or target == ModelStatus.BENCHMARKING:
        return  # someone moved it meanwhile; leave their decision alone
    model_version_transition(version=candidate, to_status=target, actor=actor, reason=reason)


@transaction.atomic
def benchmark_run_cancel(*, run: BenchmarkRun, actor: Actor, reason: str = "") -> BenchmarkRun:
    """Stop a queued or running run. Workers stop asking models at their next batch; results
    already written stay (and stay paid for)."""
    require_permission(actor=actor, permission="models_app.change_benchmarkrun", action="cancel benchmark runs")
    run = BenchmarkRun.objects.select_for_update().get(pk=run.pk)
    advance(run, BenchmarkRunStatus.CANCELLED, transitions=RUN_TRANSITIONS)
    run.cancelled_by = actor if getattr(actor, "pk", None) else None
    run.finished_at = timezone.now()
    run.error = f"cancelled by {actor or 'the system'}" + (f": {reason}" if reason else "")
    write_unscored_answers_as_results(run)
    # What has landed so far; answers still in flight add theirs when they are written (_count_progress).
    run.cost_usd = benchmark_run_cost(run=run)
    run.save(update_fields=["status", "cancelled_by", "finished_at", "error", "cost_usd"])
    _restore_candidate(run, actor=None, reason=f"benchmark run #{run.pk} cancelled by {_who(actor)}")
    release_budget_when_settled(run)
    return run


@transaction.atomic
def benchmark_verdict_override(*, run: BenchmarkRun, actor: Actor, reason: str) -> BenchmarkVerdictOverride:
    """Approve the candidate for rollout despite a verdict that did not: a non-PASS, or a PASS against a
    baseline that was not the live version (a comparison only). Needs a person with the permissions
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
    if run_approves_candidate(run=run):
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
    advance(run, BenchmarkRunStatus.FAILED, transitions=RUN_TRANSITIONS)
    run.error = error[:4000]
    run.finished_at = timezone.now()
    write_unscored_answers_as_results(run)
    # What has landed so far; answers still in flight add theirs when they are written (_count_progress).
    run.cost_usd = benchmark_run_cost(run=run)
    run.save(update_fields=["status", "error", "finished_at", "cost_usd"])
    _restore_candidate(run, actor=None, reason=f"benchmark run #{run.pk} failed")
    release_budget_when_settled(run)
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
        # Runs created before re-runs spent α have no run_number: decided at the full confidence, as then.
        run_number=int(params["run_number"]) if params.get("run_number") else None,
    )
    data = comparison.as_dict()
    data["errors"] = run.results.exclude(error="").count()
    if refused_by_judge := run.results.filter(error__startswith=JUDGE_REFUSED).count():
        data["reasons"].append(
            f"{refused_by_judge} answer(s) the judge refused to grade are compared as the worst case for the candidate "
            "(0 for its answer, 1 for the baseline's): see the results marked 'not graded'"
        )
    advance(run, BenchmarkRunStatus.COMPLETED, transitions=RUN_TRANSITIONS)
    run.verdict = comparison.verdict
    run.finished_at = timezone.now()
    run.cost_usd = benchmark_run_cost(run=run)
    # Which model the candidate would replace is read now, not when the run started: a rollout may have
    # completed meanwhile, and a PASS against the version it retired approves nothing.
    live = live_version(agent=run.agent)
    data["baseline_live"] = live is not None and live.pk == run.baseline_id
    data["baseline_status"] = ModelVersion.objects.filter(pk=run.baseline_id).values_list("status", flat=True).get()
    data["candidate_status"] = _decide_candidate(run, comparison, data, live=live)
    run.comparison = data
    run.save(update_fields=["status", "verdict", "finished_at", "cost_usd", "comparison"])
    release_budget_when_settled(run)
    logger.info("benchmark run #%s completed: %s", run.pk, "; ".join(comparison.reasons))
    return run


def _decide_candidate(
    run: BenchmarkRun, comparison: benchmark_stats.Comparison, data: dict[str, Any], *, live: ModelVersion | None
) -> str:
    """Move the candidate as the verdict says and return its status; when it is left elsewhere, say
    why in data["reasons"].

    Only a run against the agent's live version (data["baseline_live"]) decides the candidate: a PASS
    against a weaker model — a retired baseline, say — says nothing about the model the candidate would
    replace, so it approves nothing (and a FAIL against another candidate rejects nothing). The candidate
    gets back the status it had before the run.

    A candidate that was approved_for_rollout before the run stays approved whatever the new verdict:
    an experiment may be using it (a draft about to start), and demoting it behind that experiment's
    back is not a benchmark's call. The verdict is recorded on the run and said in its reasons and in
    the log; a person decides (reject or retire it by hand, or roll it out anyway)."""
    reasons: list[str] = data["reasons"]
    target: str = VERDICT_TO_STATUS[BenchmarkVerdict(comparison.verdict)]
    why = f"{comparison.verdict} ({comparison.reasons[0]})"
    approved = ModelStatus.APPROVED_FOR_ROLLOUT
    candidate = ModelVersion.objects.select_for_update().get(pk=run.candidate_id)
    was_approved = run.candidate_status_before == approved
    if not data["baseline_live"]:
        before = run.candidate_status_before or ModelStatus.REGISTERED
        target = ModelStatus.REGISTERED if before == ModelStatus.BENCHMARKING else before
        note = comparison_only_note(verdict=comparison.verdict, baseline_model=run.baseline.model_id,
                                    baseline_status=data["baseline_status"])
        decides = "approves a candidate for rollout" if comparison.verdict == BenchmarkVerdict.PASS else "decides a candidate"
        why = (f"{note} — only a run against the agent's live version ({live.model_id if live else 'none'}) {decides}; "
               f"the candidate stays {target}")
        reasons.append(why)
        logger.warning("benchmark run #%s of %s: %s", run.pk, candidate.model_id, why)
    elif was_approved and target != approved and candidate.status in (approved, ModelStatus.BENCHMARKING):
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
        model_version_transition(version=candidate, to_status=target, actor=None, reason=f"benchmark run #{run.pk}: {why}")
        return target
    reasons.append(
        f"the candidate was not moved to {target}: it was {candidate.status} when the run finished (changed meanwhile)"
    )
    return candidate.status


# --- a run's end: answers never scored ---------------------------------------------------------------------


def write_unscored_results(run_id: int, answers: list[Answer]) -> tuple[Decimal, list[Answer]]:
    """Write answers that will never be scored (their run ended) as results marked not scored, for
    their cost to reach the ledger. Their score of 0 counts in no mean, histogram or regression (the
    selectors read scored results only). Returns the cost of the rows written and the answers whose
    pair was written already (paid twice: the caller charges them)."""
    cost, written, written_already = Decimal(0), 0, []
    for answer in answers:
        row = result_row(run_id, answer)
        row.score, row.scored, row.reason = 0.0, False, "not scored"
        row.error = f"not scored: the run ended before the judge answered ({answer.error})"
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError as exc:
            if not is_unique_violation(exc, *RESULT_WRITTEN_ALREADY):
                raise
            written_already.append(answer)
            continue
        cost, written = cost + answer.cost_usd, written + 1
    if written:
        post_costs_on_commit(run_id)
    return cost, written_already


def write_unscored_answers_as_results(run: BenchmarkRun) -> None:
    """For a run ending now (its row locked): its kept answers become unscored results, so the run's
    total, summed next, and the ledger include what they cost."""
    kept = list(BenchmarkUnscoredAnswer.objects.select_for_update().filter(run_id=run.pk))
    if not kept:
        return
    _, written_already = write_unscored_results(run.pk, [
        Answer(
            row.model_version_id, row.case_id, "unscored", output=row.output, finish_reason=row.finish_reason,
            latency_ms=row.latency_ms, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
            judge_prompt_tokens=row.judge_prompt_tokens, judge_completion_tokens=row.judge_completion_tokens,
            tokens_estimated=row.tokens_estimated, cost_usd=row.cost_usd, error=row.error,
        )
        for row in kept
    ])
    # A kept answer whose pair has a result already (another holder of the chunk answered it too).
    charge_paid_twice(run, written_already, attempt="run-end")
    BenchmarkUnscoredAnswer.objects.filter(pk__in=[row.pk for row in kept]).delete()


