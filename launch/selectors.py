"""Reads of the launch console: one row per agent for the board, a model version's lineage, and the
facts the Go/No-Go report judges. They read across every app (this app is at the top of the
dependency order) and write nothing; the numbers come from the other apps' rows and selectors —
benchmark verdicts as the gate stored them, a running rollout's holds and guardrails as the latest
guardrail evaluation stored them (experiments.holds.stored_evaluation: no outcome is read here), money
summed from the ledger in SQL."""
# Long: the board, the agent page, the lineage and the Go/No-Go facts are built from the same reads of
# every agent's chain (Chains) and share their cells', costs' and audits' rules.

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Prefetch, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from audits.models import AuditRun, AuditStatus, Dataset
from costs import budgeting
from costs.models import Budget, CostEntry, Operation
from costs.selectors import spend_split
from experiments import selectors as experiment_selectors
from experiments.calendar import CalendarEntry
from experiments.holds import Evaluation, Hold, evaluation_holds, holds_wait, stored_evaluation, unguarded_since
from experiments.models import (
    ACTIVE_STATUSES,
    ApprovalStatus,
    EventAction,
    Experiment,
    ExperimentEvent,
    ExperimentStage,
    ExperimentStatus,
    StageApproval,
)
from genesis.aggregates import DecimalTotal
from genesis.errors import NotFound
from launch.chains import Chains
from launch.report import age_text, as_of_text, interval, percent, power_short
from models_app.benchmarks.models import BenchmarkRun, BenchmarkRunStatus, BenchmarkVerdictOverride
from models_app.benchmarks.selectors import run_approves_candidate, run_verdict_note, stored_plan, with_verdict_facts
from models_app.finetuning import rules as finetuning_rules
from models_app.finetuning.models import FineTuningJob
from models_app.registry.models import Agent, ModelKind, ModelStatus, ModelVersion
from models_app.registry.selectors import CANDIDATE_STATUSES, known_agents_text

ZERO = Decimal(0)
LEDGER_DECIMALS = Decimal("0.000001")

# The board's five tones; each state is shown with its words too, never by colour alone.
OK, WAIT, ATTENTION, BAD, IDLE = "ok", "wait", "attention", "bad", "idle"


@dataclass(frozen=True)
class Cell:
    """One state on the board: what it says, its tone, and an optional link and detail."""

    text: str
    tone: str = IDLE
    detail: str = ""
    url_name: str = ""
    url_args: tuple[Any, ...] = ()
    title: str = ""  # the long explanation, on hover

    @property
    def url(self) -> str:
        return reverse(self.url_name, args=self.url_args) if self.url_name else ""


@dataclass(frozen=True)
class NextAction:
    """What the row needs next. `action` names the board button (benchmark, rollout, request,
    approve, resume); `allowed` says whether this user may press it — when not, `who` says who may."""

    text: str
    action: str = ""
    label: str = ""  # the button's words
    allowed: bool = False
    who: str = ""
    blocked_by: str = ""
    approval_id: int | None = None
    config_version: int | None = None
    tone: str = WAIT


@dataclass
class BoardRow:
    agent: Agent
    live: ModelVersion | None
    candidate: ModelVersion | None
    audit: Cell
    job: Cell
    benchmark: Cell
    rollout: Cell
    guardrails: Cell
    spend: Decimal | None  # None: this user may not see costs (costs.view_costentry)
    next_action: NextAction
    experiment: Experiment | None = None
    can_roll_back: bool = False
    calendar: list[CalendarEntry] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)  # a running rollout's stage holds, as its latest guardrail evaluation judged them
    messages: list[Any] = field(default_factory=list)  # what this row's button just did (the board view fills it)


# --- what belongs to a candidate ------------------------------------------------------------------


def agent_candidate(*, agent: Agent) -> ModelVersion | None:
    """The version on its way to launch: the one being rolled out, else the newest fine-tuned candidate."""
    active = Experiment.objects.filter(agent=agent, status__in=ACTIVE_STATUSES).select_related("treatment").first()
    if active is not None:
        return active.treatment
    return (
        agent.versions.select_related("provider", "agent")
        .filter(kind=ModelKind.FINE_TUNED, status__in=CANDIDATE_STATUSES)
        .order_by("-created_at", "-pk")
        .first()
    )


def fine_tuning_job_of(*, version: ModelVersion) -> FineTuningJob | None:
    return (
        FineTuningJob.objects.filter(model_version=version)
        .select_related("training_file__dataset__latest_audit", "validation_file__dataset__latest_audit", "provider")
        .first()
    )


def benchmark_runs_of(*, version: ModelVersion) -> QuerySet[BenchmarkRun]:
    """The version's runs with all the lineage shows of each — its suite's agent, requester, overrides
    and verdict note — read with them: a version benchmarked ten times costs no more queries than once."""
    runs = BenchmarkRun.objects.filter(candidate=version).select_related("suite__agent", "baseline", "candidate", "requested_by")
    return with_verdict_facts(runs.prefetch_related("overrides__actor").order_by("created_at", "pk"))


def experiments_of(*, version: ModelVersion) -> QuerySet[Experiment]:
    """The version's experiments with their stages in order, and each stage's approval requests with who
    asked and who decided, read with them: a version rolled out five times costs no more queries than once."""
    approvals = StageApproval.objects.select_related("requested_by", "decided_by").order_by("requested_at")
    stages = ExperimentStage.objects.order_by("index").prefetch_related(Prefetch("approvals", queryset=approvals))
    experiments = Experiment.objects.filter(treatment=version).select_related("control", "current_stage", "started_by")
    return experiments.prefetch_related(Prefetch("stages", queryset=stages)).order_by("created_at", "pk")


def _candidate_condition(version: ModelVersion, *, job_id: int | None, run_ids: list[int], via: str = "") -> Q:
    """Ledger entries of a candidate's path to launch: its fine-tuning job, every benchmark run of
    it (both models' answers and any answer paid twice), the inference its experiments served on it
    and its storage. `via="reverses__"`: the entries that reverse one of those."""
    condition = Q(**{f"{via}agent_id": version.agent_id, f"{via}model": version.model_id,
                     f"{via}operation__in": [Operation.INFERENCE, Operation.STORAGE]})
    if job_id is not None:
        condition |= Q(**{f"{via}source_type": ContentType.objects.get_for_model(FineTuningJob), f"{via}source_id": str(job_id)})
    for run_id in run_ids:
        condition |= Q(**{f"{via}operation": Operation.BENCHMARK, f"{via}idempotency_key__startswith": f"benchmark:{run_id}:"})
    return condition


def candidates_costs(*, paths: dict[int, tuple[ModelVersion, int | None, list[int]]]) -> dict[int, dict[str, Decimal]]:
    """What the ledger holds for each candidate's path — `paths`: version id → (the version, its
    fine-tuning job's id, its benchmark runs' ids) — by operation, and `total`, plus any reversal
    of those entries; summed in SQL, every candidate in one query (a column pair per candidate)."""
    if not paths:
        return {}
    conditions: dict[int, Q] = {}  # each candidate's entries and the reversals of them
    any_entry, any_reversal = Q(), Q()
    for pk, (version, job_id, run_ids) in paths.items():
        entry = _candidate_condition(version, job_id=job_id, run_ids=run_ids)
        reversal = _candidate_condition(version, job_id=job_id, run_ids=run_ids, via="reverses__")
        conditions[pk] = entry | reversal
        any_entry |= entry
        any_reversal |= reversal
    columns: dict[str, Any] = {}  # total_<id>, entries_<id> of each candidate
    for pk, condition in conditions.items():
        columns[f"total_{pk}"] = DecimalTotal("amount_usd", filter=condition)
        columns[f"entries_{pk}"] = Count("pk", filter=condition)
    # Two queries over rows that do not overlap: the paths' own entries (each condition one an index
    # answers: costs_entry_model, costs_entry_source, the idempotency key's), then the reversals of
    # them that are not such entries themselves (read from the few reversals, by reverses' unique
    # index). One query over "an entry of a path OR the reversal of one" joined every entry to the one
    # it reverses and read the whole ledger: 0.5 s a version at a million entries.
    selections = (
        CostEntry.objects.filter(any_entry),
        CostEntry.objects.filter(reverses__isnull=False).filter(any_reversal).exclude(any_entry),
    )
    by_operation: dict[int, dict[str, Decimal]] = {pk: {} for pk in paths}
    for selection in selections:
        rows: Any = selection.values("operation").annotate(**columns).order_by("operation")
        for row in rows:
            for pk in paths:
                if row[f"entries_{pk}"]:  # an operation the path has entries of, even if they sum to 0 (a reversal)
                    operations = by_operation[pk]
                    operations[row["operation"]] = operations.get(row["operation"], ZERO) + row[f"total_{pk}"]
    return {pk: {**operations, "total": sum(operations.values(), ZERO)} for pk, operations in by_operation.items()}


def candidate_costs(*, version: ModelVersion) -> dict[str, Decimal]:
    """What the ledger holds for the candidate's path, by operation, and `total` — summed in SQL."""
    job = FineTuningJob.objects.filter(model_version=version).only("pk").first()
    run_ids = list(BenchmarkRun.objects.filter(candidate=version).values_list("pk", flat=True))
    return candidates_costs(paths={version.pk: (version, job.pk if job else None, run_ids)})[version.pk]


def money(amount: Decimal) -> str:
    """Exact decimal string for JSON (the ledger's micro-dollars)."""
    return budgeting.money_str(amount)


# --- the board ------------------------------------------------------------------------------------


def _audit_cell(job: FineTuningJob | None, *, candidate: ModelVersion | None) -> Cell:
    if candidate is None:
        return Cell("—", IDLE)  # no candidate (launched, rolled back, none yet): no candidate's data to audit
    if job is None:
        return Cell("no training job", IDLE, "the candidate was registered without a fine-tuning job here")
    dataset = job.training_file.dataset
    if dataset is None:
        return Cell("not audited", ATTENTION, f"{job.training_file.filename} is linked to no audited dataset")
    audit = dataset.latest_audit
    if audit is None:
        return Cell("not audited", ATTENTION, f"dataset #{dataset.pk} has no audit", "admin:audits_dataset_change", (dataset.pk,))
    if audit.status in (AuditStatus.QUEUED, AuditStatus.RUNNING):
        return Cell(f"auditing ({audit.progress:.0%})", WAIT, "", "admin:audits_dataset_change", (dataset.pk,))
    if audit.status == AuditStatus.FAILED:
        return Cell("audit failed", BAD, audit.error[:200], "admin:audits_dataset_change", (dataset.pk,))
    return Cell(
        "findings" if audit.has_findings else "clean", ATTENTION if audit.has_findings else OK, _audit_summary(audit),
        "admin:audits_dataset_change", (dataset.pk,),
    )


def _audit_summary(audit: AuditRun) -> str:
    return (
        f"{audit.valid} of {audit.lines} lines valid, {audit.format_error_total} format errors, "
        f"{audit.pii_total} PII, {audit.duplicates_exact} exact / {audit.duplicates_near} near duplicates"
    )


def _job_cell(*, candidate: ModelVersion | None, job: FineTuningJob | None, in_flight: list[FineTuningJob]) -> Cell:
    """The job that produced the candidate; a newer job still in flight (`in_flight`: the agent's,
    newest first) is named beside it ("next: #4 validated"), or shown alone while there is no
    candidate job to show."""
    moving = next((other for other in in_flight if job is None or other.pk != job.pk), None)
    shown = job or moving
    if shown is None:
        why = "no fine-tuning job for this agent's candidate" if candidate is not None else "no candidate, and no job in flight"
        return Cell("none", IDLE, why)
    tone = {finetuning_rules.SUCCESS: OK, finetuning_rules.FAILED: BAD, finetuning_rules.FAILED_VALIDATION: BAD,
            finetuning_rules.REFUSED: BAD, finetuning_rules.CANCELLED: IDLE}.get(shown.status, WAIT)
    detail = shown.fine_tuned_model or shown.base_model
    if job is not None and moving is not None:
        detail += f"; next: #{moving.pk} {moving.get_status_display().lower()}"
    return Cell(f"#{shown.pk} {shown.get_status_display().lower()}", tone, detail,
                "admin:models_app_finetuningjob_change", (shown.pk,))


def run_interval_text(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return ""
    return interval(comparison.get("ci_low"), comparison.get("ci_high"), alpha=comparison.get("alpha"))


def stored_gate_plan(comparison: dict[str, Any] | None) -> dict[str, Any]:
    """What the gate stored on a finished run about the suite's power: the rule it applied, the
    sample-size plan verbatim (`power` is its power at the run's size), and the plan's one-line summary
    as the run's page shows it. All None for a run decided before the planner."""
    comparison = comparison or {}
    plan = stored_plan(comparison.get("plan"))
    return {
        "rule": comparison.get("rule"),
        "plan": comparison.get("plan") if plan is not None else None,
        "power": plan.current_power if plan is not None else None,
        "plan_text": plan.summary() if plan is not None else None,
    }


def _benchmark_cell(candidate: ModelVersion | None, run: BenchmarkRun | None) -> Cell:
    """The candidate's latest run (read with with_verdict_facts, its baseline and candidate)."""
    if candidate is None:
        return Cell("—", IDLE)
    if run is None:
        return Cell("not benchmarked", ATTENTION)
    link = ("admin:models_app_benchmarkrun_change", (run.pk,))
    if not run.is_finished:
        return Cell(f"run #{run.pk} {run.get_status_display().lower()} ({run.progress_percent:.0f} %)", WAIT, "", *link)
    if run.status != BenchmarkRunStatus.COMPLETED:
        return Cell(f"run #{run.pk} {run.get_status_display().lower()}", BAD, run.error[:200], *link)
    comparison = run.comparison or {}
    note = run_verdict_note(run=run)
    tone = ATTENTION if note else {"PASS": OK, "FAIL": BAD}.get(run.verdict, ATTENTION)
    text = f"{run.verdict} {percent(comparison.get('relative_improvement'))}" + (" (a comparison)" if note else "")
    gate = stored_gate_plan(comparison)
    detail = "; ".join(part for part in (note, run_interval_text(comparison), power_short(gate["plan"])) if part)
    return Cell(text, tone, detail, *link, title=gate["plan_text"] or "")


def _user_can(user: Any, perm: str) -> bool:
    return bool(user is not None and user.is_active and user.has_perm(perm))


class _WhoMay:
    """Who may do what, for the rows of one page: each permission's holders read once, not per row."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, perm: str) -> str:
        if perm not in self._names:
            self._names[perm] = _who_may(perm)
        return self._names[perm]


def _who_may(perm: str) -> str:
    app_label, codename = perm.split(".")
    groups = list(Group.objects.filter(permissions__codename=codename, permissions__content_type__app_label=app_label)
                  .values_list("name", flat=True).order_by("name"))
    if groups:
        return "someone in " + " or ".join(f"“{name}”" for name in groups)
    users = get_user_model().objects.filter(
        Q(user_permissions__codename=codename, user_permissions__content_type__app_label=app_label) | Q(is_superuser=True),
        is_active=True,
    ).distinct()
    names = sorted(user.get_username() for user in users[:5])
    return ", ".join(names) if names else f"a user with {perm}"


_UNGUARDED_ASK = "stale: is the guardrail task running (beat, a worker)?"
_UNGUARDED_TITLE = "No guardrail evaluation for over ten minutes: nothing guards this rollout (runbook: RolloutUnguarded)."


def _guardrails_cell(experiment: Experiment, evaluation: Evaluation | None, *, now: datetime) -> Cell:
    """A running rollout's guardrails as the latest evaluation of its stage judged them, and when. A stale
    one (holds.EVALUATION_STALE_AFTER: beat, the worker or the guardrail task is down) is never shown in a
    calm tone — nor a stage the task has not judged that long after it began (holds.unguarded_since)."""
    if evaluation is None:
        unguarded = unguarded_since(experiment=experiment, now=now)
        if unguarded is not None:
            return Cell("not evaluated", ATTENTION, f"not judged for {age_text(now - unguarded)} — {_UNGUARDED_ASK}",
                        title=_UNGUARDED_TITLE)
        return Cell("not evaluated yet", WAIT, "the guardrail task judges this stage within a minute (beat)")
    states = [g.state for g in evaluation.guardrails]
    worst = next((state for state in ("breach", "warning", "no_data") if state in states), "healthy")
    tone = {"breach": BAD, "warning": ATTENTION, "no_data": WAIT, "healthy": OK}[worst]
    text = {"breach": "breach", "warning": "warning", "no_data": "waiting for data", "healthy": "healthy"}[worst]
    metrics = [g.metric for g in evaluation.guardrails if g.state == worst and worst != "healthy"]
    title = "; ".join(g.reason for g in evaluation.guardrails if g.state == worst)
    as_of = as_of_text(evaluation.at, now=now)
    if evaluation.is_stale(now):
        tone, as_of = (BAD if tone == BAD else ATTENTION), f"{as_of} — {_UNGUARDED_ASK}"
        title = f"{_UNGUARDED_TITLE} {title}"
    return Cell(text, tone, "; ".join(part for part in (", ".join(metrics), as_of) if part), title=title)


def _rollout_state(
    experiment: Experiment | None, *, chain: Chains, user: Any, who_may: _WhoMay, now: datetime
) -> tuple[Cell, Cell, NextAction | None, list[CalendarEntry], list[Hold]]:
    """The rollout and guardrail cells, for a running or paused experiment its next action, and for a
    running one its stage holds — as the latest guardrail evaluation of its stage judged them (the
    stage's time judged at `now`): the board reads no outcome."""
    if experiment is None:
        return Cell("not started", IDLE), Cell("—", IDLE), None, [], []
    stages = chain.stages.get(experiment.pk, [])
    calendar = experiment_selectors.experiment_calendar(experiment=experiment, stages=stages, now=now)
    link = ("admin:experiments_experiment_change", (experiment.pk,))
    if experiment.status == ExperimentStatus.DRAFT:
        return Cell(f"draft {experiment.key}", IDLE, "", *link), Cell("—", IDLE), None, calendar, []
    if experiment.status == ExperimentStatus.COMPLETED:
        return Cell("100 % — completed", OK, "", *link), Cell("—", IDLE), None, calendar, []
    if experiment.status == ExperimentStatus.ROLLED_BACK:
        event = chain.rollbacks.get(experiment.pk)
        return Cell("rolled back", BAD, event.reason if event else "", *link), Cell("—", IDLE), None, calendar, []
    percent = experiment.current_stage.percent if experiment.current_stage else 0
    if experiment.status == ExperimentStatus.PAUSED:
        action = NextAction("resume the paused rollout", "resume", "Resume", _user_can(user, "experiments.pause_experiment"),
                            who_may("experiments.pause_experiment"), tone=ATTENTION)
        return Cell(f"{percent} % — paused", ATTENTION, "", *link), Cell("paused", IDLE), action, calendar, []

    evaluation = stored_evaluation(experiment=experiment)
    holds = evaluation_holds(experiment=experiment, evaluation=evaluation, now=now)
    open_holds = [hold for hold in holds if not hold.cleared]
    waits = "; ".join(f"{hold.label}: {hold.detail}" for hold in open_holds)
    guard_cell = _guardrails_cell(experiment, evaluation, now=now)

    pending = chain.pending.get(experiment.pk)
    following = (next((stage for stage in stages if stage.index == experiment.current_stage.index + 1), None)
                 if experiment.current_stage else None)
    rollout = Cell(f"{percent} %", WAIT if open_holds else OK,
                   ("waits for " + ", ".join(hold.label for hold in open_holds)) if open_holds else "holds clear",
                   *link, title=waits)
    if following is None:
        return rollout, guard_cell, None, calendar, holds
    if pending is not None:
        requester = pending.requested_by.get_username() if pending.requested_by else "?"
        blocked = experiment_selectors.approval_blocker(experiment=experiment, pending=pending, user=user)
        wait = holds_wait(holds)
        action = NextAction(
            f"approve {following.percent} % {wait} (requested by {requester})" if wait
            else f"approve {following.percent} % (requested by {requester})", "approve", f"Approve {following.percent} %",
            not blocked and _user_can(user, "experiments.approve_stage"), who_may("experiments.approve_stage"),
            blocked_by=blocked or waits, approval_id=pending.pk, config_version=experiment.config_version,
            tone=WAIT if open_holds else ATTENTION,
        )
        return rollout, guard_cell, action, calendar, holds
    action = NextAction(
        f"request {following.percent} %", "request", f"Request {following.percent} %", _user_can(user, "experiments.request_stage"),
        who_may("experiments.request_stage"), blocked_by=waits, tone=ATTENTION,
    )
    return rollout, guard_cell, action, calendar, holds


def _draft_cell(draft: Experiment, *, candidate: ModelVersion, chain: Chains) -> Cell:
    """A draft as "Start rollout" will treat it (experiment_start_for_agent with the row's candidate):
    the candidate's own draft is started; another candidate's is left, and a new experiment starts."""
    agent_id = draft.agent_id
    plan = experiment_selectors.rollout_start_choice(
        drafts=[experiment for experiment in chain.experiments.get(agent_id, []) if experiment.status == ExperimentStatus.DRAFT],
        versions=[version for version in chain.candidate_versions.get(agent_id, []) if version.status != ModelStatus.ROLLING_OUT],
        candidate_model_id=candidate.model_id,
    )
    link = ("admin:experiments_experiment_change", (draft.pk,))
    if plan.draft is not None and plan.draft.pk == draft.pk:
        return Cell(f"draft {draft.key}", IDLE, "Start rollout starts this draft", *link)
    which = "an older" if draft.treatment.created_at <= candidate.created_at else "another"
    return Cell(
        "not started", IDLE,
        f"draft {draft.key} is for {which} candidate {draft.treatment.model_id} — Start rollout starts a new "
        f"experiment for {candidate.model_id}", *link,
    )


def _current_spend(*, now: datetime) -> tuple[dict[str, Decimal], str]:
    budget = Budget.objects.filter(name="default").first()
    if budget is not None:
        period = budgeting.period_containing(budget.period, timezone.localtime(now))
        label = {"monthly": "this month", "daily": "today", "total": "all time"}.get(budget.period, budget.period)
        return spend_split(budget=budget, period=period).by_agent, label
    return spend_split().by_agent, "all time"


def _pre_rollout_action(*, agent: Agent, candidate: ModelVersion | None, chain: Chains, user: Any, who_may: _WhoMay) -> NextAction:
    if candidate is None:
        if chain.jobs_in_flight.get(agent.pk):
            return NextAction("wait for the fine-tuning job", tone=WAIT)
        return NextAction("fine-tune a candidate", "finetune", "Create a fine-tuning job",
                          _user_can(user, "models_app.add_finetuningjob"), who_may("models_app.add_finetuningjob"), tone=IDLE)
    active_run = next((run for run in chain.runs.get(candidate.pk, [])
                       if run.status in (BenchmarkRunStatus.QUEUED, BenchmarkRunStatus.RUNNING)), None)
    if active_run is not None:
        # Its progress is in the benchmark cell beside: read once, so the row shows one figure.
        return NextAction(f"wait for benchmark run #{active_run.pk}", tone=WAIT)
    if candidate.status == ModelStatus.APPROVED_FOR_ROLLOUT:
        return NextAction(
            "start the rollout at the first stage", "rollout", "Start rollout", _user_can(user, "experiments.start_experiment"),
            who_may("experiments.start_experiment"), tone=ATTENTION,
        )
    if candidate.status == ModelStatus.REGISTERED:
        return NextAction(
            "benchmark the candidate against the live model", "benchmark", "Start benchmark",
            _user_can(user, "models_app.add_benchmarkrun"), who_may("models_app.add_benchmarkrun"), tone=ATTENTION,
        )
    return NextAction(f"candidate is {candidate.get_status_display().lower()}", tone=WAIT)


def sees_costs(user: Any) -> bool:
    """Spend is shown to people who may read the ledger (the cost dashboard's permission); None is
    Genesis itself (the report it sends, the command)."""
    return user is None or _user_can(user, "costs.view_costentry")


def launch_board(
    *, user: Any = None, agent: Agent | None = None, now: datetime | None = None
) -> tuple[list[BoardRow], str | None]:
    """One row per agent (or the one `agent`), and the label of the spend period — None, and no
    row's spend, for a user who may not see costs. Every agent's rows are read at once (Chains): a
    fixed number of queries however many agents and running rollouts, whose figures come from their
    latest guardrail evaluation, stored on the experiment (experiments.holds.stored_evaluation).
    Everything is judged at one moment, `now` (the present): the spend's month, each figure's age
    ("as of 23:59 UTC (40 s ago)"), the holds' stage time and the calendar's earliest starts."""
    now = now or timezone.now()
    shows_spend = sees_costs(user)
    spend, period_label = _current_spend(now=now) if shows_spend else ({}, None)
    agents = [agent] if agent is not None else list(Agent.objects.order_by("slug"))
    chain = Chains.of(agents)
    who_may = _WhoMay()
    rows = []
    for row_agent in agents:
        candidate = chain.candidate(row_agent)
        job = chain.jobs.get(candidate.pk) if candidate else None
        experiment = chain.row_experiment(row_agent, candidate=candidate)
        rollout, guardrails, action, calendar, holds = _rollout_state(experiment, chain=chain, user=user, who_may=who_may, now=now)
        if candidate is not None and experiment is not None and experiment.status == ExperimentStatus.DRAFT:
            rollout = _draft_cell(experiment, candidate=candidate, chain=chain)
        if action is None:
            action = _pre_rollout_action(agent=row_agent, candidate=candidate, chain=chain, user=user, who_may=who_may)
        runs = chain.runs.get(candidate.pk, []) if candidate else []
        rows.append(BoardRow(
            agent=row_agent, live=chain.live.get(row_agent.pk), candidate=candidate, audit=_audit_cell(job, candidate=candidate),
            job=_job_cell(candidate=candidate, job=job, in_flight=chain.jobs_in_flight.get(row_agent.pk, [])),
            benchmark=_benchmark_cell(candidate, runs[0] if runs else None),
            rollout=rollout, guardrails=guardrails, spend=spend.get(row_agent.slug, ZERO) if shows_spend else None, next_action=action,
            experiment=experiment, calendar=calendar, holds=holds,
            can_roll_back=bool(experiment and experiment.status in ACTIVE_STATUSES and _user_can(user, "experiments.rollback_experiment")),
        ))
    return rows, period_label


@dataclass(frozen=True)
class AwaitingApproval:
    """A pending stage request and, while its holds are open, when it can be approved ("after
    2026-12-08 10:00 UTC (min stage time)"); "" when it can be approved now — as the latest guardrail
    evaluation of its stage judged the holds (`as_of`: when, "" before the first)."""

    approval: StageApproval
    waits: str
    as_of: str = ""


def experiments_awaiting_approval() -> list[AwaitingApproval]:
    """Pending stage requests, oldest first, each with what its holds still wait for: the approvers'
    queue. The holds are the latest guardrail evaluation's (no outcome is read: a fixed number of
    queries however many requests wait); approving judges them afresh."""
    now = timezone.now()
    pending = (
        StageApproval.objects.filter(status=ApprovalStatus.PENDING, stage__experiment__status=ExperimentStatus.RUNNING)
        .select_related("stage__experiment__agent", "stage__experiment__treatment", "stage__experiment__control",
                        "stage__experiment__current_stage", "requested_by")
        .order_by("requested_at")
    )
    waiting = []
    for approval in pending:
        evaluation = stored_evaluation(experiment=approval.stage.experiment)
        holds = evaluation_holds(experiment=approval.stage.experiment, evaluation=evaluation, now=now)
        waiting.append(AwaitingApproval(approval, holds_wait(holds), as_of_text(evaluation.at, now=now) if evaluation else ""))
    return waiting


# --- the agent page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusStep:
    """One status a model version entered, when, by whom and why (from its simple-history rows)."""

    status: str
    label: str
    at: Any
    by: str | None
    reason: str


@dataclass
class VersionTimeline:
    version: ModelVersion
    steps: list[StatusStep]
    benchmark_runs: list[BenchmarkRun]
    experiments: list[Experiment]


@dataclass
class AgentPage:
    row: BoardRow
    spend_period: str | None
    timeline: list[VersionTimeline]


def version_status_steps(*, version: ModelVersion, history: list[Any]) -> list[StatusStep]:
    """The statuses the version went through, oldest first: each history row whose status differs from
    the row before it (edits that left the status alone are not steps)."""
    labels = dict(ModelStatus.choices)
    steps: list[StatusStep] = []
    for record in history:
        if steps and steps[-1].status == record.status:
            continue
        steps.append(StatusStep(record.status, labels.get(record.status, record.status), record.history_date,
                                _username(record.history_user), record.history_change_reason or ""))
    if not steps:  # a version saved before its history was kept: what the row itself says
        steps.append(StatusStep(version.status, labels.get(version.status, version.status), version.status_changed_at,
                                None, version.reason))
    return steps


def agent_timeline(*, agent: Agent) -> list[VersionTimeline]:
    """Every model version of the agent, newest first, with its status changes (registered → benchmarking
    → approved for rollout → rolling out → live → retired, or rejected), its benchmark runs and its
    experiments."""
    versions = list(agent.versions.select_related("provider").order_by("-created_at", "-pk"))
    history: dict[int, list[Any]] = {}
    for record in ModelVersion.history.filter(agent=agent).select_related("history_user").order_by("history_date", "history_id"):
        history.setdefault(record.id, []).append(record)
    runs: dict[int, list[BenchmarkRun]] = {}
    # suite__agent: a run is shown by its suite's name, which names the agent.
    for run in BenchmarkRun.objects.filter(candidate__agent=agent).select_related("suite__agent", "baseline").order_by("created_at", "pk"):
        runs.setdefault(run.candidate_id, []).append(run)
    experiments: dict[int, list[Experiment]] = {}
    for experiment in Experiment.objects.filter(agent=agent).select_related("current_stage").order_by("created_at", "pk"):
        experiments.setdefault(experiment.treatment_id, []).append(experiment)
    return [
        VersionTimeline(version, version_status_steps(version=version, history=history.get(version.pk, [])),
                        runs.get(version.pk, []), experiments.get(version.pk, []))
        for version in versions
    ]


def agent_page(*, agent: Agent, user: Any = None) -> AgentPage:
    """The agent's board row, and the timeline of its model versions."""
    rows, period = launch_board(user=user, agent=agent)
    return AgentPage(row=rows[0], spend_period=period, timeline=agent_timeline(agent=agent))


# --- lineage --------------------------------------------------------------------------------------


def _dataset_json(dataset: Dataset | None, *, role: str, filename: str) -> dict[str, Any]:
    if dataset is None:
        return {"role": role, "file": filename, "dataset": None, "audit": None}
    audit = dataset.latest_audit
    return {
        "role": role,
        "file": filename,
        "dataset": {"id": dataset.pk, "name": dataset.original_name, "purpose": dataset.purpose, "lines": dataset.line_count,
                    "sha256": dataset.sha256, "created_at": dataset.created_at},
        "audit": None if audit is None else {
            "id": audit.pk, "status": audit.status, "has_findings": audit.has_findings, "lines": audit.lines,
            "valid": audit.valid, "format_errors": audit.format_error_total, "pii": audit.pii_total,
            "pii_by_type": ((audit.report or {}).get("pii") or {}),
            "duplicates": {"exact": audit.duplicates_exact, "near": audit.duplicates_near},
            "difficulty": {"easy": audit.easy, "medium": audit.medium, "hard": audit.hard},
            "finished_at": audit.finished_at,
        },
    }


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def model_lineage(*, version: ModelVersion) -> dict[str, Any]:
    """The version's path in order: training and validation data with their audits, the
    fine-tuning job, every benchmark run, every experiment with its stages, approvers and any
    rollback, and what the ledger holds for it (money as exact decimal strings)."""
    job = fine_tuning_job_of(version=version)
    datasets = []
    if job is not None:
        datasets.append(_dataset_json(job.training_file.dataset, role="training", filename=job.training_file.filename))
        if job.validation_file is not None:
            datasets.append(_dataset_json(job.validation_file.dataset, role="validation", filename=job.validation_file.filename))
    costs = candidate_costs(version=version)
    experiments = list(experiments_of(version=version))
    rollbacks = experiment_selectors.rollback_events(experiments=experiments)
    return {
        "model_version": {
            "id": version.pk, "agent": version.agent.slug, "model": version.model_id, "base_model": version.base_model,
            "kind": version.kind, "status": version.status, "provider": version.provider.name, "created_at": version.created_at,
        },
        "datasets": datasets,
        "fine_tuning_job": None if job is None else {
            "id": job.pk, "provider_job_id": job.provider_job_id, "status": job.status, "base_model": job.base_model,
            "trained_tokens": job.trained_tokens, "hyperparameters": job.hyperparameters,
            "cost_usd": None if job.cost_usd is None else money(job.cost_usd),
            "estimated_cost_usd": None if job.estimated_cost_usd is None else money(job.estimated_cost_usd),
            "created_by": _username(job.created_by), "created_at": job.created_at, "finished_at": job.finished_at,
        },
        "benchmark_runs": [_benchmark_run_json(run) for run in benchmark_runs_of(version=version)],
        "experiments": [_experiment_json(experiment, rollback=rollbacks.get(experiment.pk)) for experiment in experiments],
        "costs": {
            "by_operation": {operation: money(amount) for operation, amount in costs.items() if operation != "total"},
            "total_usd": money(costs["total"]),
        },
        "total_cost_usd": money(costs["total"]),
    }


def _benchmark_run_json(run: BenchmarkRun) -> dict[str, Any]:
    comparison = run.comparison or {}
    ci95 = [comparison["ci_low"], comparison["ci_high"]] if comparison.get("ci_low") is not None and comparison.get("ci_high") is not None else None
    return {
        "id": run.pk, "status": run.status, "verdict": run.verdict or None, "suite": str(run.suite),
        "baseline": run.baseline.model_id,
        # Only a PASS against the agent's live version approves; any other verdict's note says so plainly.
        "baseline_status": comparison.get("baseline_status"), "approves": run_approves_candidate(run=run),
        "note": run_verdict_note(run=run), "n": comparison.get("n"),
        "relative_improvement": comparison.get("relative_improvement"), "ci95": ci95,
        "alpha": comparison.get("alpha"),  # the interval's level is 1 − alpha (wider on a re-run); None: 95 %
        "cost_usd": money(run.cost_usd), "requested_by": _username(run.requested_by),
        "created_at": run.created_at, "finished_at": run.finished_at,
        "overrides": [{"by": _username(o.actor), "reason": o.reason, "at": o.created_at} for o in run.overrides.all()],
    }


def _experiment_json(experiment: Experiment, *, rollback: ExperimentEvent | None) -> dict[str, Any]:
    """The experiment (read by experiments_of) with its stages, each stage's approvals, and its rollback if any."""
    return {
        "id": experiment.pk, "key": experiment.key, "status": experiment.status, "control": experiment.control.model_id,
        "started_by": _username(experiment.started_by), "started_at": experiment.started_at, "ended_at": experiment.ended_at,
        "min_stage_hours": experiment.min_stage_hours, "min_samples_per_arm": experiment.min_samples_per_arm,
        "stages": [
            {
                "percent": stage.percent, "status": stage.status, "started_at": stage.started_at, "ended_at": stage.ended_at,
                "approvals": [
                    {"status": a.status, "requested_by": _username(a.requested_by), "requested_at": a.requested_at,
                     "approved_by": _username(a.decided_by) if a.status == ApprovalStatus.APPROVED else None,
                     "decided_at": a.decided_at, "note": a.note, "void_reason": a.void_reason}
                    for a in stage.approvals.all()
                ],
            }
            for stage in experiment.stages.all()
        ],
        "rollback": None if rollback is None else {
            "at": rollback.at, "by": _username(rollback.actor) or "genesis", "reason": rollback.reason, "reason_code": rollback.reason_code,
        },
    }


# --- the Go/No-Go report's facts --------------------------------------------------------------------


def launch_facts(*, agent: Agent, with_costs: bool = True) -> dict[str, Any]:
    """Everything the Go/No-Go report says about one agent, as plain data (launch/report.py judges
    and renders it). Without `with_costs` (a reader who may not see costs) no money is in it."""
    return _launch_facts_of([agent], with_costs=with_costs)[0]


def _decisive_runs(candidates: list[ModelVersion]) -> dict[int, BenchmarkRun]:
    """Each candidate's run that decided it (its newest completed run against the live version), else
    its newest completed run — a comparison, which the report then names as no approval."""
    completed = with_verdict_facts(BenchmarkRun.objects.filter(candidate__in=candidates, status=BenchmarkRunStatus.COMPLETED)
                                   .select_related("suite__agent", "baseline", "candidate")).order_by("-finished_at", "-pk")
    newest: dict[int, BenchmarkRun] = {}
    for run in completed.exclude(comparison__baseline_live=False):
        newest.setdefault(run.candidate_id, run)
    for run in completed:
        newest.setdefault(run.candidate_id, run)  # only where no run against the live version was found
    return newest


def _launch_facts_of(agents: list[Agent], *, with_costs: bool) -> list[dict[str, Any]]:
    """launch_facts of each agent, each kind of row read once for all of them (Chains); a running
    rollout's guardrails and lift as its latest guardrail evaluation stored them (stored_evaluation)."""
    now = timezone.now()
    chain = Chains.of(agents)
    candidates = {agent.pk: chain.candidate(agent) for agent in agents}
    present = [candidate for candidate in candidates.values() if candidate is not None]
    decisive = _decisive_runs(present)
    overridden = set(BenchmarkVerdictOverride.objects.filter(run__in=list(decisive.values())).values_list("run_id", flat=True))
    experiments = {
        candidate.pk: next((experiment for experiment in chain.experiments.get(candidate.agent_id, [])
                            if experiment.treatment_id == candidate.pk), None)
        for candidate in present
    }
    overrides = _verdict_override_starts([experiment for experiment in experiments.values()
                                          if experiment is not None and experiment.verdict_override_reason])
    costs = candidates_costs(paths={
        candidate.pk: (candidate, chain.jobs[candidate.pk].pk if candidate.pk in chain.jobs else None,
                       [run.pk for run in chain.runs.get(candidate.pk, [])])
        for candidate in present
    }) if with_costs else {}
    entries = []
    for agent in agents:
        candidate = candidates[agent.pk]
        live = chain.live.get(agent.pk)
        facts: dict[str, Any] = {"agent": agent.slug, "live": live.model_id if live else None,
                                 "candidate": candidate.model_id if candidate else None}
        entries.append(facts)
        if candidate is None:
            continue
        facts["candidate_status"] = candidate.status
        run = decisive.get(candidate.pk)
        facts["benchmark"] = None if run is None else _benchmark_facts(run, overridden=run.pk in overridden, with_costs=with_costs)
        job = chain.jobs.get(candidate.pk)
        audit = None
        if job is not None and job.training_file.dataset is not None:
            audit = _dataset_json(job.training_file.dataset, role="training", filename=job.training_file.filename)
        facts["training_data"] = {"job": job.pk if job else None, "file": job.training_file.filename if job else None, "audit": audit}
        experiment = experiments[candidate.pk]
        if experiment is None:
            facts["rollout"] = None
        else:
            rollout: dict[str, Any] = {
                "experiment": experiment.key, "status": experiment.status,
                "stage_percent": experiment.current_stage.percent if experiment.current_stage else None,
                "verdict_override": _verdict_override(experiment, start=overrides.get(experiment.pk)),
            }
            if experiment.status == ExperimentStatus.RUNNING:
                # None (guardrails, lift, time) until the guardrail task has judged the current stage.
                evaluation = stored_evaluation(experiment=experiment)
                rollout["guardrails"] = ([{"metric": g.metric, "state": g.state} for g in evaluation.guardrails]
                                         if evaluation else None)
                rollout["relative_lift"] = evaluation.figures.relative_lift if evaluation else None
                rollout["evaluated_at"] = evaluation.at if evaluation else None
                # Also stale: a stage not judged ten minutes after it began (holds.unguarded_since).
                rollout["evaluation_stale"] = evaluation.is_stale(now) if evaluation else unguarded_since(experiment=experiment, now=now) is not None
            facts["rollout"] = rollout
        if with_costs:
            facts["cost_usd"] = money(costs[candidate.pk]["total"])
    return entries


def _benchmark_facts(run: BenchmarkRun, *, overridden: bool, with_costs: bool) -> dict[str, Any]:
    comparison = run.comparison or {}
    return {
        "run": run.pk, "verdict": run.verdict, "suite": str(run.suite), "suite_cases": run.suite.case_count,
        "approves": run_approves_candidate(run=run), "note": run_verdict_note(run=run),
        "n": comparison.get("n"), "relative_improvement": comparison.get("relative_improvement"),
        "ci_low": comparison.get("ci_low"), "ci_high": comparison.get("ci_high"), "alpha": comparison.get("alpha"),
        "threshold": comparison.get("threshold"), "more_cases_needed": comparison.get("more_cases_needed"),
        # The gate's plan as the run stored it (rule, power at the planned improvement, cases needed);
        # None for a run decided before the planner — nothing is computed here in its place.
        **stored_gate_plan(comparison),
        "per_tag": comparison.get("per_tag") or [], "reasons": comparison.get("reasons") or [],
        "overridden": overridden,
        **({"cost_usd": money(run.cost_usd)} if with_costs else {}),
    }


def _verdict_override_starts(experiments: list[Experiment]) -> dict[int, ExperimentEvent]:
    """The entry of each experiment's start without a PASS verdict (the newest, were there two)."""
    starts: dict[int, ExperimentEvent] = {}
    for event in (ExperimentEvent.objects.filter(experiment__in=experiments, action=EventAction.START, reason_code="verdict_override")
                  .select_related("actor").order_by("-at", "-id")):
        starts.setdefault(event.experiment_id, event)
    return starts


def _verdict_override(experiment: Experiment, *, start: ExperimentEvent | None) -> dict[str, Any] | None:
    """Who started the rollout without a PASS verdict, when and why (`rollout_models --start
    --override-reason`, the experiment page's override field; `start`: the start's entry); None for a
    rollout started on a PASS."""
    if not experiment.verdict_override_reason:
        return None
    return {"by": _username(start.actor if start else experiment.started_by) or "genesis",
            "reason": experiment.verdict_override_reason, "at": start.at if start else experiment.started_at}


def launch_report_facts(*, agent_slug: str | None = None, user: Any = None) -> list[dict[str, Any]]:
    """The report's facts for every agent, or for `agent_slug` alone (NotFound when there is no such
    agent: a report of nobody would read as "all GO"), as `user` may read them (None: Genesis — the
    command and the sent report — sees costs)."""
    agents = Agent.objects.order_by("slug")
    if agent_slug is not None:
        agents = agents.filter(slug=agent_slug)
        if not agents.exists():
            raise NotFound(f"unknown agent '{agent_slug}'; known agents: {known_agents_text()}")
    return _launch_facts_of(list(agents), with_costs=sees_costs(user))
