"""Reads of online evaluation: per-arm aggregates (in SQL), results, guardrail states, holds.

Every metric starts from one GROUP BY over the experiment's outcome events — count, Σx and Σx² per
arm and metric, distinct users in the current stage, and (on PostgreSQL) latency percentiles with
`percentile_cont` — and the statistics in experiments/stats.py work from those aggregates. No
Python loop over events. On SQLite (the embedded dev mode), which has no percentile aggregate, the
latency percentiles are computed in Python from the sorted latencies of each arm: documented, and
fine for a demo; use PostgreSQL for real traffic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, IntegerField, Q, QuerySet, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from experiments import stats
from experiments.calendar import CalendarEntry, PlannedStage, rollout_calendar
from experiments.models import (
    ACTIVE_STATUSES,
    ApprovalStatus,
    EventAction,
    Experiment,
    ExperimentEvent,
    OutcomeEvent,
    StageApproval,
    Variant,
)
from genesis.errors import NotFound

ARMS = (Variant.CONTROL.value, Variant.TREATMENT.value)
COST_QUANTUM = Decimal("0.00000001")
# Quality and cost are optional in an outcome: an agent that never reports them cannot hold a stage
# on them forever. A metric with no observation at all in either arm is "not_reported".
OPTIONAL_METRICS = ("quality", "cost_per_request")
SRM_MIN_EXPECTED_PER_ARM = 5


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
class ArmMetrics:
    n: int
    successes: int
    latency: stats.ArmSummary
    quality: stats.ArmSummary
    cost: stats.ArmSummary
    cost_total: Decimal
    stage_n: int  # outcomes since the current stage began
    stage_users: int  # distinct users with outcomes since the current stage began
    latency_p50: float | None
    latency_p95: float | None

    @property
    def success(self) -> stats.ArmSummary:
        return stats.ArmSummary.from_successes(n=self.n, successes=self.successes)

    def summary(self, metric: str) -> stats.ArmSummary:
        return {"success_rate": self.success, "latency_ms": self.latency, "quality": self.quality,
                "cost_per_request": self.cost}[metric]


EMPTY_ARM = ArmMetrics(
    n=0, successes=0, latency=stats.ArmSummary(0, 0.0, 0.0), quality=stats.ArmSummary(0, 0.0, 0.0),
    cost=stats.ArmSummary(0, 0.0, 0.0), cost_total=Decimal(0), stage_n=0, stage_users=0, latency_p50=None,
    latency_p95=None,
)


@dataclass(frozen=True)
class ExperimentMetrics:
    arms: dict[str, ArmMetrics]
    stage_percent: int | None
    stage_started_at: datetime | None
    srm_p: float | None  # None outside a stage, or while an arm expects fewer than 5 users

    @property
    def control(self) -> ArmMetrics:
        return self.arms[Variant.CONTROL]

    @property
    def treatment(self) -> ArmMetrics:
        return self.arms[Variant.TREATMENT]

    @property
    def stage_users_control(self) -> int:
        return self.control.stage_users

    @property
    def stage_users_treatment(self) -> int:
        return self.treatment.stage_users


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


def experiment_metrics(*, experiment: Experiment, include_percentiles: bool = False) -> ExperimentMetrics:
    """Per-arm aggregates of the experiment's outcomes in one SQL query (plus one per arm for the
    percentiles on SQLite only)."""
    stage = experiment.current_stage
    stage_started_at = stage.started_at if stage is not None else None
    in_stage = Q(occurred_at__gte=stage_started_at) if stage_started_at else Q(pk__in=[])
    latency, quality = F("latency_ms"), F("quality")
    cost = Cast("cost_usd", FloatField())
    aggregates: dict[str, Any] = {
        "n": Count("id"),
        "successes": Sum(Cast("success", IntegerField())),
        "latency_sum": Sum(latency),
        "latency_sumsq": Sum(latency * latency),
        "quality_n": Count("quality"),
        "quality_sum": Sum(quality),
        "quality_sumsq": Sum(quality * quality),
        "cost_n": Count("cost_usd"),
        "cost_total": Sum("cost_usd"),
        "cost_sumsq": Sum(cost * cost),
        "stage_n": Count("id", filter=in_stage),
        "stage_users": Count("user_id", filter=in_stage, distinct=True),
    }
    postgres = connection.vendor == "postgresql"
    if include_percentiles and postgres:
        aggregates["p50"] = PercentileCont("latency_ms", fraction=0.50)
        aggregates["p95"] = PercentileCont("latency_ms", fraction=0.95)
    rows = (
        OutcomeEvent.objects.filter(experiment=experiment, variant__in=ARMS)
        .values("variant")
        .order_by("variant")
        .annotate(**aggregates)
    )
    arms = {arm: EMPTY_ARM for arm in ARMS}
    for row in rows:
        p50, p95 = row.get("p50"), row.get("p95")
        if include_percentiles and not postgres:
            p50, p95 = _percentiles_in_python(experiment=experiment, variant=row["variant"])
        arms[row["variant"]] = ArmMetrics(
            n=row["n"],
            successes=int(row["successes"] or 0),
            latency=stats.ArmSummary(row["n"], float(row["latency_sum"] or 0), float(row["latency_sumsq"] or 0)),
            quality=stats.ArmSummary(row["quality_n"], float(row["quality_sum"] or 0), float(row["quality_sumsq"] or 0)),
            cost=stats.ArmSummary(row["cost_n"], float(row["cost_total"] or 0), float(row["cost_sumsq"] or 0)),
            cost_total=Decimal(row["cost_total"] or 0),
            stage_n=row["stage_n"],
            stage_users=row["stage_users"],
            latency_p50=p50,
            latency_p95=p95,
        )
    srm_p = None
    if stage is not None:
        fraction = stage.percent / 100
        observed = [arms[Variant.CONTROL].stage_users, arms[Variant.TREATMENT].stage_users]
        # The chi-square approximation needs about 5 expected users per arm (the textbook rule);
        # below that, a handful of early users would "prove" a mismatch and pause the experiment.
        if min(fraction, 1 - fraction) * sum(observed) >= SRM_MIN_EXPECTED_PER_ARM:
            srm_p = stats.srm_p_value(observed=observed, expected_fractions=[1 - fraction, fraction])
    return ExperimentMetrics(arms=arms, stage_percent=stage.percent if stage else None,
                             stage_started_at=stage_started_at, srm_p=srm_p)


def _percentiles_in_python(*, experiment: Experiment, variant: str) -> tuple[float | None, float | None]:
    """SQLite fallback: linear interpolation between order statistics, as percentile_cont does."""
    values = list(
        OutcomeEvent.objects.filter(experiment=experiment, variant=variant).order_by("latency_ms").values_list("latency_ms", flat=True)
    )
    return _percentile_cont(values, 0.50), _percentile_cont(values, 0.95)


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

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval else None
        return data


def _unreported_reason(metric: str, *, rule: dict[str, Any], control: stats.ArmSummary, treatment: stats.ArmSummary) -> str:
    """Why an optional metric is not guarded, or "" when it is. An agent may report quality or cost
    for no arm, or — when only one model returns it — for one arm only. Neither will ever fill in,
    so waiting for them would hold the stage forever. A warning rule is then shown as not reported;
    a breach rule (someone chose to roll back on it) keeps waiting for both arms."""
    if metric not in OPTIONAL_METRICS:
        return ""
    name = metric.replace("_", " ")
    if control.n == 0 and treatment.n == 0:
        return f"{metric}: the agent reports no {name} for this experiment; not guarded"
    if rule["on_violation"] == "warning" and min(control.n, treatment.n) == 0:
        reporting = "control" if control.n else "treatment"
        return f"{metric}: only the {reporting} arm reports {name}, so the arms cannot be compared; not guarded"
    return ""


def experiment_guardrail_results(*, experiment: Experiment, metrics: ExperimentMetrics) -> list[GuardrailState]:
    """Each of the experiment's guardrail rules judged by the sequential test of experiments/stats.py."""
    alpha = settings.GENESIS.ab_testing.guardrail_alpha
    results = []
    for rule in experiment.guardrails:
        metric = rule["metric"]
        control, treatment = metrics.control.summary(metric), metrics.treatment.summary(metric)
        unreported = _unreported_reason(metric, rule=rule, control=control, treatment=treatment)
        if unreported:
            results.append(GuardrailState(
                metric=metric, state="not_reported", on_violation=rule["on_violation"], estimate=None, interval=None,
                reason=unreported,
            ))
            continue
        result = stats.evaluate_guardrail(
            metric=metric,
            harmful_direction=rule["harmful_direction"],
            threshold=rule["threshold"],
            threshold_kind=rule["threshold_kind"],
            on_violation=rule["on_violation"],
            control=control,
            treatment=treatment,
            alpha=alpha,
            min_samples_per_arm=max(2, experiment.min_samples_per_arm),
            planned_samples_per_arm=experiment.planned_samples_per_arm,
        )
        results.append(GuardrailState(
            metric=metric,
            state=result.state,
            on_violation=rule["on_violation"],
            estimate=result.estimate,
            interval=(result.interval.low, result.interval.high) if result.interval else None,
            reason=result.reason,
        ))
    return results


# --- holds ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    name: str  # min_time | min_samples | guardrails | srm | status
    cleared: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def stage_holds(
    *, experiment: Experiment, metrics: ExperimentMetrics | None = None, now: datetime | None = None
) -> list[Hold]:
    """What stands between the current stage and the next: time, samples, guardrails, SRM."""
    now = now or timezone.now()
    stage = experiment.current_stage
    if experiment.status != "running" or stage is None or stage.started_at is None:
        return [Hold("status", False, f"the experiment is {experiment.status}; only a running experiment advances")]
    metrics = metrics or experiment_metrics(experiment=experiment)
    holds = []

    required = timedelta(hours=experiment.min_stage_hours)
    elapsed = now - stage.started_at
    if elapsed >= required:
        holds.append(Hold("min_time", True, f"{_hours(elapsed)} in this stage (minimum {_hours(required)})"))
    else:
        holds.append(Hold(
            "min_time", False,
            f"{_hours(elapsed)} of the {_hours(required)} minimum in this stage; clears at "
            f"{(stage.started_at + required):%Y-%m-%d %H:%M} UTC",
        ))

    need = experiment.min_samples_per_arm
    control_n, treatment_n = metrics.control.stage_n, metrics.treatment.stage_n
    holds.append(Hold(
        "min_samples", control_n >= need and treatment_n >= need,
        f"control {control_n} and treatment {treatment_n} outcomes in this stage (minimum {need} per arm)",
    ))

    guardrails = experiment_guardrail_results(experiment=experiment, metrics=metrics)
    unhealthy = [g for g in guardrails if g.state not in ("healthy", "not_reported")]
    holds.append(Hold(
        "guardrails", not unhealthy,
        "; ".join(g.reason for g in unhealthy) if unhealthy else "all guardrails healthy",
    ))

    threshold = settings.GENESIS.ab_testing.srm_p_threshold
    split = (
        f"split {metrics.stage_users_control}/{metrics.stage_users_treatment} users vs planned "
        f"{100 - (metrics.stage_percent or 0)}/{metrics.stage_percent} %"
    )
    if metrics.srm_p is None:
        holds.append(Hold("srm", True, f"{split}: too few users yet to test the split"))
    else:
        flagged = metrics.srm_p < threshold
        holds.append(Hold(
            "srm", not flagged,
            f"{split}: SRM p = {metrics.srm_p:.3g}" + (" — mismatch: check assignment and logging" if flagged else ""),
        ))
    return holds


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 100 else f"{hours:.0f} h"


# --- results --------------------------------------------------------------------------------------


def _float(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def _money(value: Decimal) -> str:
    return str(value.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP))


def _comparison_json(comparison: stats.Comparison | None) -> dict[str, Any] | None:
    if comparison is None:
        return None
    return {
        "control": _float(comparison.control_mean),
        "treatment": _float(comparison.treatment_mean),
        "absolute_lift": _float(comparison.absolute_lift),
        "absolute_ci95": [_float(comparison.absolute_interval.low), _float(comparison.absolute_interval.high)],
        "relative_lift": _float(comparison.relative_lift),
        "ci95": (
            [_float(comparison.relative_interval.low), _float(comparison.relative_interval.high)]
            if comparison.relative_interval else None
        ),
        "p_value": _float(comparison.p_value),
    }


def _arm_json(arm: ArmMetrics) -> dict[str, Any]:
    return {
        "n": arm.n,
        "success_rate": _float(arm.successes / arm.n) if arm.n else None,
        "mean_quality": _float(arm.quality.mean) if arm.quality.n else None,
        "quality_n": arm.quality.n,
        "latency_p50_ms": _float(arm.latency_p50),
        "latency_p95_ms": _float(arm.latency_p95),
        "mean_latency_ms": _float(arm.latency.mean) if arm.n else None,
        "cost_per_request_usd": _money(arm.cost_total / arm.cost.n) if arm.cost.n else None,
        "cost_usd": _money(arm.cost_total),
        "stage_users": arm.stage_users,
    }


def experiment_results(*, experiment: Experiment) -> dict[str, Any]:
    """Everything the results endpoint and the admin page show, from one aggregate query."""
    metrics = experiment_metrics(experiment=experiment, include_percentiles=True)
    control, treatment = metrics.control, metrics.treatment
    success = stats.compare_proportions(control=control.success, treatment=treatment.success)
    comparisons = {
        "success_rate": _comparison_json(success),
        "quality": _comparison_json(stats.compare_means(control=control.quality, treatment=treatment.quality)),
        "latency_ms": _comparison_json(stats.compare_means(control=control.latency, treatment=treatment.latency)),
        "cost_per_request": _comparison_json(stats.compare_means(control=control.cost, treatment=treatment.cost)),
    }
    guardrails = experiment_guardrail_results(experiment=experiment, metrics=metrics)
    threshold = settings.GENESIS.ab_testing.srm_p_threshold
    return {
        "experiment": experiment.key,
        "agent": experiment.agent.slug,
        "status": experiment.status,
        "stage_percent": metrics.stage_percent if experiment.status in ACTIVE_STATUSES else None,
        "config_version": experiment.config_version,
        "control": {"model": experiment.control.model_id, "provider": experiment.control.provider.name},
        "treatment": {"model": experiment.treatment.model_id, "provider": experiment.treatment.provider.name},
        "variants": {"control": _arm_json(control), "treatment": _arm_json(treatment)},
        # The primary metric, success rate, at the top level: relative lift, its 95 % interval, p-value.
        "relative_lift": comparisons["success_rate"]["relative_lift"] if success else None,
        "ci95": comparisons["success_rate"]["ci95"] if success else None,
        "p_value": comparisons["success_rate"]["p_value"] if success else None,
        "comparisons": comparisons,
        "srm_p": _float(metrics.srm_p),
        "srm_flagged": metrics.srm_p is not None and metrics.srm_p < threshold,
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


def pending_approval(*, experiment: Experiment) -> StageApproval | None:
    return (
        StageApproval.objects.filter(stage__experiment=experiment, status=ApprovalStatus.PENDING)
        .select_related("stage", "requested_by")
        .first()
    )


def experiment_events(*, experiment: Experiment, limit: int = 50) -> QuerySet[ExperimentEvent]:
    return experiment.events.select_related("actor").order_by("-at", "-id")[:limit]


def rollback_counts() -> list[tuple[str, str, int]]:
    """(agent, reason_code, rollbacks) over all time: genesis_experiment_rollbacks_total."""
    return list(
        ExperimentEvent.objects.filter(action=EventAction.ROLLBACK)
        .values_list("experiment__agent__slug", "reason_code")
        .annotate(total=Count("id"))
        .order_by()
    )


def experiment_calendar(*, experiment: Experiment, now: datetime | None = None) -> list[CalendarEntry]:
    """The launch calendar (experiments/calendar.py) of an experiment: its stages, their earliest
    start given the minimum hours, and the operator's targets."""
    now = now or timezone.now()
    if experiment.status == "draft":
        stages = [PlannedStage(percent, "planned", None) for percent in experiment.stage_plan]
    else:
        stages = [PlannedStage(stage.percent, stage.status, stage.started_at) for stage in experiment.stages.order_by("index")]
    targets = {int(percent): datetime.fromisoformat(when) for percent, when in (experiment.stage_targets or {}).items()}
    return rollout_calendar(stages=stages, min_stage_hours=experiment.min_stage_hours, targets=targets, now=now,
                            running=experiment.status in ("draft", "running"))
