"""Reads of online evaluation: per-user, per-stage aggregates (in SQL), results, guardrail states, holds.

Every metric starts from one SQL query over the experiment's outcome events: an inner GROUP BY per (stage,
arm, user) — each user's outcomes, successes, summed latency, quality and cost, and the outcomes another
model than the arm's served — and an outer GROUP BY per (stage, arm) of those per-user numbers and their
squares and products, the sufficient statistics of experiments/stats.RatioSummary — and, in the same
statement, a join of the per-user rows on the user per pair of cells that share users (a user returning in
a later stage), the stats.SharedUsers the variance is clustered by. The stage of an outcome is the stage
whose window [started_at, ended_at) holds its occurred_at. The statistics in experiments/stats.py work from
those aggregates, stage by stage (stratified). No Python loop over events. Latency percentiles
(descriptive, over all the arm's outcomes) come from `percentile_cont` on PostgreSQL; on SQLite (the
embedded dev mode), which has none, from the sorted latencies in Python."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Aggregate, Count, FloatField, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from costs import budgeting
from experiments import stats
from experiments.calendar import CalendarEntry, PlannedStage, rollout_calendar
from experiments.models import (
    ACTIVE_STATUSES,
    ApprovalStatus,
    EventAction,
    Experiment,
    ExperimentEvent,
    ExperimentStage,
    ExperimentStatus,
    OutcomeEvent,
    StageApproval,
    Variant,
)
from genesis.errors import NotFound
from models_app.registry.models import Agent, ModelStatus, ModelVersion
from models_app.registry.selectors import candidate_versions

ARMS = (Variant.CONTROL.value, Variant.TREATMENT.value)
# An outcome's cost is kept to eight decimals (OutcomeEvent.cost_usd): sums and means are shown to as many.
COST_PLACES = 8
METRICS = ("success_rate", "latency_ms", "quality", "cost_per_request")
# The guardrails judge latency and cost on real requests, not capped ones: at the 10 % stage the
# candidate is a tenth of the pooled requests, so a cap at their 99th percentile would cut away a
# candidate hanging on up to ~10 % of its requests (5 % at 30 s: +265 % real, +12 % capped).
GUARDED_AS = {"latency_ms": "latency_ms_uncapped", "cost_per_request": "cost_per_request_uncapped"}
ANALYSED = (*METRICS, *GUARDED_AS.values())
# Quality and cost are optional in an outcome: an agent that never reports them cannot hold a stage
# on them forever. A metric with no observation at all in either arm is "not_reported".
OPTIONAL_METRICS = ("quality", "cost_per_request")


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: percentile_cont(f) WITHIN GROUP (ORDER BY x)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass(frozen=True)
class ArmCell:
    """One arm in one stage: users, outcomes, each metric's per-user ratio statistics (latency and
    cost capped: CAPPED_METRICS), and the real, uncapped totals of cost and latency."""

    users: int
    outcomes: int
    metrics: dict[str, stats.RatioSummary]
    cost_total: Decimal
    latency_total: float = 0.0
    # Outcomes a model other than the arm's served (a fallback, a client that does not route): they
    # count in the arm all the same (intention to treat, experiments/outcomes.py).
    served_other: int = 0

    def summary(self, metric: str) -> stats.RatioSummary:
        return self.metrics[metric]


EMPTY_CELL = ArmCell(users=0, outcomes=0, metrics={metric: stats.EMPTY for metric in ANALYSED}, cost_total=Decimal(0))


@dataclass(frozen=True)
class StageCells:
    index: int
    percent: int
    started_at: datetime
    control: ArmCell
    treatment: ArmCell

    def arm(self, variant: str) -> ArmCell:
        return self.control if variant == Variant.CONTROL else self.treatment


@dataclass(frozen=True)
class ArmTotals:
    """An arm over every analysed stage, for display: outcomes, users (a user active in two stages
    counts in each), and the raw (unstratified) means."""

    users: int
    outcomes: int
    successes: float
    quality_n: int
    quality_sum: float
    latency_sum: float
    cost_n: int
    cost_total: Decimal
    latency_p50: float | None
    latency_p95: float | None
    # Of the arm's outcomes, those a model other than the arm's served (as reported), and their share.
    served_other_model: int = 0
    served_other_model_rate: float | None = None


@dataclass(frozen=True)
class ExperimentMetrics:
    stages: list[StageCells]  # the stages that have started, in order: the strata
    arms: dict[str, ArmTotals]
    stage_percent: int | None
    stage_started_at: datetime | None
    srm_p: float | None  # anytime-valid p of the current stage's split; None outside a stage with control
    srm_threshold: float  # where the current test pauses: its part of the stage's share of the false-pause budget
    srm_test: int  # which SRM test of the current stage runs: 1 + the resumes in the stage (stages_with_resumes)
    # Per metric, the users two (stage, arm) cells share: a user returning in a later stage, or
    # seen in both arms; the statistics cluster the variance by user over them.
    shared: dict[str, list[stats.SharedUsers]] = field(default_factory=dict)
    # Per capped metric (CAPPED_METRICS), the value each outcome was capped at; None without data.
    caps: dict[str, float | None] = field(default_factory=dict)
    # Which guardrail segment of the rollout runs: 1 + the resumes so far in any stage. A resume
    # restarts the current stage's window (services._resume; earlier stages' data stay) and with it the
    # sequence every guardrail follows, so each resume is a fresh chance of a false rollback;
    # stats.guardrail_segment_alpha gives the k-th segment alpha/(ζ(3)·k³). Counted over the rollout,
    # not per stage as srm_test is: the guardrails judge every stage at once.
    guardrail_segment: int = 1
    percentiles_read: bool = False  # the arms' latency p50/p95 (include_percentiles); None in them otherwise

    @property
    def current(self) -> StageCells | None:
        return self.stages[-1] if self.stages and self.stage_started_at else None

    @property
    def srm_flagged(self) -> bool:
        return self.srm_p is not None and self.srm_p < self.srm_threshold

    @property
    def srm_rule(self) -> str:
        """Which test this is and where it pauses, as the hold and the pause reason say it."""
        resumes = self.srm_test - 1
        after = f", after {resumes} resume{'s' if resumes > 1 else ''}" if resumes else ""
        return f"test {self.srm_test} of this stage{after}: pauses below {stats.format_number(self.srm_threshold)}"

    def strata(self, metric: str) -> list[stats.Stratum]:
        shared = self.shared.get(metric, [])
        return [
            stats.Stratum(stage.control.summary(metric), stage.treatment.summary(metric),
                          tuple(pair for pair in shared if pair.second[0] == position))
            for position, stage in enumerate(self.stages)
        ]

    def arm_users(self, variant: str) -> int:
        return sum(stage.arm(variant).users for stage in self.stages)

    @property
    def stage_users_control(self) -> int:
        return self.current.control.users if self.current else 0

    @property
    def stage_users_treatment(self) -> int:
        return self.current.treatment.users if self.current else 0


def get_experiment(*, key: str) -> Experiment:
    experiment = (
        Experiment.objects.select_related("agent", "control__provider", "treatment__provider", "current_stage", "started_by")
        .filter(key=key)
        .first()
    )
    if experiment is None:
        raise NotFound(f"experiment '{key}' does not exist")
    return experiment


def experiment_for_agent(*, agent_slug: str) -> Experiment | None:
    """The agent's experiment people act on: its running or paused one, else its newest draft, else
    its newest finished one."""
    experiments = Experiment.objects.select_related(
        "agent", "control__provider", "treatment__provider", "current_stage", "started_by"
    ).filter(agent__slug=agent_slug)
    return (
        experiments.filter(status__in=ACTIVE_STATUSES).first()
        or experiments.filter(status="draft").order_by("-created_at").first()
        or experiments.order_by("-created_at").first()
    )


@dataclass(frozen=True)
class RolloutStart:
    """What starting an agent's rollout does (experiments.services.experiment_start_for_agent): start
    `draft`, or else create and start an experiment for `treatment`. `other_draft` is the agent's
    newest draft when it is for another candidate and so is left as it is; nothing to start leaves
    both `draft` and `treatment` None."""

    draft: Experiment | None
    treatment: ModelVersion | None
    other_draft: Experiment | None


def rollout_start_plan(*, agent: Agent, candidate_model_id: str = "") -> RolloutStart:
    """The candidate named, or else the agent's newest candidate (the one the launch board shows, so
    the board's button and `rollout_models --start` do the same): its own draft, or else a new
    experiment for it; another candidate's draft is left as it is. With no candidate at all, the
    agent's newest draft (its start then says what stops it)."""
    drafts = Experiment.objects.filter(agent=agent, status=ExperimentStatus.DRAFT).select_related("treatment").order_by("-created_at")
    versions = candidate_versions(agent=agent).exclude(status=ModelStatus.ROLLING_OUT)
    return rollout_start_choice(drafts=list(drafts), versions=list(versions), candidate_model_id=candidate_model_id)


def rollout_start_choice(*, drafts: list[Experiment], versions: list[ModelVersion], candidate_model_id: str = "") -> RolloutStart:
    """rollout_start_plan's rule over the agent's drafts and candidates not rolling out, newest first."""
    newest_draft = drafts[0] if drafts else None
    if not candidate_model_id:
        if not versions:
            return RolloutStart(draft=newest_draft, treatment=newest_draft.treatment if newest_draft else None, other_draft=None)
        candidate_model_id = versions[0].model_id
    draft = next((draft for draft in drafts if draft.treatment.model_id == candidate_model_id), None)
    if draft is not None:
        return RolloutStart(draft=draft, treatment=draft.treatment, other_draft=None)
    treatment = next((version for version in versions if version.model_id == candidate_model_id), None)
    return RolloutStart(draft=None, treatment=treatment, other_draft=newest_draft)


# The inner query's per-user columns, and the outer query's sums of them: (column, expression).
# lat and c are the real totals (shown as mean latency and cost per request, and judged by the
# guardrails: GUARDED_AS); the comparisons use lat_capped and c_capped, each request capped at the
# pooled stats.CAP_PERCENTILE.
_PER_USER_COLUMNS = (
    ("n", "COUNT(*)"),
    ("succ", "SUM(CASE WHEN success THEN 1 ELSE 0 END)"),
    ("lat", "SUM(latency_ms)"),
    ("lat_capped", "SUM(CASE WHEN latency_ms > lat_cap THEN lat_cap ELSE latency_ms END)"),
    ("q_n", "COUNT(quality)"),
    ("q", "COALESCE(SUM(quality), 0)"),
    ("c_n", "COUNT(cost_usd)"),
    ("c", "COALESCE(SUM(cost_usd), 0)"),
    ("c_capped", "COALESCE(SUM(CASE WHEN cost_usd > c_cap THEN c_cap ELSE cost_usd END), 0)"),
    ("served_other", "SUM(other_model)"),
)
# metric → (numerator column, denominator column) of its per-user ratio
_RATIOS = {"success_rate": ("succ", "n"), "latency_ms": ("lat_capped", "n"), "quality": ("q", "q_n"),
           "cost_per_request": ("c_capped", "c_n"), "latency_ms_uncapped": ("lat", "n"), "cost_per_request_uncapped": ("c", "c_n")}
CAPPED_METRICS = {"latency_ms": "lat_cap", "cost_per_request": "c_cap"}  # metric → the column of its cap


def _products() -> list[tuple[str, str, str]]:
    """(column name, first cell's column, second cell's column) of every product a metric needs:
    numerator·numerator, numerator·denominator, denominator·numerator, denominator·denominator."""
    products: dict[str, tuple[str, str]] = {}
    for numerator, denominator in _RATIOS.values():
        for first in (numerator, denominator):
            for second in (numerator, denominator):
                products.setdefault(f"{first}__{second}", (first, second))
    return [(name, first, second) for name, (first, second) in products.items()]


def _cap_sql(column: str, count: str) -> str:
    """stats.pooled_cap of a column over both arms' analysed outcomes (NULL without any), in SQL that
    PostgreSQL and SQLite both run; `count` is the column of `counts` that counts its values. Counted
    from the top (OFFSET n − rank = (100 − p)·n / 100), so PostgreSQL keeps the top 1 % in a bounded
    heap instead of sorting all (bench/results measures it)."""
    return (f"(SELECT {column} FROM analysed WHERE stage IS NOT NULL AND {column} IS NOT NULL ORDER BY {column} DESC"
            f" LIMIT 1 OFFSET (SELECT {100 - stats.CAP_PERCENTILE} * {count} / 100 FROM counts))")


def _per_user_sql(windows: int) -> str:
    """One statement: the pooled caps of latency and cost, the per-(stage, arm, user) sums (latency
    and cost also capped), then (1) per (stage, arm) cell their sums, squares and products — the
    RatioSummary of each metric — and (2) per pair of cells that share users (a user returning in a
    later stage, or in the other arm) the sums over those users of the products of their two cells'
    columns — the stats.SharedUsers of each metric. A cell's row names itself as both cells."""
    stage_case = " ".join(f"WHEN occurred_at >= %s AND occurred_at < %s THEN {index}" for index in range(windows))
    per_user = ", ".join(f"{expression} AS {name}" for name, expression in _PER_USER_COLUMNS)
    columns = [name for name, _ in _PER_USER_COLUMNS]
    products = _products()
    per_cell = ", ".join(
        ["COUNT(*) AS users"] + [f"SUM({name}) AS {name}" for name in columns]
        + [f"SUM({first} * {second}) AS {name}" for name, first, second in products]
        + [f"(SELECT {cap} FROM caps) AS {cap}" for cap in CAPPED_METRICS.values()]
    )
    per_pair = ", ".join(
        ["COUNT(*)"] + ["NULL" for _ in columns]
        + [f"SUM(a.{first} * b.{second})" for _, first, second in products] + ["NULL", "NULL"]
    )
    return (
        f"WITH analysed AS NOT MATERIALIZED ("  # each use rescans: 1 M rows written to a CTE cost 1.5 s
        f" SELECT CASE {stage_case} END AS stage, variant, user_id, success, latency_ms, quality, cost_usd,"
        f" CASE WHEN model = (CASE WHEN variant = %s THEN %s ELSE %s END) THEN 0 ELSE 1 END AS other_model"
        f" FROM {OutcomeEvent._meta.db_table}"
        f" WHERE experiment_id = %s AND variant IN (%s, %s) AND occurred_at >= %s"
        # Both caps' counts in one pass over the outcomes, not one each.
        f"), counts AS MATERIALIZED (SELECT COUNT(latency_ms) AS lat_n, COUNT(cost_usd) AS c_n FROM analysed WHERE stage IS NOT NULL"
        f"), caps AS (SELECT {_cap_sql('latency_ms', 'lat_n')} AS lat_cap, {_cap_sql('cost_usd', 'c_n')} AS c_cap"
        f"), per_user AS ("
        f" SELECT stage, variant, user_id, {per_user}"
        f" FROM analysed CROSS JOIN caps WHERE stage IS NOT NULL"
        f" GROUP BY stage, variant, user_id"
        f"), shared_users AS ("
        f" SELECT * FROM per_user WHERE user_id IN (SELECT user_id FROM per_user GROUP BY user_id HAVING COUNT(*) > 1)"
        f") SELECT stage, variant, stage AS stage_b, variant AS variant_b, {per_cell}"
        f" FROM per_user GROUP BY stage, variant"
        f" UNION ALL"
        f" SELECT a.stage, a.variant, b.stage, b.variant, {per_pair}"
        f" FROM shared_users AS a JOIN shared_users AS b ON a.user_id = b.user_id"
        f" AND (a.stage < b.stage OR (a.stage = b.stage AND a.variant < b.variant))"
        f" GROUP BY a.stage, a.variant, b.stage, b.variant"
    )


def _ratio(row: dict[str, Any], numerator: str, denominator: str) -> stats.RatioSummary:
    return stats.RatioSummary(
        users=int(row["users"]),
        numerator_sum=float(row[numerator] or 0), numerator_sum_squares=float(row[f"{numerator}__{numerator}"] or 0),
        denominator_sum=float(row[denominator] or 0), denominator_sum_squares=float(row[f"{denominator}__{denominator}"] or 0),
        cross_sum=float(row[f"{numerator}__{denominator}"] or 0),
    )


def _shared(row: dict[str, Any], numerator: str, denominator: str) -> stats.SharedUsers:
    return stats.SharedUsers(
        first=(int(row["stage"]), row["variant"]), second=(int(row["stage_b"]), row["variant_b"]), users=int(row["users"]),
        numerator_products=float(row[f"{numerator}__{numerator}"] or 0),
        numerator_denominator=float(row[f"{numerator}__{denominator}"] or 0),
        denominator_numerator=float(row[f"{denominator}__{numerator}"] or 0),
        denominator_products=float(row[f"{denominator}__{denominator}"] or 0),
    )


def _cells_by_stage(
    *, experiment: Experiment, stages: list[ExperimentStage]
) -> tuple[dict[tuple[int, str], ArmCell], dict[str, list[stats.SharedUsers]], dict[str, float | None]]:
    """Each (stage position, arm) cell, per metric the users shared by two cells, and the caps."""
    shared: dict[str, list[stats.SharedUsers]] = {metric: [] for metric in ANALYSED}
    caps: dict[str, float | None] = dict.fromkeys(CAPPED_METRICS)
    if not stages:
        return {}, shared, caps
    far_future = timezone.now() + timedelta(days=36_500)
    params: list[Any] = []
    for stage in stages:
        params += [stage.started_at, stage.ended_at or far_future]
    params += [Variant.CONTROL.value, experiment.control.model_id, experiment.treatment.model_id]  # other_model
    params += [experiment.pk, *ARMS, stages[0].started_at]
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # No JIT (compiling was 2.4-3.3 s of a 3.3 s query: bench/results) and no nested loops: with statistics older
            # than the experiment the planner paired every user with every user (soak test: 0.8 s at 3 500 outcomes, growing
            # as users squared); hashing is one pass. Per transaction: PgBouncer refuses them as connection parameters.
            cursor.execute("SELECT set_config('jit', 'off', true), set_config('enable_nestloop', 'off', true)")
        cursor.execute(_per_user_sql(len(stages)), params)
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, values)) for values in cursor.fetchall()]
    cells = {}
    for row in rows:
        if (row["stage"], row["variant"]) != (row["stage_b"], row["variant_b"]):
            for metric, (numerator, denominator) in _RATIOS.items():
                shared[metric].append(_shared(row, numerator, denominator))
            continue
        cells[(int(row["stage"]), row["variant"])] = ArmCell(
            users=int(row["users"]),
            outcomes=int(row["n"] or 0),
            metrics={metric: _ratio(row, numerator, denominator) for metric, (numerator, denominator) in _RATIOS.items()},
            cost_total=Decimal(str(row["c"] or 0)),
            latency_total=float(row["lat"] or 0),
            served_other=int(row["served_other"] or 0),
        )
        caps = {metric: None if row[column] is None else float(row[column]) for metric, column in CAPPED_METRICS.items()}
    return cells, shared, caps


def experiment_metrics(*, experiment: Experiment, include_percentiles: bool = False) -> ExperimentMetrics:
    """Per-stage, per-arm, per-user aggregates of the experiment's outcomes in one SQL query (plus
    the latency percentiles when asked: one query on PostgreSQL, one per arm on SQLite)."""
    started = [stage for stage in stages_with_resumes(experiment.stages.order_by("index")) if stage.started_at is not None]
    cells, shared, caps = _cells_by_stage(experiment=experiment, stages=started)
    stage_cells = [
        StageCells(index=stage.index, percent=stage.percent, started_at=stage.started_at,  # type: ignore[arg-type]
                   control=cells.get((position, Variant.CONTROL), EMPTY_CELL),
                   treatment=cells.get((position, Variant.TREATMENT), EMPTY_CELL))
        for position, stage in enumerate(started)
    ]
    percentiles = _latency_percentiles(experiment=experiment) if include_percentiles else {}
    arms = {}
    for arm in ARMS:
        arm_cells = [stage.arm(arm) for stage in stage_cells]
        outcomes = sum(cell.outcomes for cell in arm_cells)
        served_other = sum(cell.served_other for cell in arm_cells)
        arms[arm] = ArmTotals(
            users=sum(cell.users for cell in arm_cells),
            outcomes=outcomes,
            successes=sum(cell.metrics["success_rate"].numerator_sum for cell in arm_cells),
            quality_n=round(sum(cell.metrics["quality"].denominator_sum for cell in arm_cells)),
            quality_sum=sum(cell.metrics["quality"].numerator_sum for cell in arm_cells),
            latency_sum=sum(cell.latency_total for cell in arm_cells),
            cost_n=round(sum(cell.metrics["cost_per_request"].denominator_sum for cell in arm_cells)),
            cost_total=sum((cell.cost_total for cell in arm_cells), Decimal(0)),
            latency_p50=percentiles.get(arm, (None, None))[0],
            latency_p95=percentiles.get(arm, (None, None))[1],
            served_other_model=served_other,
            served_other_model_rate=served_other / outcomes if outcomes else None,
        )
    stage = experiment.current_stage
    current = stage_cells[-1] if stage is not None and stage_cells and stage_cells[-1].index == stage.index else None
    srm_p, srm_test = None, 1
    if current is not None and 0 < current.percent < 100:
        srm_test = 1 + started[-1].resumes  # type: ignore[attr-defined]  # the current stage, annotated by stages_with_resumes
        fraction = current.percent / 100
        srm_p = stats.srm_p_value(
            observed=[current.control.users, current.treatment.users], expected_fractions=[1 - fraction, fraction]
        )
    return ExperimentMetrics(
        stages=stage_cells,
        arms=arms,
        stage_percent=stage.percent if stage else None,
        stage_started_at=stage.started_at if stage else None,
        srm_p=srm_p,
        srm_threshold=stats.srm_threshold(
            rollout_alpha=settings.GENESIS.ab_testing.srm_alpha, stage_plan=experiment.stage_plan, test=srm_test
        ),
        srm_test=srm_test,
        shared=shared,
        caps=caps, percentiles_read=include_percentiles,
        guardrail_segment=1 + sum(stage.resumes for stage in started),  # type: ignore[attr-defined]  # stages_with_resumes
    )


def stages_with_resumes(stages: QuerySet[ExperimentStage]) -> QuerySet[ExperimentStage]:
    """`stages` annotated with `resumes`: how many times each was resumed. Which SRM test of a stage
    runs is 1 + its resumes: a resume restarts the stage's window and with it the test, whatever the
    pause was for (services._resume), so every resume starts a new one, which stats.srm_threshold gives
    a smaller part of the stage's share. A resume's audit entry names the stage by its percent, unique
    in a strictly increasing plan. Counted in the query that reads the stages (results and metrics
    read them anyway), not in one of its own."""
    resumes = (
        ExperimentEvent.objects.filter(experiment_id=OuterRef("experiment_id"), action=EventAction.RESUME)
        .annotate(resumed_percent=Cast(KeyTextTransform("stage_percent", "after"), IntegerField()))
        .filter(resumed_percent=OuterRef("percent"))
        .order_by().values("experiment_id").annotate(n=Count("pk")).values("n")
    )
    return stages.annotate(resumes=Coalesce(Subquery(resumes, output_field=IntegerField()), Value(0)))


def _latency_percentiles(*, experiment: Experiment) -> dict[str, tuple[float | None, float | None]]:
    """Each arm's latency p50 and p95 over its outcomes (descriptive): one query on PostgreSQL, one per arm on SQLite."""
    outcomes = OutcomeEvent.objects.filter(experiment=experiment, variant__in=ARMS)
    if connection.vendor == "postgresql":
        rows = outcomes.values("variant").order_by("variant").annotate(
            p50=PercentileCont("latency_ms", fraction=0.50), p95=PercentileCont("latency_ms", fraction=0.95)
        )
        return {row["variant"]: (row["p50"], row["p95"]) for row in rows}
    # SQLite: linear interpolation between order statistics, as percentile_cont does.
    found = {}
    for arm in ARMS:
        values = list(outcomes.filter(variant=arm).order_by("latency_ms").values_list("latency_ms", flat=True))
        found[arm] = (_percentile_cont(values, 0.50), _percentile_cont(values, 0.95))
    return found


def _percentile_cont(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


# --- guardrails -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailState:
    metric: str
    state: str  # no_data | not_reported | healthy | warning | breach
    on_violation: str
    estimate: float | None
    interval: tuple[float, float] | None
    reason: str
    rule: str  # what the decision means (stats.guardrail_rule_text)
    alpha: float  # the rule's level over the whole rollout, after the Bonferroni share
    # The level the current segment (ExperimentMetrics.guardrail_segment) judges at: alpha/(ζ(3)·k³).
    segment_alpha: float

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval else None
        return data


def _unreported_reason(metric: str, *, rule: dict[str, Any], control_reports: float, treatment_reports: float) -> str:
    """Why an optional metric is not guarded, or "" when it is. An agent may report quality or cost
    for no arm, or — when only one model returns it — for one arm only. Neither will ever fill in,
    so waiting for them would hold the stage forever. A warning rule is then shown as not reported;
    a breach rule (someone chose to roll back on it) keeps waiting for both arms."""
    if metric not in OPTIONAL_METRICS:
        return ""
    name = metric.replace("_", " ")
    if control_reports == 0 and treatment_reports == 0:
        return f"{metric}: the agent reports no {name} for this experiment; not guarded"
    if rule["on_violation"] == "warning" and min(control_reports, treatment_reports) == 0:
        reporting = "control" if control_reports else "treatment"
        return f"{metric}: only the {reporting} arm reports {name}, so the arms cannot be compared; not guarded"
    return ""


def guardrail_alphas(*, rules: list[dict[str, Any]]) -> list[float]:
    """The level each rule is tested at: the rules that roll back share guardrail_alpha (Bonferroni),
    so a candidate within every tolerance is rolled back by any of them with probability at most
    guardrail_alpha; a warning rule, whose confident verdict only asks for a review, gets the whole
    of it. (No level bounds the holds: an estimate beyond a tolerance holds the stage without a test.)"""
    alpha = settings.GENESIS.ab_testing.guardrail_alpha
    breach_rules = sum(1 for rule in rules if rule["on_violation"] == "breach") or 1
    return [alpha / breach_rules if rule["on_violation"] == "breach" else alpha for rule in rules]


def experiment_guardrail_results(*, experiment: Experiment, metrics: ExperimentMetrics) -> list[GuardrailState]:
    """Each of the experiment's guardrail rules judged by the sequential test of experiments/stats.py,
    on every stage so far (stratified)."""
    results = []
    for rule, alpha in zip(experiment.guardrails, guardrail_alphas(rules=experiment.guardrails)):
        metric = rule["metric"]
        segment_alpha = stats.guardrail_segment_alpha(alpha=alpha, segment=metrics.guardrail_segment)
        strata = metrics.strata(GUARDED_AS.get(metric, metric))
        rule_text = stats.guardrail_rule_text(
            metric=metric, harmful_direction=rule["harmful_direction"], threshold=rule["threshold"],
            threshold_kind=rule["threshold_kind"], on_violation=rule["on_violation"], alpha=alpha,
        )
        unreported = _unreported_reason(
            metric, rule=rule,
            control_reports=sum(stratum.control.denominator_sum for stratum in strata),
            treatment_reports=sum(stratum.treatment.denominator_sum for stratum in strata),
        )
        if unreported:
            results.append(GuardrailState(
                metric=metric, state="not_reported", on_violation=rule["on_violation"], estimate=None, interval=None,
                reason=unreported, rule=rule_text, alpha=alpha, segment_alpha=segment_alpha,
            ))
            continue
        result = stats.evaluate_guardrail(
            metric=metric,
            harmful_direction=rule["harmful_direction"],
            threshold=rule["threshold"],
            threshold_kind=rule["threshold_kind"],
            on_violation=rule["on_violation"],
            strata=strata,
            alpha=alpha,
            min_samples_per_arm=max(2, experiment.min_samples_per_arm),
            planned_samples_per_arm=experiment.planned_samples_per_arm,
            format_value=usd_amount if metric == "cost_per_request" else None,
            segment=metrics.guardrail_segment,
        )
        results.append(GuardrailState(
            metric=metric,
            state=result.state,
            on_violation=rule["on_violation"],
            estimate=result.estimate,
            interval=(result.interval.low, result.interval.high) if result.interval else None,
            reason=result.reason,
            rule=rule_text,
            alpha=alpha,
            segment_alpha=segment_alpha,
        ))
    return results


# --- results --------------------------------------------------------------------------------------


def _float(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def usd_amount(value: float, *, signed: bool = False) -> str:
    """A cost for people, sub-cent amounts included ("+$0.000038", not "+0.00"): costs.budgeting.format_usd."""
    text = budgeting.format_usd(Decimal(repr(float(value))))
    return f"+{text}" if signed and not text.startswith("-") else text


def _money(value: Decimal) -> str:
    return budgeting.money_str(value, places=COST_PLACES)


def _interval_json(interval: stats.Interval | None) -> list[float | None] | None:
    return [_float(interval.low), _float(interval.high)] if interval else None


# What each metric's comparison estimates, in words.
MEASURES = {"success_rate": "share of requests that succeeded", "latency_ms": "mean latency per request (ms)",
            "quality": "mean quality of the requests that report it", "cost_per_request": "mean cost per request (USD)"}


def metric_measure(metric: str, *, caps: dict[str, float | None]) -> str:
    """What the comparisons and guardrails of ``metric`` estimate: latency and cost name the value
    each request was capped at, since their means are of capped requests (stats.CAP_PERCENTILE)."""
    cap = caps.get(metric)
    if metric not in CAPPED_METRICS or cap is None:
        return MEASURES[metric]
    shown = usd_amount(cap) if metric == "cost_per_request" else f"{stats.format_number(cap)} ms"
    return f"{MEASURES[metric]}, each request capped at {shown} (the {stats.CAP_PERCENTILE}th percentile of both arms' requests)"


def _comparison_json(comparison: stats.Comparison | None, *, metric: str, caps: dict[str, float | None]) -> dict[str, Any] | None:
    if comparison is None:
        return None
    return {
        "measures": metric_measure(metric, caps=caps),
        "capped_at": _float(caps.get(metric)),
        "control": _float(comparison.control_mean),
        "treatment": _float(comparison.treatment_mean),
        "absolute_lift": _float(comparison.absolute_lift),
        "absolute_ci95": _interval_json(comparison.absolute_interval),
        "relative_lift": _float(comparison.relative_lift),
        "ci95": _interval_json(comparison.relative_interval),
        "p_value": _float(comparison.p_value),
    }


def _arm_json(arm: ArmTotals, *, stage_users: int) -> dict[str, Any]:
    return {
        "n": arm.outcomes,
        "users": arm.users,
        "success_rate": _float(arm.successes / arm.outcomes) if arm.outcomes else None,
        "mean_quality": _float(arm.quality_sum / arm.quality_n) if arm.quality_n else None,
        "quality_n": arm.quality_n,
        "latency_p50_ms": _float(arm.latency_p50),
        "latency_p95_ms": _float(arm.latency_p95),
        "mean_latency_ms": _float(arm.latency_sum / arm.outcomes) if arm.outcomes else None,
        "cost_per_request_usd": _money(arm.cost_total / arm.cost_n) if arm.cost_n else None,
        "cost_usd": _money(arm.cost_total),
        "stage_users": stage_users,
        "served_other_model": arm.served_other_model,
        "served_other_model_rate": _float(arm.served_other_model_rate),
    }


def _analysis_json(metrics: ExperimentMetrics) -> dict[str, Any]:
    """Which data the estimates cover, and how they were made."""
    stages = [
        {"percent": stage.percent, "started_at": stage.started_at.isoformat(),
         "users": {"control": stage.control.users, "treatment": stage.treatment.users}}
        for stage in metrics.stages
    ]
    covered = ", ".join(f"{stage.percent} %" for stage in metrics.stages) or "none yet"
    return {
        "unit": "user",
        "method": "per-user ratio metrics (delta method), each stage compared within itself and the stages "
                  "combined with Cochran–Mantel–Haenszel weights, the variance clustered by user across stages "
                  "(a user returning in several stages is one unit); latency and cost are means of requests each "
                  f"capped at the {stats.CAP_PERCENTILE}th percentile of both arms' requests (winsorised: their "
                  "tails made a small arm's interval too narrow; the guardrails judge the real requests); Welch t "
                  "p-values and intervals from one "
                  "standard error; relative intervals by Fieller's method. The p-values and intervals are "
                  "fixed-horizon: valid at the planned end, not for stopping early — the guardrails' "
                  "sequential test is what stops",
        "covers": f"stages {covered}",
        "stages": stages,
    }


def experiment_results(*, experiment: Experiment, metrics: ExperimentMetrics | None = None) -> dict[str, Any]:
    """Everything the results endpoint and the admin page show, from one aggregate query and one for the
    latency percentiles — or from `metrics` read with them (the admin page's holds read them too)."""
    if metrics is not None and not metrics.percentiles_read:  # the page would show the latencies' p50/p95 as None
        raise ValueError("experiment_results needs metrics read with include_percentiles=True")
    metrics = metrics or experiment_metrics(experiment=experiment, include_percentiles=True)
    comparisons = {metric: _comparison_json(stats.compare(metrics.strata(metric)), metric=metric, caps=metrics.caps)
                   for metric in METRICS}
    success = comparisons["success_rate"]
    guardrails = experiment_guardrail_results(experiment=experiment, metrics=metrics)
    return {
        "experiment": experiment.key,
        "agent": experiment.agent.slug,
        "status": experiment.status,
        "stage_percent": metrics.stage_percent if experiment.status in ACTIVE_STATUSES else None,
        "config_version": experiment.config_version,
        "control": {"model": experiment.control.model_id, "provider": experiment.control.provider.name},
        "treatment": {"model": experiment.treatment.model_id, "provider": experiment.treatment.provider.name},
        "variants": {
            "control": _arm_json(metrics.arms[Variant.CONTROL], stage_users=metrics.stage_users_control),
            "treatment": _arm_json(metrics.arms[Variant.TREATMENT], stage_users=metrics.stage_users_treatment),
        },
        "analysis": _analysis_json(metrics),
        # The primary metric, success rate, at the top level: relative lift, its 95 % interval, p-value.
        "relative_lift": success["relative_lift"] if success else None,
        "ci95": success["ci95"] if success else None,
        "p_value": success["p_value"] if success else None,
        "comparisons": comparisons,
        "srm_p": _float(metrics.srm_p),
        "srm_threshold": metrics.srm_threshold,
        "srm_test": metrics.srm_test,
        "srm_flagged": metrics.srm_flagged,
        "guardrail_segment": metrics.guardrail_segment,
        "guardrails": [g.as_json() for g in guardrails],
    }


# --- the admin page and the CLI -------------------------------------------------------------------


def experiment_timeline(*, experiment: Experiment) -> list[dict[str, Any]]:
    """The stage plan with each stage's dates and its approval requests (the admin timeline)."""
    if experiment.status == "draft":
        return [{"percent": percent, "status": "planned", "started_at": None, "ended_at": None, "approvals": []}
                for percent in experiment.stage_plan]
    approvals: dict[int, list[StageApproval]] = {}
    for approval in StageApproval.objects.filter(stage__experiment=experiment).select_related("requested_by", "decided_by").order_by("requested_at"):
        approvals.setdefault(approval.stage_id, []).append(approval)
    return [
        {
            "id": stage.pk,
            "percent": stage.percent,
            "status": stage.status,
            "current": stage.pk == experiment.current_stage_id,
            "started_at": stage.started_at,
            "ended_at": stage.ended_at,
            "approvals": approvals.get(stage.pk, []),
        }
        for stage in experiment.stages.order_by("index")
    ]


def approval_blocker(*, experiment: Experiment, pending: StageApproval | None, user: Any) -> str:
    """Why `user` may not approve the pending request, the real reason first: the permission, then
    the four-eyes rule (they started the experiment or asked for this advance); "" when they may."""
    if pending is None or user is None:
        return ""
    if not (user.is_active and user.has_perm("experiments.approve_stage")):
        return "you may not approve stages: it needs the permission 'experiments.approve_stage'"
    if experiment.started_by_id == user.pk:
        return "you started this experiment; another approver must approve"
    if pending.requested_by_id == user.pk:
        return "you requested this advance; another approver must approve"
    return ""


def pending_approval(*, experiment: Experiment) -> StageApproval | None:
    return pending_approvals(experiments=[experiment]).get(experiment.pk)


def pending_approvals(*, experiments: list[Experiment]) -> dict[int, StageApproval]:
    """Each experiment's pending request (the newest, were there two) by experiment id, in one query."""
    pending = StageApproval.objects.filter(stage__experiment__in=experiments, status=ApprovalStatus.PENDING)
    # Oldest first: an experiment's newest request is the one its key keeps.
    return {approval.stage.experiment_id: approval for approval in pending.select_related("stage", "requested_by").order_by("requested_at")}


def experiment_rollback_event(*, experiment: Experiment) -> ExperimentEvent | None:
    """The entry of the experiment's rollback (who, when, why), None when it was not rolled back."""
    return rollback_events(experiments=[experiment]).get(experiment.pk)


def rollback_events(*, experiments: list[Experiment]) -> dict[int, ExperimentEvent]:
    """experiment_rollback_event of each experiment that has one, by experiment id, in one query."""
    events = ExperimentEvent.objects.filter(experiment__in=experiments, action=EventAction.ROLLBACK).select_related("actor")
    return {event.experiment_id: event for event in events.order_by("at", "id")}  # oldest first: the newest is kept


def experiment_pause_event(*, experiment: Experiment) -> ExperimentEvent | None:
    """The entry of the experiment's latest pause (who, when, why, its reason code), None if never paused."""
    return experiment.events.filter(action=EventAction.PAUSE).select_related("actor").order_by("-at", "-id").first()


def experiment_events(*, experiment: Experiment, limit: int = 50) -> QuerySet[ExperimentEvent]:
    return experiment.events.select_related("actor").order_by("-at", "-id")[:limit]


def experiment_calendar(*, experiment: Experiment, now: datetime | None = None, stages: list[ExperimentStage] | None = None) -> list[CalendarEntry]:
    """The launch calendar (experiments/calendar.py) of an experiment: its stages (`stages`, by index,
    when the caller read them), their earliest start given the minimum hours, and the operator's targets."""
    now = now or timezone.now()
    if experiment.status == "draft":
        planned = [PlannedStage(percent, "planned", None) for percent in experiment.stage_plan]
    else:
        rows = stages if stages is not None else experiment.stages.order_by("index")
        planned = [PlannedStage(stage.percent, stage.status, stage.started_at) for stage in rows]
    targets = {int(percent): datetime.fromisoformat(when) for percent, when in (experiment.stage_targets or {}).items()}
    return rollout_calendar(stages=planned, min_stage_hours=experiment.min_stage_hours, targets=targets, now=now,
                            running=experiment.status in ("draft", "running"))
