"""Statistics: known answers against scipy, the sequential guardrail test, seeded A/A simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import (
    ArmSummary,
    compare_means,
    compare_proportions,
    evaluate_guardrail,
    sequential_boundary_level,
    sequential_critical_z,
    sequential_difference,
    simulate_aa_experiments,
    srm_p_value,
)

Z_95 = stats.norm.ppf(0.975)


# ------------------------------------------------------------------ aggregates


def test_arm_summary_from_aggregates_matches_numpy() -> None:
    values = np.random.default_rng(3).lognormal(mean=6, sigma=0.5, size=1_000)
    summary = ArmSummary(n=values.size, total=float(values.sum()), sum_of_squares=float((values**2).sum()))
    assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
    assert summary.variance == pytest.approx(values.var(ddof=1), rel=1e-9)
    assert ArmSummary.from_values(values) == summary


def test_arm_summary_of_successes_is_a_rate_with_bernoulli_variance() -> None:
    summary = ArmSummary.from_successes(n=200, successes=150)
    assert summary.mean == 0.75
    assert summary.variance == pytest.approx(0.75 * 0.25 * 200 / 199)
    with pytest.raises(ValueError, match="successes"):
        ArmSummary.from_successes(n=10, successes=11)


def test_constant_metric_never_gets_a_negative_variance() -> None:
    # Σx² − (Σx)²/n comes out below zero in floating point for 0.7 × 7; a negative variance would
    # make the standard error NaN.
    assert ArmSummary.from_values([0.7] * 7).variance == 0.0


# ------------------------------------------------------------------ proportions


def test_two_proportion_comparison_known_answer() -> None:
    result = compare_proportions(
        control=ArmSummary.from_successes(n=1_000, successes=500),
        treatment=ArmSummary.from_successes(n=1_000, successes=550),
    )
    assert result is not None
    # The pooled z-test is Pearson's chi-square on the 2×2 table without continuity correction.
    table = [[550, 450], [500, 500]]
    assert result.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    assert result.absolute_lift == pytest.approx(0.05)
    half_width = Z_95 * math.sqrt(0.55 * 0.45 / 1_000 + 0.5 * 0.5 / 1_000)
    assert result.absolute_interval.low == pytest.approx(0.05 - half_width)
    assert result.absolute_interval.high == pytest.approx(0.05 + half_width)
    # Delta method: Var(T/C) = Var(T)/C² + T²·Var(C)/C⁴.
    relative_sd = math.sqrt((0.55 * 0.45 / 1_000) / 0.25 + 0.55**2 * (0.25 / 1_000) / 0.5**4)
    assert result.relative_lift == pytest.approx(0.10)
    assert result.relative_interval is not None
    assert result.relative_interval.low == pytest.approx(0.10 - Z_95 * relative_sd)
    assert result.relative_interval.high == pytest.approx(0.10 + Z_95 * relative_sd)


def test_two_proportion_comparison_edge_cases() -> None:
    assert compare_proportions(control=ArmSummary.from_successes(n=0, successes=0), treatment=ArmSummary.from_successes(n=5, successes=1)) is None
    all_succeed = compare_proportions(
        control=ArmSummary.from_successes(n=100, successes=100), treatment=ArmSummary.from_successes(n=100, successes=100)
    )
    assert all_succeed is not None and all_succeed.p_value == 1.0
    zero_control = compare_proportions(
        control=ArmSummary.from_successes(n=100, successes=0), treatment=ArmSummary.from_successes(n=100, successes=5)
    )
    assert zero_control is not None and zero_control.relative_lift is None and zero_control.relative_interval is None


# ------------------------------------------------------------------ means (Welch)


def test_welch_comparison_matches_scipy() -> None:
    rng = np.random.default_rng(11)
    control_values = rng.normal(loc=800, scale=120, size=400)
    treatment_values = rng.normal(loc=830, scale=200, size=150)
    result = compare_means(control=ArmSummary.from_values(control_values), treatment=ArmSummary.from_values(treatment_values))
    assert result is not None
    reference = stats.ttest_ind(treatment_values, control_values, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    interval = reference.confidence_interval(confidence_level=0.95)
    assert result.absolute_interval.low == pytest.approx(interval.low, rel=1e-9)
    assert result.absolute_interval.high == pytest.approx(interval.high, rel=1e-9)
    from_stats = stats.ttest_ind_from_stats(
        mean1=treatment_values.mean(), std1=treatment_values.std(ddof=1), nobs1=150,
        mean2=control_values.mean(), std2=control_values.std(ddof=1), nobs2=400, equal_var=False,
    )
    assert result.p_value == pytest.approx(from_stats.pvalue, rel=1e-9)
    assert result.relative_lift == pytest.approx(treatment_values.mean() / control_values.mean() - 1)
    assert result.relative_interval is not None and result.relative_interval.contains(result.relative_lift)


def test_welch_needs_two_values_per_arm_and_handles_constant_arms() -> None:
    assert compare_means(control=ArmSummary.from_values([1.0]), treatment=ArmSummary.from_values([1.0, 2.0])) is None
    constant = compare_means(control=ArmSummary.from_values([2.0] * 5), treatment=ArmSummary.from_values([3.0] * 5))
    assert constant is not None and constant.p_value == 0.0 and constant.relative_lift == pytest.approx(0.5)


# ------------------------------------------------------------------ SRM


@pytest.mark.parametrize(
    ("observed", "fractions"),
    [([1_000, 9_000], [0.1, 0.9]), ([1_100, 8_900], [0.1, 0.9]), ([2_600, 7_400], [0.25, 0.75]), ([30, 40, 30], [0.3, 0.4, 0.3])],
)
def test_srm_p_value_matches_scipy_chisquare(observed: list[int], fractions: list[float]) -> None:
    expected = [fraction * sum(observed) for fraction in fractions]
    assert srm_p_value(observed=observed, expected_fractions=fractions) == pytest.approx(
        stats.chisquare(observed, f_exp=expected).pvalue, rel=1e-9
    )


def test_srm_flags_a_broken_split_below_the_configured_threshold(settings) -> None:
    threshold = settings.GENESIS.ab_testing.srm_p_threshold  # what selectors and services compare with
    assert threshold == 0.001
    broken = srm_p_value(observed=[1_200, 8_800], expected_fractions=[0.1, 0.9])
    healthy = srm_p_value(observed=[1_020, 8_980], expected_fractions=[0.1, 0.9])
    assert broken < threshold <= healthy


def test_srm_edge_cases() -> None:
    assert srm_p_value(observed=[0, 0], expected_fractions=[0.1, 0.9]) == 1.0
    assert srm_p_value(observed=[5, 100], expected_fractions=[0.0, 1.0]) == 0.0  # users in a 0 % arm
    assert srm_p_value(observed=[0, 100], expected_fractions=[0.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match="sum to 1"):
        srm_p_value(observed=[1, 2], expected_fractions=[0.5, 0.6])
    with pytest.raises(ValueError, match="same length"):
        srm_p_value(observed=[1, 2, 3], expected_fractions=[0.5, 0.5])


# ------------------------------------------------------------------ sequential interval


def test_boundary_level_makes_brownian_motion_cross_by_the_horizon_with_probability_alpha() -> None:
    # Independent of the numerical integration that chose the level: simulate the standardised
    # running difference (a Brownian motion in information time) looked at 1 000 times up to τ = 1.
    rng = np.random.default_rng(2024)
    looks = np.linspace(1e-3, 1.0, 1_000)
    steps = np.diff(looks, prepend=0.0)
    paths = np.cumsum(rng.standard_normal((10_000, looks.size)) * np.sqrt(steps), axis=1)
    z = paths / np.sqrt(looks)
    crossed = (np.abs(z) >= sequential_critical_z(information_fraction=looks, alpha=0.05)).any(axis=1).mean()
    # Discrete looks cross a little less often than continuous monitoring, never more.
    assert 0.038 <= crossed <= 0.055, crossed
    assert 0.05 < sequential_boundary_level(0.05) < 0.5


def test_sequential_interval_is_wider_than_fixed_horizon_and_narrows_with_data() -> None:
    small = sequential_difference(
        control=ArmSummary.from_successes(n=300, successes=270), treatment=ArmSummary.from_successes(n=300, successes=255)
    )
    large = sequential_difference(
        control=ArmSummary.from_successes(n=3_000, successes=2_700), treatment=ArmSummary.from_successes(n=3_000, successes=2_550)
    )
    assert small is not None and large is not None
    fixed = compare_proportions(
        control=ArmSummary.from_successes(n=300, successes=270), treatment=ArmSummary.from_successes(n=300, successes=255)
    )
    assert fixed is not None
    assert small.interval.high - small.interval.low > fixed.absolute_interval.high - fixed.absolute_interval.low
    assert large.interval.high - large.interval.low < small.interval.high - small.interval.low
    assert small.estimate == pytest.approx(-0.05) and large.excludes_zero and not small.excludes_zero


# ------------------------------------------------------------------ A/A simulations (issue 5 acceptance)


def test_aa_experiments_looked_at_every_minute_flag_five_percent_of_the_time() -> None:
    # 1 000 seeded A/A rollouts through the 10/25/50 % stages, 300 looks each (every "minute").
    result = simulate_aa_experiments(seed=20240605, experiments=1_000, method="sequential")
    assert result.looks_per_experiment == 300
    assert 0.035 <= result.false_alarm_rate <= 0.065, result


def test_aa_experiments_looked_at_only_at_the_end_of_each_stage_are_not_inflated() -> None:
    result = simulate_aa_experiments(seed=20240605, experiments=1_000, method="sequential", look_every=100)
    assert result.looks_per_experiment == 3
    assert result.false_alarm_rate <= 0.065, result


def test_naive_fixed_horizon_test_peeked_at_every_minute_inflates_false_alarms() -> None:
    # Same experiments, same looks, each look a plain 95 % z-test: this is why the guardrail is sequential.
    every_minute = simulate_aa_experiments(seed=20240605, experiments=1_000, method="fixed_horizon")
    every_stage = simulate_aa_experiments(seed=20240605, experiments=1_000, method="fixed_horizon", look_every=100)
    assert every_minute.false_alarm_rate > 0.20, every_minute
    assert every_stage.false_alarm_rate > 0.08, every_stage


# ------------------------------------------------------------------ guardrails


def _success(n: int, rate: float) -> ArmSummary:
    return ArmSummary.from_successes(n=n, successes=round(n * rate))


def _latency(n: int, mean: float, sd: float) -> ArmSummary:
    # Aggregates of a metric with this exact mean and sample standard deviation.
    total = n * mean
    return ArmSummary(n=n, total=total, sum_of_squares=sd**2 * (n - 1) + total**2 / n)


def _default_rule(metric: str) -> dict:
    """The rule an experiment gets by default (experiments/services.py), as stored on the experiment."""
    from experiments.services import default_guardrails

    return next(rule for rule in default_guardrails() if rule["metric"] == metric)


def evaluate_default(metric: str, *, control: ArmSummary, treatment: ArmSummary):  # type: ignore[no-untyped-def]
    return evaluate_guardrail(**_default_rule(metric), control=control, treatment=treatment)


def test_below_the_minimum_sample_the_guardrail_has_no_data() -> None:
    result = evaluate_default("success_rate", control=_success(1_000, 0.95), treatment=_success(40, 0.5))
    assert result.state == "no_data" and result.estimate is None
    assert "40 of the 150" in result.reason


def test_success_rate_down_fifteen_points_is_a_breach() -> None:
    result = evaluate_default("success_rate", control=_success(4_000, 0.95), treatment=_success(1_000, 0.80))
    assert result.state == "breach", result.reason
    assert result.estimate == pytest.approx(-0.15)
    assert result.interval is not None and result.interval.high < -0.05
    assert "roll back" in result.reason


def test_equal_arms_are_healthy() -> None:
    result = evaluate_default("success_rate", control=_success(4_000, 0.95), treatment=_success(1_000, 0.95))
    assert result.state == "healthy", result.reason


def test_a_drop_beyond_the_limit_without_enough_evidence_is_a_warning_not_a_breach() -> None:
    result = evaluate_default("success_rate", control=_success(1_500, 0.90), treatment=_success(150, 0.84))
    assert result.interval is not None and result.interval.contains(0.0)
    assert result.state == "warning", result.reason
    assert "not yet conclusive" in result.reason


def test_a_real_but_small_drop_within_the_limit_is_healthy() -> None:
    result = evaluate_default("success_rate", control=_success(50_000, 0.95), treatment=_success(50_000, 0.93))
    assert result.interval is not None and result.interval.high < 0  # the drop is real …
    assert result.state == "healthy", result.reason  # … and within 5 points


def test_latency_up_fifty_percent_is_a_warning_by_default() -> None:
    result = evaluate_default("latency_ms", control=_latency(3_000, 800.0, 200.0), treatment=_latency(1_000, 1_200.0, 300.0))
    assert result.state == "warning", result.reason
    assert result.interval is not None and result.interval.low > 0.30 * 800.0
    assert "review the candidate" in result.reason


def test_latency_up_ten_percent_is_within_a_thirty_percent_limit() -> None:
    result = evaluate_default("latency_ms", control=_latency(3_000, 800.0, 200.0), treatment=_latency(1_000, 880.0, 200.0))
    assert result.state == "healthy", result.reason


def test_harm_in_the_other_direction_is_not_harm() -> None:
    faster = evaluate_guardrail(
        metric="latency_ms", harmful_direction="increase", threshold=0.3, threshold_kind="relative",
        control=_latency(3_000, 800.0, 200.0), treatment=_latency(1_000, 400.0, 100.0),
    )
    assert faster.state == "healthy"


def test_guardrail_refuses_meaningless_settings() -> None:
    with pytest.raises(ValueError, match="min_samples_per_arm"):
        evaluate_guardrail(metric="m", harmful_direction="decrease", threshold=0.05,
                           control=_success(10, 0.5), treatment=_success(10, 0.5), min_samples_per_arm=1)
