"""Reads of benchmarks: which suite and candidate a run uses by default, runs and their results, the
contract's summary object, and the data of the admin's run page."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet
from django.utils import timezone

from costs.selectors import charged_by_source
from genesis.aggregates import DecimalTotal
from genesis.errors import Conflict, NotFound
from models_app.benchmarks import stats as benchmark_stats
from models_app.benchmarks.breakdown import score_histogram
from models_app.benchmarks.models import (
    BenchmarkCase,
    BenchmarkChunk,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkSuite,
    BenchmarkVerdict,
)
from models_app.benchmarks.reruns import confidence_text, rerun_alpha
from models_app.benchmarks.suites import SuiteCase, suite_jsonl
from models_app.registry.models import Agent, ModelKind, ModelStatus, ModelVersion

# A candidate can be benchmarked from these statuses (lifecycle: → benchmarking).
BENCHMARKABLE_STATUSES = (ModelStatus.REGISTERED, ModelStatus.APPROVED_FOR_ROLLOUT)
# The default candidate is the newest fine-tune in one of these. A version already being benchmarked
# stays the default, so a second request is refused naming its run instead of quietly benchmarking an
# older fine-tune (an approved version keeps its status while it is benchmarked; the run shows it busy).
DEFAULT_CANDIDATE_STATUSES = (*BENCHMARKABLE_STATUSES, ModelStatus.BENCHMARKING)
ACTIVE_RUN_STATUSES = (BenchmarkRunStatus.QUEUED, BenchmarkRunStatus.RUNNING)
ZERO = Decimal(0)
MICRO_DOLLAR = Decimal("0.000001")  # the ledger's quantum (costs.pricing.LEDGER_QUANTUM)


def money(amount: Decimal) -> str:
    """Dollars as a decimal string, to the micro-dollar the ledger keeps: "0.000934"."""
    return str(amount.quantize(MICRO_DOLLAR))


def latest_suite(*, agent: Agent, slug: str | None = None) -> BenchmarkSuite | None:
    """The newest version of `slug` (or of the agent's most recently imported suite)."""
    suites = BenchmarkSuite.objects.filter(agent=agent).select_related("agent")
    if slug is not None:
        return suites.filter(slug=slug).order_by("-version").first()
    return suites.order_by("-created_at", "-pk").first()


def default_candidate(*, agent: Agent) -> ModelVersion | None:
    """The candidate a run takes when none is named (the API, `benchmark_finetuned`, `run_all_benchmarks`):
    the newest fine-tuned version that may be benchmarked or is being benchmarked. The service refuses
    the latter naming its run; it never falls back to an older version."""
    return (
        agent.versions.select_related("provider", "agent")
        .filter(kind=ModelKind.FINE_TUNED, status__in=DEFAULT_CANDIDATE_STATUSES)
        .order_by("-created_at", "-pk")
        .first()
    )


def version_named(*, agent: Agent, model_id: str, field: str) -> ModelVersion:
    """The agent's version a request names by its model id (`field` is the request's name for it).
    Refuses an id the agent does not have (NotFound, naming the ones it has) and one that several
    providers serve (Conflict): which of them is meant is for the person to choose, not a guess."""
    versions = list(agent.versions.select_related("provider", "agent").filter(model_id=model_id).order_by("provider__name"))
    if not versions:
        known = ", ".join(agent.versions.order_by("model_id").values_list("model_id", flat=True)) or "none"
        raise NotFound(f"{field}: agent '{agent.slug}' has no model '{model_id}'; its models: {known}")
    if len(versions) > 1:
        raise Conflict(
            f"{field}: '{model_id}' is served by several providers for '{agent.slug}' "
            f"({', '.join(v.provider.name for v in versions)}); choose in the admin"
        )
    return versions[0]


def agents_with_benchmark_candidates() -> list[Agent]:
    """Agents with a default candidate, for `run_all_benchmarks` (one being benchmarked is listed too:
    its refusal names the run, where leaving the agent out would say nothing)."""
    return list(
        Agent.objects.filter(versions__kind=ModelKind.FINE_TUNED, versions__status__in=DEFAULT_CANDIDATE_STATUSES)
        .distinct()
        .order_by("slug")
    )


def agents_left_out_of_benchmarks(*, benchmarked: list[Agent]) -> list[str]:
    """The agents not in `benchmarked`, each as "slug (why)": what `run_all_benchmarks` says of those it
    leaves out, where a missing agent said nothing — its newest fine-tune's status (rolling out, live,
    rejected …), or that it has none."""
    newest_status: dict[int, str] = {}
    for agent_id, status in (
        ModelVersion.objects.filter(kind=ModelKind.FINE_TUNED)
        .exclude(agent__in=benchmarked)
        .order_by("agent_id", "-created_at", "-pk")
        .values_list("agent_id", "status")
    ):
        newest_status.setdefault(agent_id, status)
    left_out = []
    for agent in Agent.objects.exclude(pk__in=[agent.pk for agent in benchmarked]).order_by("slug"):
        newest = newest_status.get(agent.pk)
        why = f"its newest fine-tune is {ModelStatus(newest).label.lower()}" if newest else "no fine-tuned version"
        left_out.append(f"{agent.slug} ({why})")
    return left_out


def active_run_for_candidate(*, candidate: ModelVersion) -> BenchmarkRun | None:
    return BenchmarkRun.objects.filter(candidate=candidate, status__in=ACTIVE_RUN_STATUSES).order_by("-pk").first()


def benchmark_run_number(*, candidate: ModelVersion, suite: BenchmarkSuite) -> int:
    """Which run of `candidate` on `suite` the next one is: 1 + its completed runs on any version of the
    suite (a re-import with a case changed is the same suite; cancelled and failed runs decided nothing).
    The gate spends its α over these runs (reruns.rerun_alpha), so re-running until PASS gains nothing."""
    earlier = BenchmarkRun.objects.filter(
        candidate=candidate, suite__agent_id=suite.agent_id, suite__slug=suite.slug, status=BenchmarkRunStatus.COMPLETED,
    ).count()
    return earlier + 1


def benchmark_runs(
    *, agent_slugs: frozenset[str] | None = None, status: str | None = None, limit: int = 50
) -> QuerySet[BenchmarkRun]:
    runs = BenchmarkRun.objects.select_related("agent", "suite", "candidate", "baseline").order_by("-created_at", "-pk")
    if agent_slugs is not None:
        runs = runs.filter(agent__slug__in=agent_slugs)
    if status:
        runs = runs.filter(status=status)
    return runs[:limit]


def benchmark_run_get(*, run_id: int) -> BenchmarkRun | None:
    return (
        BenchmarkRun.objects.select_related(
            "agent", "suite", "candidate__provider", "baseline__provider", "requested_by", "cancelled_by"
        )
        .filter(pk=run_id)
        .first()
    )


def benchmark_run_cost(*, run: BenchmarkRun) -> Decimal:
    """What the run has cost so far (benchmark_runs_cost)."""
    return benchmark_runs_cost(run_ids=[run.pk])[run.pk]


def benchmark_runs_cost(*, run_ids: Collection[int]) -> dict[int, Decimal]:
    """What each run has cost so far, summed in SQL: its results, plus what the ledger holds against
    the run itself (answers paid for again after their pair's result was written; ledger.py
    `charge_paid_twice`) — two queries however many runs (none for none)."""
    results = BenchmarkResult.objects.filter(run_id__in=run_ids).order_by().values("run_id")
    paid = dict(results.annotate(total=DecimalTotal("cost_usd")).values_list("run_id", "total"))
    charged = charged_by_source(model=BenchmarkRun, source_ids=run_ids) if run_ids else {}
    return {run_id: paid.get(run_id, ZERO) + charged.get(run_id, ZERO) for run_id in run_ids}


def _scored_results(*, run_ids: Collection[int]) -> dict[int, dict[int, list[float]]]:
    """The scores of each run's scored results by model version, for all `run_ids` in one query (none
    for none), in suite order — a run's own read's order — so that a mean adds them up as it always has."""
    scores: dict[int, dict[int, list[float]]] = {}
    # case_id breaks ties: positions are not unique by constraint, and the list and a run's own page
    # must add the same floats in the same order.
    rows = BenchmarkResult.objects.filter(run_id__in=run_ids, scored=True).order_by("case__position", "case_id")
    for run_id, version_id, score in rows.values_list("run_id", "model_version_id", "score"):
        scores.setdefault(run_id, {}).setdefault(version_id, []).append(score)
    return scores


def benchmark_run_pairs(*, run: BenchmarkRun) -> list[benchmark_stats.PairedScore]:
    """Cases scored for both models, with their tags, in suite order."""
    scores: dict[int, dict[int, float]] = {}
    for case_id, version_id, score in run.results.filter(scored=True).values_list("case_id", "model_version_id", "score"):
        scores.setdefault(case_id, {})[version_id] = score
    pairs = []
    for case in BenchmarkCase.objects.filter(pk__in=scores).order_by("position").only("pk", "key", "tags"):
        by_model = scores[case.pk]
        if run.baseline_id in by_model and run.candidate_id in by_model:
            pairs.append(
                benchmark_stats.PairedScore(
                    key=case.key, baseline=by_model[run.baseline_id], candidate=by_model[run.candidate_id],
                    tags=tuple(case.tags or ()),
                )
            )
    return pairs


def _model_summary(version: ModelVersion, comparison: dict[str, Any] | None, side: str, scores: list[float]) -> dict[str, Any]:
    """One side of a run: the means its verdict compared, else (no verdict yet, or none reached) the
    mean of the side's `scores` so far."""
    if comparison is not None:
        mean, n = comparison[f"{side}_mean"], comparison["n"]
    else:
        mean, n = (round(sum(scores) / len(scores), 6) if scores else None), len(scores)
    return {"model": version.model_id, "mean_score": mean, "n": n}


# --- which runs decide a candidate ---------------------------------------------------------------------
#
# A run may compare a candidate with any version of its agent (exploring: against a retired baseline,
# another candidate…), but only a run whose baseline is the agent's live version — the model the
# candidate would replace — decides the candidate: PASS approves it for rollout, FAIL rejects it. The
# gate records which it was when it decided (comparison["baseline_live"], with the baseline's status
# then in comparison["baseline_status"]); runs decided before it did count as they did then.


def run_decides_candidate(*, run: BenchmarkRun) -> bool:
    """Whether the run's verdict is the gate's decision on its candidate: its baseline was the agent's
    live version when the verdict was reached, and still is — a verdict against a model another version
    has since replaced decides nothing now (registry services send such approved candidates back to
    registered). The candidate itself replacing that baseline is the exception: gone live after the
    verdict (its rollout completed), the verdict stays the approval it was launched on — a rollout
    rolled back is no launch. True for a run not decided yet; a run decided before `baseline_live` was
    recorded is judged by its baseline's status alone."""
    if not run.verdict:
        return True
    if not (run.comparison or {}).get("baseline_live", True):
        return False
    if run.baseline.status == ModelStatus.LIVE:
        return True
    went_live = getattr(run, "candidate_live_after_verdict", None)
    if went_live is None:  # a run not read through with_verdict_facts: ask its history
        went_live = run.finished_at is not None and run.candidate.history.filter(
            status=ModelStatus.LIVE, history_date__gte=run.finished_at
        ).exists()
    return bool(went_live)


def with_verdict_facts(runs: QuerySet[BenchmarkRun]) -> QuerySet[BenchmarkRun]:
    """`runs` carrying what run_decides_candidate reads beyond the row and its baseline — whether the
    candidate went live after the verdict — from the same query: a list of runs showing their verdict
    notes then costs no query per run (the history lookup was one per row)."""
    went_live = ModelVersion.history.filter(
        id=OuterRef("candidate_id"), status=ModelStatus.LIVE, history_date__gte=OuterRef("finished_at")
    )  # no row when finished_at is NULL (a comparison with NULL is not true), as for an unfinished run
    return runs.annotate(candidate_live_after_verdict=Exists(went_live))


def run_approves_candidate(*, run: BenchmarkRun) -> bool:
    """A PASS against the live version: what moves a candidate to approved_for_rollout."""
    return run.verdict == BenchmarkVerdict.PASS and run_decides_candidate(run=run)


def _status_adjective(status: str) -> str:
    label = ModelStatus(status).label.lower().replace(" ", "-") if status in ModelStatus.values else "non-live"
    return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"


def comparison_only_note(*, verdict: str, baseline_model: str, baseline_status: str) -> str:
    """The plain words for a verdict against a baseline that is not the live version:
    "PASS against a retired baseline (open-mistral-7b): not an approval"."""
    against = f"{verdict} against {_status_adjective(baseline_status)} baseline ({baseline_model})"
    if verdict == BenchmarkVerdict.PASS:
        return f"{against}: not an approval"
    return f"{against}: a comparison, not a decision on the candidate"


def comparison_only_warning(*, run: BenchmarkRun) -> str:
    """What to tell whoever starts a run whose baseline is not the live version (the admin, the command)."""
    return (
        f"run #{run.pk}: the baseline {run.baseline.model_id} is {run.baseline.status}, not {run.agent.slug}'s live "
        "version — a comparison: its verdict will not approve (nor reject) the candidate"
    )


def run_verdict_note(*, run: BenchmarkRun) -> str:
    """The note a run's verdict needs wherever it is shown (admin, commands, lineage, launch board and
    report): "" for a run that decides its candidate, else `comparison_only_note`'s words."""
    if not run.verdict or run_decides_candidate(run=run):
        return ""
    return comparison_only_note(verdict=run.verdict, baseline_model=run.baseline.model_id,
                                baseline_status=run.baseline.status)  # what it is now: why it decides nothing


def benchmark_run_summary(*, run: BenchmarkRun) -> dict[str, Any]:
    """The object `benchmark_finetuned --json` prints (the public contract), from the stored run."""
    return benchmark_run_summaries(runs=[run])[0]


def benchmark_run_summaries(*, runs: Sequence[BenchmarkRun]) -> list[dict[str, Any]]:
    """benchmark_run_summary of each of `runs`, with what their rows do not hold — the scores of the
    runs without a stored comparison, the cost so far of the unfinished ones — read for all of them at
    once: at most three queries however many runs (a list page read up to four per run)."""
    scores = _scored_results(run_ids=[run.pk for run in runs if run.comparison is None])
    costs = benchmark_runs_cost(run_ids=[run.pk for run in runs if not run.is_finished])
    return [_run_summary(run, scores=scores.get(run.pk, {}), costs=costs) for run in runs]


def _run_summary(run: BenchmarkRun, *, scores: dict[int, list[float]], costs: dict[int, Decimal]) -> dict[str, Any]:
    comparison = run.comparison
    # The contract's ci95 is two numbers or null, never half of an interval. The gate stores both ends or
    # neither; runs decided before it did may hold one end only (an unbounded other end), hence both checked.
    ci95 = None
    if comparison is not None and comparison.get("ci_low") is not None and comparison.get("ci_high") is not None:
        ci95 = [comparison["ci_low"], comparison["ci_high"]]
    return {
        "run": run.pk,
        "verdict": run.verdict or None,
        "baseline": _model_summary(run.baseline, comparison, "baseline", scores.get(run.baseline_id, [])),
        "candidate": _model_summary(run.candidate, comparison, "candidate", scores.get(run.candidate_id, [])),
        "relative_improvement": comparison.get("relative_improvement") if comparison else None,
        "ci95": ci95,
        "cost_usd": money(run.cost_usd if run.is_finished else costs[run.pk]),
    }


def suite_sample_size_plan(*, suite: BenchmarkSuite) -> benchmark_stats.SampleSizePlan:
    """How many cases the suite needs for the gate (as configured now) to PASS a candidate twice the
    threshold better with 80 % power, and its power at its own size: from the per-case delta spread of
    the newest finished run of the suite (any version of its slug), or the planner's stated assumption."""
    threshold, rule, min_cases = settings.BENCHMARK_MIN_RELATIVE_IMPROVEMENT, settings.BENCHMARK_GATE_RULE, settings.BENCHMARK_MIN_CASES
    runs = BenchmarkRun.objects.filter(
        suite__agent_id=suite.agent_id, suite__slug=suite.slug, status=BenchmarkRunStatus.COMPLETED
    ).exclude(comparison=None).order_by("-finished_at", "-pk").only("pk", "comparison")
    for run in runs[:5]:
        comparison = run.comparison or {}
        spread, baseline_mean = comparison.get("delta_sd"), comparison.get("baseline_mean") or 0
        if spread is not None and baseline_mean > 0:
            return benchmark_stats.plan_sample_size(
                threshold=threshold, rule=rule, delta_sd=spread, baseline_mean=baseline_mean,
                current_cases=suite.case_count, min_cases=min_cases,
                basis=f"per-case delta SD {spread:.3f} on a baseline mean of {baseline_mean:.3f}, measured by run "
                      f"#{run.pk} ({comparison.get('n')} cases)",
            )
    return benchmark_stats.assumed_plan(threshold=threshold, rule=rule, current_cases=suite.case_count, min_cases=min_cases)


def stored_plan(data: dict[str, Any] | None) -> benchmark_stats.SampleSizePlan | None:
    """A plan as a finished run stored it (comparison["plan"]); None for runs decided before the planner."""
    if not data:
        return None
    return benchmark_stats.SampleSizePlan(**data)


@dataclass(frozen=True)
class GateReport:
    """What the gate applied to a run, for its page and the commands: the rule, the resampling, its
    Monte-Carlo error, and the suite's power."""

    rule: str | None
    rule_text: str
    resamples: int | None
    seed: int | None
    mc_se: tuple[float | None, float | None] | None
    mc_close: bool
    bootstrap_ci: list[float] | None
    fieller_ci: list[float] | None
    plan: benchmark_stats.SampleSizePlan
    # Which completed run of the candidate on this suite (None: decided before re-runs spent α) and the
    # two-sided α its interval is read at.
    run_number: int | None = None
    alpha: float | None = None

    @property
    def rerun_text(self) -> str:
        if self.run_number is None or self.alpha is None:
            return "one look at the full α (decided before re-runs spent α)"
        return (f"run {self.run_number} of this candidate on this suite: interval at {confidence_text(1 - self.alpha)} "
                f"(α = {self.alpha * 100:.3f} %; re-runs spend α as α/(ζ(3)·k³))")

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "rule_text": self.rule_text, "resamples": self.resamples, "seed": self.seed,
            "mc_se": list(self.mc_se) if self.mc_se else None, "mc_close": self.mc_close,
            "bootstrap_ci": self.bootstrap_ci, "fieller_ci": self.fieller_ci, "plan": self.plan.as_dict(),
            "plan_text": self.plan.summary(), "run_number": self.run_number, "alpha": self.alpha,
        }


def benchmark_run_gate(*, run: BenchmarkRun) -> GateReport:
    """The gate's side of a run: what the finished run stored, or — before it finishes — the rule it
    will apply and the suite's plan."""
    comparison = run.comparison or {}
    parameters = run.parameters or {}
    rule = comparison.get("rule") or parameters.get("gate_rule")
    plan = stored_plan(comparison.get("plan")) or suite_sample_size_plan(suite=run.suite)
    decided = bool(comparison)
    run_number = (comparison if decided else parameters).get("run_number")
    alpha = comparison.get("alpha") if decided and run_number else None
    if run_number and alpha is None:
        alpha = rerun_alpha(alpha=1 - float(parameters.get("confidence", 0.95)), run_number=int(run_number))
    confidence = 1 - alpha if alpha is not None else float(
        comparison.get("confidence") or parameters.get("confidence") or 0.95)
    text = (benchmark_stats.rule_text(rule, confidence=confidence) if rule in benchmark_stats.RULES
            else "decided before the rule was recorded")
    return GateReport(
        rule=rule, rule_text=text,
        resamples=comparison.get("resamples") if decided else parameters.get("bootstrap_resamples"),
        seed=comparison.get("seed") if decided else parameters.get("bootstrap_seed"),
        mc_se=(comparison.get("mc_se_low"), comparison.get("mc_se_high")) if decided else None,
        mc_close=bool(comparison.get("mc_close")), bootstrap_ci=comparison.get("bootstrap_ci"),
        fieller_ci=comparison.get("fieller_ci"), plan=plan, run_number=int(run_number) if run_number else None,
        alpha=alpha,
    )


def benchmark_summary_not_started() -> dict[str, Any]:
    """The contract's object for a run that could not start: the same keys, nothing measured, nothing
    spent — so a script reading `--json` never meets a missing key."""
    nothing = {"model": None, "mean_score": None, "n": 0}
    return {
        "run": None, "verdict": None, "baseline": dict(nothing), "candidate": dict(nothing),
        "relative_improvement": None, "ci95": None, "cost_usd": money(ZERO),
    }


@dataclass(frozen=True)
class RegressionLine:
    key: str
    tags: tuple[str, ...]
    baseline_score: float
    candidate_score: float
    delta: float
    baseline_output: str
    candidate_output: str
    candidate_reason: str


@dataclass(frozen=True)
class RunReport:
    run: BenchmarkRun
    summary: dict[str, Any]
    comparison: dict[str, Any] | None
    histogram_bins: list[str]
    baseline_histogram: list[int]
    candidate_histogram: list[int]
    regressions: list[RegressionLine]
    errors: int
    chunks: list[dict[str, Any]]
    gate: GateReport


def benchmark_run_report(*, run: BenchmarkRun, worst: int = 20) -> RunReport:
    """Everything the admin's run page shows, in a fixed number of queries."""
    results = list(
        run.results.filter(scored=True).select_related("case").only(
            "score", "output", "reason", "error", "model_version_id", "case__key", "case__tags", "case__position"
        )
    )
    baseline_scores = [r.score for r in results if r.model_version_id == run.baseline_id]
    candidate_scores = [r.score for r in results if r.model_version_id == run.candidate_id]
    by_case: dict[str, dict[int, BenchmarkResult]] = {}
    for result in results:
        by_case.setdefault(result.case.key, {})[result.model_version_id] = result
    pairs = [
        (key, models[run.baseline_id], models[run.candidate_id])
        for key, models in by_case.items()
        if run.baseline_id in models and run.candidate_id in models
    ]
    worse = sorted(
        (pair for pair in pairs if pair[2].score < pair[1].score), key=lambda pair: (pair[2].score - pair[1].score, pair[0])
    )[:worst]
    bins = 10
    return RunReport(
        run=run,
        summary=benchmark_run_summary(run=run),
        comparison=run.comparison,
        histogram_bins=[f"{i / bins:.1f}–{(i + 1) / bins:.1f}" for i in range(bins)],
        baseline_histogram=score_histogram(baseline_scores, bins=bins),
        candidate_histogram=score_histogram(candidate_scores, bins=bins),
        regressions=[
            RegressionLine(
                key=key, tags=tuple(candidate.case.tags or ()), baseline_score=baseline.score,
                candidate_score=candidate.score, delta=candidate.score - baseline.score,
                baseline_output=baseline.output, candidate_output=candidate.output, candidate_reason=candidate.reason,
            )
            for key, baseline, candidate in worse
        ],
        errors=sum(1 for r in results if r.error),
        chunks=[dict(chunk) for chunk in run.chunks.values("index", "status", "worker", "attempts", "heartbeat_at", "error")],
        gate=benchmark_run_gate(run=run),
    )


def benchmark_suite_jsonl(*, suite: BenchmarkSuite) -> str:
    """The suite version as JSONL, ready to import again (the export of the admin and the command)."""
    cases = [
        SuiteCase(key=c.key, messages=c.messages, reference=c.reference, scorer=c.scorer, tags=list(c.tags or []))
        for c in suite.cases.order_by("position")
    ]
    return suite_jsonl(description=suite.description, cases=cases)


def benchmark_run_counts() -> list[tuple[str, int]]:
    """(state, runs) for every state, 0 included: /metrics' genesis_benchmark_runs."""
    counts = dict(BenchmarkRun.objects.values_list("status").annotate(n=Count("id")).order_by())
    return [(state, counts.get(state, 0)) for state in BenchmarkRunStatus.values]


def benchmark_runs_since_progress(*, now: datetime | None = None) -> list[tuple[str, float]]:
    """(agent, seconds) for each agent with a running run: the longest any of its running runs has gone
    without a chunk heartbeat, a finished chunk or (for a run with neither yet) its start."""
    now = now or timezone.now()
    runs = BenchmarkRun.objects.filter(status=BenchmarkRunStatus.RUNNING).select_related("agent")
    last_chunk = {
        row["run_id"]: max(filter(None, (row["heartbeat"], row["finished"])), default=None)
        for row in BenchmarkChunk.objects.filter(run__in=runs).values("run_id").annotate(
            heartbeat=Max("heartbeat_at"), finished=Max("finished_at")
        ).order_by()
    }
    worst: dict[str, float] = {}
    for run in runs:
        last = max(filter(None, (last_chunk.get(run.pk), run.started_at or run.created_at)))
        worst[run.agent.slug] = max(worst.get(run.agent.slug, 0.0), (now - last).total_seconds())
    return sorted(worst.items())


def benchmark_runs_waiting_to_start(*, now: datetime | None = None) -> list[tuple[str, float]]:
    """(agent, seconds) for each agent with a queued run: how long its oldest queued run has waited,
    since it was queued, for a worker to claim its first chunk (the claim makes it running). Normally
    seconds, or as long as the runs queued before it keep the workers busy; a run whose chunk messages
    were never sent (broker away at enqueue time) waits here until the resume sweep sends them again."""
    now = now or timezone.now()
    rows = (
        BenchmarkRun.objects.filter(status=BenchmarkRunStatus.QUEUED)
        .values("agent__slug").annotate(queued_at=Min("created_at")).order_by("agent__slug")
    )
    return [(row["agent__slug"], max(0.0, (now - row["queued_at"]).total_seconds())) for row in rows]
