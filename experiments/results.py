"""What an experiment's outcome aggregate (experiments/outcome_aggregate.py) says: each guardrail rule
judged by the sequential test of experiments/stats.py, and the results document — per-arm figures,
the comparisons of every metric, the sample-ratio test and the guardrails — that the results endpoint,
the experiment's admin page and `rollout_models --status` show. The guardrail task
(experiments/guardrail_check.py) and the holds (and through them the services) judge the guardrails
through experiment_guardrail_results too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from costs import budgeting
from experiments import stats
from experiments.models import ACTIVE_STATUSES, Experiment, Variant
from experiments.outcome_aggregate import (
    CAPPED_METRICS,
    GUARDED_AS,
    METRICS,
    ArmTotals,
    ExperimentMetrics,
    experiment_metrics,
)

# An outcome's cost is kept to eight decimals (OutcomeEvent.cost_usd): sums and means are shown to as many.
COST_PLACES = 8
# Quality and cost are optional in an outcome: an agent that never reports them cannot hold a stage
# on them forever. A metric with no observation at all in either arm is "not_reported".
OPTIONAL_METRICS = ("quality", "cost_per_request")


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
    """Everything the results endpoint and the admin page show, from one aggregate query (and one
    for the latency percentiles) — or from `metrics`, read by the caller with include_percentiles
    (the experiment page, whose holds read them too: one pass over the outcomes, not two)."""
    if metrics is None:
        metrics = experiment_metrics(experiment=experiment, include_percentiles=True)
    elif not metrics.percentiles_read:  # the page would show the latencies' p50/p95 as None
        raise ValueError("experiment_results needs metrics read with include_percentiles=True")
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
