"""The outcome aggregate of an experiment: per-stage, per-arm, per-user sums of its outcomes, in SQL.

Every metric starts from one SQL query over the experiment's outcome events: an inner GROUP BY per
(stage, arm, user) — each user's outcomes, successes, summed latency, quality and cost, and the
outcomes another model than the arm's served — and an outer GROUP BY per (stage, arm) of those
per-user numbers and their squares and products, the sufficient statistics of
experiments/stats.RatioSummary — and, in the same statement, a join of the per-user rows on the user
per pair of cells that share users (a user returning in a later stage), the stats.SharedUsers the
variance is clustered by. The stage of an outcome is the stage whose window [started_at, ended_at)
holds its occurred_at. The statistics in experiments/stats.py work from those aggregates, stage by
stage (stratified): experiments/results.py judges the guardrails and writes the results from them,
experiments/holds.py the holds. No Python loop over events. Latency percentiles (descriptive, over
all the arm's outcomes) come from `percentile_cont` on PostgreSQL; on SQLite (the embedded dev
mode), which has none, from the sorted latencies in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Aggregate, Count, FloatField, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from experiments import stats
from experiments.models import EventAction, Experiment, ExperimentEvent, ExperimentStage, OutcomeEvent, Variant

ARMS = (Variant.CONTROL.value, Variant.TREATMENT.value)
METRICS = ("success_rate", "latency_ms", "quality", "cost_per_request")
# The guardrails judge latency and cost on real requests, not capped ones: at the 10 % stage the
# candidate is a tenth of the pooled requests, so a cap at their 99th percentile would cut away a
# candidate hanging on up to ~10 % of its requests (5 % at 30 s: +265 % real, +12 % capped).
GUARDED_AS = {"latency_ms": "latency_ms_uncapped", "cost_per_request": "cost_per_request_uncapped"}
ANALYSED = (*METRICS, *GUARDED_AS.values())


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
            # No JIT (compiling was 2.4-3.3 s of a 3.3 s query: bench/results) and no nested loops:
            # with statistics older than the experiment the planner paired every user with every user
            # (soak test: 0.8 s at 3 500 outcomes, growing as users squared); hashing is one pass. Per
            # transaction: PgBouncer refuses them as connection parameters.
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
        caps=caps,
        percentiles_read=include_percentiles,
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
    """Each arm's latency p50 and p95 over all its outcomes (descriptive): one query on PostgreSQL,
    one per arm on SQLite."""
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
