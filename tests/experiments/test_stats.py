"""experiments/stats.py and experiments/simulation.py: known answers against scipy, the per-user
ratio metrics, stratified estimates, Fieller intervals, the anytime-valid SRM test, and — at a
smaller scale than bench/decisions/run.py, seeded — the operating characteristics the README
publishes, so a regression in any rule fails CI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from experiments import simulation, stats
from experiments.stats import RatioSummary, Stratum, compare, evaluate_guardrail
from models_app.benchmarks.reruns import ZETA_3


def _binary_users(n: int, rate: float) -> RatioSummary:
    """n users with one 0/1 outcome each, exactly round(n·rate) successes."""
    successes = round(n * rate)
    return RatioSummary.from_users([(1.0, 1.0)] * successes + [(0.0, 1.0)] * (n - successes))


def _users_with_mean(n: int, mean: float, sd: float) -> RatioSummary:
    """n users with one outcome each, values of exactly this mean and sample standard deviation."""
    half = n // 2
    spread = sd * math.sqrt((n - 1) / n)
    values = [mean + spread] * half + [mean - spread] * (n - half)
    return RatioSummary.from_users([(value, 1.0) for value in values])


# ------------------------------------------------------------------ per-user ratio statistics


def test_ratio_variance_is_the_delta_method_of_the_users_sums() -> None:
    rng = np.random.default_rng(1)
    outcomes = rng.integers(1, 12, size=400).astype(float)
    successes = rng.binomial(outcomes.astype(int), 0.8).astype(float)
    summary = RatioSummary.from_users(zip(successes, outcomes))
    mean_x, mean_y = successes.mean(), outcomes.mean()
    covariance = np.cov(successes, outcomes, ddof=1)
    expected = (covariance[0, 0] / mean_y**2 - 2 * covariance[0, 1] * mean_x / mean_y**3
                + mean_x**2 * covariance[1, 1] / mean_y**4)
    assert summary.mean == pytest.approx(successes.sum() / outcomes.sum())
    assert summary.variance == pytest.approx(expected, rel=1e-9)
    assert summary.variance_of_mean == pytest.approx(expected / 400, rel=1e-9)


def test_with_one_outcome_per_user_the_ratio_is_the_plain_mean_and_sample_variance() -> None:
    values = np.array([3.0, 5.0, 8.0, 13.0])
    summary = RatioSummary.from_users((value, 1.0) for value in values)
    assert summary.mean == pytest.approx(values.mean())
    assert summary.variance == pytest.approx(values.var(ddof=1))


def test_a_constant_metric_never_gets_a_negative_variance_and_one_user_has_none() -> None:
    assert RatioSummary.from_users([(0.1, 1.0)] * 3).variance >= 0.0
    assert math.isnan(RatioSummary.from_users([(1.0, 1.0)]).variance)
    assert not stats.EMPTY.estimable() and math.isnan(stats.EMPTY.mean)


# ------------------------------------------------------------------ fixed-horizon comparison


def test_one_stage_one_outcome_per_user_is_welchs_t_test() -> None:
    rng = np.random.default_rng(2)
    control, treatment = rng.normal(10, 2, 300), rng.normal(10.6, 3, 120)
    result = compare([Stratum(RatioSummary.from_users((v, 1.0) for v in control),
                              RatioSummary.from_users((v, 1.0) for v in treatment))])
    welch = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert result is not None and result.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert result.absolute_interval is not None
    assert (result.absolute_interval.low, result.absolute_interval.high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert result.relative_lift == pytest.approx(treatment.mean() / control.mean() - 1)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    n_control=st.integers(5, 400), n_treatment=st.integers(5, 400),
    rate_control=st.floats(0.02, 0.98), rate_treatment=st.floats(0.02, 0.98),
)
def test_p_value_absolute_and_relative_intervals_never_disagree(n_control, n_treatment, rate_control, rate_treatment) -> None:
    result = compare([Stratum(_binary_users(n_control, rate_control), _binary_users(n_treatment, rate_treatment))])
    if result is None or result.p_value is None:
        return
    significant = result.p_value < 0.05
    assert result.absolute_interval is not None
    assert significant == (not result.absolute_interval.contains(0.0))
    if result.relative_interval is not None:  # Fieller contains 0 exactly when the test does not reject
        assert significant == (not result.relative_interval.contains(0.0))


def test_fieller_interval_covers_the_relative_lift_at_small_rates_where_the_delta_method_does_not() -> None:
    """Issue 14 measured 92.5 % coverage for the delta-method interval at p 0.05 → 0.06, n 200."""
    rng = np.random.default_rng(3)
    true_lift = 0.06 / 0.05 - 1
    covered = delta_covered = total = 0
    for _ in range(1500):
        c, t = rng.binomial(200, 0.05), rng.binomial(200, 0.06)
        result = compare([Stratum(_binary_users(200, c / 200), _binary_users(200, t / 200))])
        if result is None or result.p_value is None:
            continue
        total += 1
        # A null interval is Fieller's unbounded set (control indistinguishable from 0): it holds
        # every value, so it covers; the endpoint says "cannot be bounded" rather than a number.
        covered += result.relative_interval is None or result.relative_interval.contains(true_lift)
        # The delta-method interval gbstats uses, for contrast.
        mc, mt = c / 200, t / 200
        variance = (mt * (1 - mt) / 199) / mc**2 + mt**2 * (mc * (1 - mc) / 199) / mc**4
        delta_covered += abs(mt / mc - 1 - true_lift) <= 1.96 * math.sqrt(variance)
    assert covered / total >= 0.94, covered / total
    assert delta_covered / total < covered / total


def test_an_interval_holds_its_own_ends() -> None:
    # Closed: a p-value of exactly alpha does not reject, so its interval's end sits on "no effect" and
    # still contains it (the p-value and the interval never disagree).
    interval = stats.Interval(-0.25, 0.5)
    assert interval.contains(-0.25) and interval.contains(0.5)
    assert not interval.contains(0.5000001) and not interval.contains(-0.2500001)


def test_strata_from_users_refuses_arrays_that_are_not_one_users_by_stages_shape() -> None:
    with pytest.raises(ValueError, match=r"same \(users, stages\) shape"):
        stats.strata_from_users(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 1), dtype=bool))
    with pytest.raises(ValueError, match=r"same \(users, stages\) shape"):
        stats.strata_from_users(np.ones(3), np.ones(3), np.ones(3, dtype=bool))


def test_too_little_data_gives_none_not_a_zero_interval_and_p_one() -> None:
    one_each = compare([Stratum(_binary_users(1, 1.0), _binary_users(1, 0.0))])
    assert one_each is None
    no_spread = compare([Stratum(_binary_users(50, 1.0), _binary_users(50, 1.0))])
    assert no_spread is not None and no_spread.p_value is None and no_spread.absolute_interval is None


def test_stratified_estimate_removes_a_time_trend_that_pooling_turns_into_an_effect() -> None:
    """A/A whose base rate drifts 0.91 → 0.89 while the split rises: pooled over stages, treatment
    (whose data is later) looks worse; compared stage by stage, it does not."""
    rollout = simulation.Rollout(control_rate=0.91, final_control_rate=0.89, stage_hours=12, users_per_hour=4_000)
    pooled = simulation.final_p_values(rollout=rollout, experiments=150, seed=11, stratified=False)
    stratified = simulation.final_p_values(rollout=rollout, experiments=150, seed=11, stratified=True)
    assert (pooled < 0.05).mean() > 0.5
    assert (stratified < 0.05).mean() <= 0.10


def test_stratified_estimate_weights_stages_by_their_users_and_keeps_the_difference_within_a_stage() -> None:
    early = Stratum(_binary_users(900, 0.90), _binary_users(100, 0.90))
    late = Stratum(_binary_users(500, 0.80), _binary_users(500, 0.80))
    estimate = stats.stratified_estimate([early, late])
    assert estimate is not None and estimate.difference == pytest.approx(0.0, abs=1e-12)
    w_early, w_late = 900 * 100 / 1000, 500 * 500 / 1000
    assert estimate.control_mean == pytest.approx((w_early * 0.9 + w_late * 0.8) / (w_early + w_late))
    assert estimate.effective_users == pytest.approx(2 * (w_early + w_late))


# ------------------------------------------------------------------ heavy tails: capping latency and cost


@pytest.mark.parametrize(("values", "cap"), [(range(1, 101), 99), (range(1, 201), 198), (range(1, 11), 10), ([7.0], 7.0)])
def test_the_cap_is_the_nearest_rank_99th_percentile(values, cap) -> None:
    assert stats.pooled_cap(list(values)) == cap


def test_the_cap_is_numpys_inverted_cdf_percentile_and_nan_without_values() -> None:
    values = np.random.default_rng(4).lognormal(0, 2, size=1_237)
    assert stats.pooled_cap(values) == np.quantile(values, 0.99, method="inverted_cdf")
    assert math.isnan(stats.pooled_cap([]))


def test_capping_requests_restores_the_relative_intervals_coverage_at_a_9_to_1_split() -> None:
    """Log-sd 2 requests, 2 000 users at 9:1 (bench/decisions, part tails, at a smaller scale): the
    plain mean's Fieller interval misses mostly on one side (the small arm's mean is skewed); the
    mean of requests capped at the pooled 99th percentile covers its own truth."""
    found = simulation.tailed_coverage(metric=simulation.TailedMetric(users=2_000, sigma=2.0), experiments=500, seed=3)
    assert found["uncapped"].rate < 0.90 and found["uncapped"].truth_above > 10 * max(1, found["uncapped"].truth_below)
    assert 0.92 <= found["capped"].rate <= 0.97


def test_capping_leaves_a_light_tailed_metric_as_it_was() -> None:
    metric = simulation.TailedMetric(users=2_000, sigma=0.3, user_sigma=0.15)
    found = simulation.tailed_coverage(metric=metric, experiments=500, seed=3)
    assert 0.92 <= found["capped"].rate <= 0.97
    assert abs(found["capped"].rate - found["uncapped"].rate) <= 0.01


# ------------------------------------------------------------------ SRM


def test_srm_bayes_factor_is_the_beta_binomial_against_the_binomial() -> None:
    k = stats.SRM_PRIOR_CONCENTRATION
    for treated, total, fraction in ((110, 1_000, 0.10), (260, 1_000, 0.25), (5_100, 10_000, 0.5)):
        expected = scipy_stats.betabinom.pmf(treated, total, k * fraction, k * (1 - fraction)) / scipy_stats.binom.pmf(
            treated, total, fraction
        )
        got = stats.srm_bayes_factor(observed=[total - treated, treated], expected_fractions=[1 - fraction, fraction])
        assert got == pytest.approx(expected, rel=1e-6)


def test_srm_edge_cases() -> None:
    assert stats.srm_p_value(observed=[0, 0], expected_fractions=[0.9, 0.1]) == 1.0
    assert stats.srm_p_value(observed=[10, 1], expected_fractions=[1.0, 0.0]) == 0.0
    assert stats.srm_p_value(observed=[10, 0], expected_fractions=[1.0, 0.0]) == 1.0
    with pytest.raises(ValueError):
        stats.srm_p_value(observed=[1, 2], expected_fractions=[0.5, 0.6])
    # A count per planned arm, two arms at least: three counts against a two-arm plan are refused, not zipped.
    with pytest.raises(ValueError, match="same length"):
        stats.srm_p_value(observed=[90, 10, 5], expected_fractions=[0.9, 0.1])
    with pytest.raises(ValueError, match="non-negative"):
        stats.srm_p_value(observed=[-1, 10], expected_fractions=[0.9, 0.1])
    with pytest.raises(ValueError, match="concentration"):
        stats.srm_p_value(observed=[90, 10], expected_fractions=[0.9, 0.1], concentration=0.0)
    assert stats.srm_stage_share(rollout_alpha=0.01, stage_plan=[10, 25, 50, 100]) == pytest.approx(0.01 / 3)


def test_resumed_srm_tests_of_a_stage_stay_within_its_share() -> None:
    # A resume restarts the stage's test: the k-th test pauses below share/(ζ(3)·k³), so any number of
    # resumes spends at most the stage's share (each at the whole share, four tests spent four).
    plan = [10, 25, 50, 100]
    thresholds = [stats.srm_threshold(rollout_alpha=0.01, stage_plan=plan, test=k) for k in range(1, 10_001)]
    assert thresholds[0] == pytest.approx(0.01 / 3 / 1.2020569031595942)  # 83 % of the share for the first test
    assert thresholds[1] == pytest.approx(thresholds[0] / 8)
    assert sum(thresholds) <= 0.01 / 3
    with pytest.raises(ValueError):
        stats.srm_threshold(rollout_alpha=0.01, stage_plan=plan, test=0)


def test_manual_pause_and_resume_cycles_do_not_raise_false_srm_pauses_above_the_budget() -> None:
    # Three pause/resumes a stage restart the test three times; with the stage's whole share for every
    # test a correctly split rollout was paused 2.5 % of the time (bench/decisions, 2 000 rollouts).
    spent = simulation.simulate_srm(experiments=300, seed=14, manual_resumes=3, stage_hours=24)
    whole_share = simulation.simulate_srm(experiments=300, seed=14, manual_resumes=3, stage_hours=24, spend_on_resumes=False)
    assert spent.rate <= 0.01 < whole_share.rate, (spent, whole_share)


def test_srm_checked_every_minute_over_three_stages_rarely_pauses_a_correct_split() -> None:
    result = simulation.simulate_srm(experiments=400, seed=12)
    assert result.rate <= 0.02, result  # the rollout's budget is 1 %; 400 runs have ~0.5 % noise


def test_srm_catches_ten_versus_eleven_percent_within_a_day() -> None:
    result = simulation.simulate_srm(experiments=60, seed=13, true_fractions=(0.11, 0.25, 0.50), stage_hours=24)
    assert result.rate == 1.0 and result.median_hours is not None and result.median_hours < 24, result


# ------------------------------------------------------------------ sequential guardrails


def test_the_boundary_is_valid_at_every_sample_size_not_only_up_to_the_plan() -> None:
    # Drawn at alpha itself: wider than a fixed-horizon 95 % interval everywhere, and still finite
    # (not shrinking to nothing) far past the planned sample.
    taus = np.array([0.05, 0.5, 1.0, 10.0, 100.0])
    critical = stats.sequential_critical_z(information_fraction=taus, alpha=0.05)
    assert np.all(critical > 1.96) and np.all(np.isfinite(critical))
    assert critical[2] == critical.min()  # narrowest at the plan


def test_simulation_applies_exactly_the_guardrail_rule_of_the_stats_module() -> None:
    rollout = simulation.Rollout(stage_hours=2, outcomes_per_user=3, within_user_correlation=0.2, treatment_drop=0.04)
    control, treatment = simulation.simulate_cells(np.random.default_rng(5), rollout, 2)
    k = rollout.outcomes_per_user
    difference, standard_error, effective, _, _ = simulation.stratified_difference(control, treatment, k)
    look = rollout.minutes - 1
    strata = []
    for stage in range(len(rollout.stage_fractions)):
        arms = []
        for cells in (control, treatment):
            users, total, squares = cells.users[0, look, stage], cells.total[0, look, stage], cells.squares[0, look, stage]
            arms.append(RatioSummary(users=int(users), numerator_sum=total, numerator_sum_squares=squares,
                                     denominator_sum=k * users, denominator_sum_squares=k * k * users, cross_sum=k * total))
        strata.append(Stratum(*arms))
    estimate = stats.stratified_estimate(strata)
    assert estimate is not None
    assert difference[0, look] == pytest.approx(estimate.difference, rel=1e-9)
    assert standard_error[0, look] == pytest.approx(estimate.standard_error, rel=1e-9)
    assert effective[0, look] == pytest.approx(estimate.effective_users, rel=1e-9)
    # … and the same boundary: the guardrail's interval is the simulation's critical value × SE.
    critical = stats.guardrail_critical_z(
        effective_users=effective[0, look], alpha=rollout.alpha, planned_samples_per_arm=rollout.planned_users_per_arm,
        early_samples_per_arm=stats.EARLY_HORIZON_PER_MIN_SAMPLE * rollout.min_users_per_arm,
    )
    result = evaluate_guardrail(metric="success_rate", harmful_direction="decrease", threshold=rollout.tolerance,
                                strata=strata, min_samples_per_arm=rollout.min_users_per_arm)
    assert result.interval is not None
    assert (result.interval.high - result.interval.low) / 2 == pytest.approx(critical * standard_error[0, look], rel=1e-9)


@pytest.mark.parametrize(
    "name, rollout",
    [
        ("one outcome per user", simulation.Rollout(stage_hours=12)),
        ("ten correlated outcomes per user", simulation.Rollout(stage_hours=6, outcomes_per_user=10, within_user_correlation=0.2)),
        ("ten times the planned traffic", simulation.Rollout(stage_hours=12, users_per_hour=20_000)),
    ],
)
def test_aa_rollouts_checked_every_minute_are_rarely_rolled_back(name, rollout) -> None:
    result = simulation.simulate_rollbacks(rollout=rollout, experiments=100, seed=21)
    assert result.rate <= 0.05, (name, result.rate)


def test_the_per_event_view_converts_every_batch_with_its_own_outcomes_per_user() -> None:
    """Each batch of simulated rollouts is converted to the per-event view with the rollout's k. Until
    2026-12-07 the first batch overwrote k with 1, so every later batch read a user's success count
    (~9 of 10) as a rate with no variance: 52 % of these A/A rollouts "rolled back" (all but the first
    batch's), which the README published as the per-event analysis's 64 %."""
    clustered = simulation.Rollout(stage_hours=6, outcomes_per_user=10, within_user_correlation=0.2, per_user=False)
    result = simulation.simulate_rollbacks(rollout=clustered, experiments=40, seed=22, batch=10)
    assert result.rate <= 0.05, result.rate


def test_analysing_every_outcome_as_independent_rolls_back_drops_at_the_tolerance_beyond_alpha() -> None:
    """Ten correlated outcomes per user (correlation 0.2: design effect 2.8): counted as ten independent
    outcomes, the standard error is about 1.7× too small, and a true drop of exactly the tolerance is rolled
    back far more often than α (29 % here); per user, within α (2 %). In an A/A both stay near 0 %: the
    non-inferiority margin hides the understated error there."""
    at_tolerance = simulation.Rollout(stage_hours=6, outcomes_per_user=10, within_user_correlation=0.2, treatment_drop=0.05)
    per_user = simulation.simulate_rollbacks(rollout=at_tolerance, experiments=100, seed=22, batch=10)
    per_event = simulation.simulate_rollbacks(rollout=simulation.Rollout(**{**at_tolerance.__dict__, "per_user": False}),
                                              experiments=100, seed=22, batch=10)
    assert per_user.rate <= 0.05, per_user.rate
    assert per_event.rate > 0.15, per_event.rate


def test_a_ten_point_drop_is_rolled_back_within_four_hours_median() -> None:
    # Was within two hours, by a gross-harm shortcut that was not error-controlled (it rolled back up to
    # 11 % of drops of exactly the tolerance); the error-controlled rule needs the harm's bound past
    # 5 points, not past 0: about 3 h here.
    result = simulation.simulate_rollbacks(rollout=simulation.Rollout(stage_hours=4, treatment_drop=0.10), experiments=60, seed=23)
    assert result.rate == 1.0 and result.median_hours is not None and result.median_hours < 4.0, result


def test_a_twenty_point_drop_is_rolled_back_at_the_first_looks() -> None:
    # 150 treatment users at a 10 % stage of 2 000 users/h take 45 min; the early-tuned sequence rolls
    # a drop this large back soon after.
    result = simulation.simulate_rollbacks(rollout=simulation.Rollout(stage_hours=4, treatment_drop=0.20), experiments=60, seed=23)
    assert result.rate == 1.0 and result.median_hours is not None and result.median_hours < 1.0, result


def test_operating_curve_matches_the_label_down_more_than_five_points() -> None:
    curve = {
        drop: simulation.simulate_rollbacks(rollout=simulation.Rollout(stage_hours=12, treatment_drop=drop),
                                            experiments=100, seed=24).rate
        for drop in (0.03, 0.05, 0.08)
    }
    assert curve[0.03] <= 0.03, curve  # well within the tolerance: almost never
    assert curve[0.05] <= 0.08, curve  # exactly the tolerance: at most alpha (5 %), 100 runs of noise
    assert curve[0.08] >= 0.95, curve  # clearly beyond: caught


def test_a_drop_of_exactly_the_tolerance_at_base_rate_0_6_is_rolled_back_at_most_alpha() -> None:
    # The old "confidently worse and the estimate beyond 2× the tolerance" clause rolled back 12.5 % of
    # these same rollouts (11.4 % over 3 × 48 h in the bench's base-0.6 curve, before): noisy first looks
    # at a base rate where each user carries more variance. Now 1.5 %.
    rollout = simulation.Rollout(control_rate=0.6, stage_hours=12, treatment_drop=0.05)
    result = simulation.simulate_rollbacks(rollout=rollout, experiments=200, seed=24)
    assert result.rate <= 0.05, result


def test_the_guardrail_boundary_is_one_sided_at_half_alpha_each_and_narrowest_where_tuned() -> None:
    # β solves β = 2γ·Φ(√(2 ln 1/β)): the two-sided formula at β is a one-sided boundary at γ.
    level = stats.one_sided_level(0.025)
    assert level == pytest.approx(2 * 0.025 * scipy_stats.norm.cdf(math.sqrt(2 * math.log(1 / level))), rel=1e-12)
    assert 0.049 < level < 0.05
    users = np.array([150.0, 300.0, 2_000.0, 20_000.0])
    whole = stats.guardrail_critical_z(effective_users=users, alpha=0.05, planned_samples_per_arm=2_000,
                                       early_samples_per_arm=300, segment=None)
    planned = stats.sequential_critical_z(information_fraction=users / 2_000, alpha=level)
    early = stats.sequential_critical_z(information_fraction=users / 300, alpha=level)
    assert np.allclose(whole, np.minimum(planned, early))
    assert whole[0] < planned[0] - 0.5  # at the first looks the early sequence is much narrower
    assert whole[2] == pytest.approx(planned[2])  # at the plan, the planned one
    # The rollout's first segment (no resume yet) judges at alpha/ζ(3), each sequence at half of it.
    first = stats.guardrail_critical_z(effective_users=users, alpha=0.05, planned_samples_per_arm=2_000,
                                       early_samples_per_arm=300)
    first_level = stats.one_sided_level(0.05 / ZETA_3 / 2)
    assert np.allclose(first, np.minimum(stats.sequential_critical_z(information_fraction=users / 2_000, alpha=first_level),
                                         stats.sequential_critical_z(information_fraction=users / 300, alpha=first_level)))
    assert (first > whole).all()


def test_resumes_spend_the_guardrail_alpha_so_any_number_stays_within_it() -> None:
    # A resume restarts the current stage's window and with it the guardrail's sequence: each segment
    # was a fresh chance of a false rollback at the whole alpha (3 resumes: 6.5-7 % at the tolerance
    # where alpha is 5 %). The rollout's k-th segment judges at alpha/(ζ(3)·k³), summing to alpha.
    levels = [stats.guardrail_segment_alpha(alpha=0.05, segment=k) for k in range(1, 10_001)]
    assert levels[0] == pytest.approx(0.05 / ZETA_3) and levels[1] == pytest.approx(levels[0] / 8)
    assert sum(levels) <= 0.05
    users = np.array([150.0, 2_000.0])
    by_segment = [stats.guardrail_critical_z(effective_users=users, alpha=0.05, planned_samples_per_arm=2_000,
                                             early_samples_per_arm=300, segment=k) for k in (1, 2, 3)]
    assert (by_segment[0] < by_segment[1]).all() and (by_segment[1] < by_segment[2]).all()
    # The same data: confidently beyond the tolerance in the first segment, not yet in the second.
    control, treatment = _binary_users(2_000, 0.90), _binary_users(2_000, 0.812)
    rule = dict(metric="success_rate", harmful_direction="decrease", threshold=0.05, strata=[Stratum(control, treatment)])
    first, second = evaluate_guardrail(**rule), evaluate_guardrail(**rule, segment=2)
    assert (first.state, second.state) == ("breach", "warning"), (first.reason, second.reason)
    assert "each end a 95.84 % bound" in first.reason and "each end a 99.48 % bound" in second.reason


def test_resumes_do_not_raise_false_rollbacks_at_the_tolerance_above_alpha() -> None:
    # One 50 % stage at exactly the tolerance, resumed three times at random minutes: every segment at
    # the whole alpha rolled back 6.5-7 % of 2 000 rollouts (the review's script); spent, within alpha.
    rollout = simulation.Rollout(stage_fractions=(0.5,), stage_hours=24, control_rate=0.75, treatment_drop=0.05)
    spent = simulation.simulate_guardrail_resumes(rollout=rollout, resumes=3, experiments=1_000, seed=21)
    whole = simulation.simulate_guardrail_resumes(rollout=rollout, resumes=3, experiments=1_000, seed=21, spend_on_resumes=False)
    assert spent.rate <= 0.05 < whole.rate, (spent.rate, whole.rate)


# ------------------------------------------------------------------ guardrail decisions


def _default_rule(metric: str) -> dict:
    """The rule an experiment gets by default (experiments/services.py default_guardrails), as stored on the experiment."""
    from experiments.services import default_guardrails

    return next(rule for rule in default_guardrails() if rule["metric"] == metric)


def evaluate_default(metric: str, *, control: RatioSummary, treatment: RatioSummary):
    return evaluate_guardrail(**_default_rule(metric), strata=[Stratum(control, treatment)])


def test_below_the_minimum_sample_the_guardrail_has_no_data() -> None:
    result = evaluate_default("success_rate", control=_binary_users(1_000, 0.95), treatment=_binary_users(40, 0.5))
    assert result.state == "no_data" and result.estimate is None
    assert "40 of the 150 users" in result.reason


def test_the_minimum_sample_itself_is_enough_to_judge() -> None:
    # no_data is "fewer than min_samples_per_arm users": 150 in each arm is judged, 149 in either is not.
    for control_users, treatment_users, judged in ((150, 150, True), (149, 150, False), (150, 149, False)):
        result = evaluate_default("success_rate", control=_binary_users(control_users, 0.9),
                                  treatment=_binary_users(treatment_users, 0.6))
        assert (result.state != "no_data") == judged, (control_users, treatment_users, result.state)
    assert result.state == "no_data"
    assert evaluate_default("success_rate", control=_binary_users(150, 0.9), treatment=_binary_users(150, 0.6)).state == "breach"


def test_success_rate_down_fifteen_points_is_a_breach() -> None:
    result = evaluate_default("success_rate", control=_binary_users(4_000, 0.95), treatment=_binary_users(1_000, 0.80))
    assert result.state == "breach", result.reason
    assert result.estimate == pytest.approx(-0.15)
    assert result.interval is not None and result.interval.high < -0.05
    assert "roll back" in result.reason


def test_a_gross_drop_on_few_users_is_a_breach() -> None:
    # 16 points down on 160 treatment users, near the minimum sample: the early sequence's bound is
    # already past the 5-point tolerance.
    result = evaluate_default("success_rate", control=_binary_users(1_500, 0.92), treatment=_binary_users(160, 0.76))
    assert result.interval is not None and result.interval.high < -0.05
    assert result.state == "breach", result.reason


def test_a_confident_harm_above_twice_the_tolerance_is_not_rolled_back_until_its_bound_clears_the_tolerance() -> None:
    # 12 points down on 150 treatment users: confidently worse (the interval excludes 0) and the
    # estimate beyond 2 × 5 points — the old shortcut rolled this back. The harm's bound (about 1.5
    # points) is within the tolerance, so it holds the stage instead.
    result = evaluate_default("success_rate", control=_binary_users(1_500, 0.90), treatment=_binary_users(150, 0.78))
    assert result.estimate is not None and result.estimate < -0.10
    assert result.interval is not None and -0.05 < result.interval.high < 0
    assert result.state == "warning", result.reason


def test_equal_arms_are_healthy() -> None:
    result = evaluate_default("success_rate", control=_binary_users(4_000, 0.95), treatment=_binary_users(1_000, 0.95))
    assert result.state == "healthy", result.reason


def test_a_drop_beyond_the_tolerance_without_enough_evidence_is_a_warning_not_a_breach() -> None:
    result = evaluate_default("success_rate", control=_binary_users(1_500, 0.90), treatment=_binary_users(150, 0.84))
    assert result.interval is not None and result.interval.contains(0.0)
    assert result.state == "warning", result.reason
    assert "not yet confident" in result.reason


def test_a_confident_drop_whose_bound_is_within_the_tolerance_waits_for_the_interval() -> None:
    # 7 points down, clearly real, but the interval still reaches into the tolerance: hold, not roll back.
    result = evaluate_default("success_rate", control=_binary_users(3_000, 0.95), treatment=_binary_users(400, 0.88))
    assert result.interval is not None and result.interval.high < 0 and result.interval.high > -0.05
    assert result.state == "warning", result.reason


def test_an_estimate_exactly_at_the_tolerance_is_within_it() -> None:
    # warning is "the estimate is beyond the tolerance": a drop of exactly 25 points against a 25-point
    # tolerance is not (0.75 − 0.5 is exact in floating point), a drop of 25.5 points is.
    def judged(treatment_rate: float) -> str:
        return evaluate_guardrail(metric="success_rate", harmful_direction="decrease", threshold=0.25,
                                  strata=[Stratum(_binary_users(200, 0.75), _binary_users(200, treatment_rate))]).state
    assert judged(0.5) == "healthy"
    assert judged(0.495) == "warning"


def test_a_certain_drop_of_exactly_the_tolerance_is_not_rolled_back() -> None:
    # The rule is "confidently worse by more than the tolerance". With no spread at all (every user 3 of
    # 4 against 4 of 4) the drop is known to be exactly 25 points: not more than a 25-point tolerance,
    # but more than a 20-point one.
    control = RatioSummary.from_users([(4.0, 4.0)] * 200)
    treatment = RatioSummary.from_users([(3.0, 4.0)] * 200)

    def judged(threshold: float) -> str:
        return evaluate_guardrail(metric="success_rate", harmful_direction="decrease", threshold=threshold,
                                  strata=[Stratum(control, treatment)]).state
    assert judged(0.25) == "healthy"
    assert judged(0.2) == "breach"


def test_the_rule_and_its_tolerance_read_in_the_direction_of_harm() -> None:
    # What people read beside the state: which way is worse, what happens, and the tolerance.
    success = stats.guardrail_rule_text(metric="success_rate", harmful_direction="decrease", threshold=0.05,
                                        threshold_kind="absolute", on_violation="breach", alpha=0.05)
    assert success.startswith("Rolls back when treatment's success_rate is confidently lower than control's by more "
                              "than the tolerance (down 0.05)")
    latency = stats.guardrail_rule_text(metric="latency_ms", harmful_direction="increase", threshold=0.3,
                                        threshold_kind="relative", on_violation="warning", alpha=0.05)
    assert latency.startswith("Warns when treatment's latency_ms is confidently higher than control's by more than "
                              "the tolerance (up 30%)")
    result = evaluate_guardrail(metric="success_rate", harmful_direction="decrease", threshold=0.05,
                                strata=[Stratum(_binary_users(200, 0.9), _binary_users(200, 0.9))])
    assert result.reason.endswith("tolerance down 0.05) — within the tolerance")


def test_a_real_but_small_drop_within_the_tolerance_is_healthy() -> None:
    result = evaluate_default("success_rate", control=_binary_users(50_000, 0.95), treatment=_binary_users(50_000, 0.93))
    assert result.interval is not None and result.interval.high < 0  # the drop is real …
    assert result.state == "healthy", result.reason  # … and within 5 points


def test_latency_up_fifty_percent_is_a_warning_by_default() -> None:
    result = evaluate_default("latency_ms", control=_users_with_mean(3_000, 800.0, 200.0),
                              treatment=_users_with_mean(1_000, 1_200.0, 300.0))
    assert result.state == "warning", result.reason
    assert result.interval is not None and result.interval.low > 0.30 * 800.0
    assert "review the candidate" in result.reason


def test_latency_up_ten_percent_is_within_a_thirty_percent_limit() -> None:
    result = evaluate_default("latency_ms", control=_users_with_mean(3_000, 800.0, 200.0),
                              treatment=_users_with_mean(1_000, 880.0, 200.0))
    assert result.state == "healthy", result.reason


def test_a_relative_tolerance_counts_the_uncertainty_of_control_in_the_tolerance_itself() -> None:
    # "latency up more than 30 %" tests treatment − 1.3·control, whose variance has 1.3² on control's:
    # with a noisy control (200 users, SD 400) the bound is about 26 ms wider than with 1² — enough
    # to keep a +42 % estimate from rolling back, while +50 % still does.
    control = _users_with_mean(200, 800.0, 400.0)

    def judge(treatment_mean: float):
        return evaluate_guardrail(metric="latency_ms", harmful_direction="increase", threshold=0.3,
                                  threshold_kind="relative", strata=[Stratum(control, _users_with_mean(2_000, treatment_mean, 100.0))])

    borderline = judge(1_137.0)
    assert borderline.interval is not None and borderline.interval.low > 0.3 * 800.0  # the 1² bound: past 240 ms …
    assert borderline.state == "warning", borderline.reason  # … the (1.3)² one is not
    assert judge(1_200.0).state == "breach"


def test_harm_in_the_other_direction_is_not_harm() -> None:
    faster = evaluate_guardrail(
        metric="latency_ms", harmful_direction="increase", threshold=0.3, threshold_kind="relative",
        strata=[Stratum(_users_with_mean(3_000, 800.0, 200.0), _users_with_mean(1_000, 400.0, 100.0))],
    )
    assert faster.state == "healthy"


def test_guardrail_refuses_meaningless_settings() -> None:
    with pytest.raises(ValueError, match="min_samples_per_arm"):
        evaluate_guardrail(metric="m", harmful_direction="decrease", threshold=0.05,
                           strata=[Stratum(_binary_users(10, 0.5), _binary_users(10, 0.5))], min_samples_per_arm=1)
    for alpha in (0.0, 1.0):  # a level is strictly between 0 and 1
        with pytest.raises(ValueError, match="alpha must be in"):
            stats.sequential_critical_z(information_fraction=1.0, alpha=alpha)
    for alpha in (0.0, 0.5):  # a one-sided level is below a half
        with pytest.raises(ValueError, match="alpha must be in"):
            stats.one_sided_level(alpha)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        evaluate_guardrail(metric="m", harmful_direction="decrease", threshold=-0.01,
                           strata=[Stratum(_binary_users(10, 0.5), _binary_users(10, 0.5))], min_samples_per_arm=2)


def test_a_zero_tolerance_and_a_two_user_minimum_are_meaningful_settings() -> None:
    # A tolerance of 0 rolls back on any confident harm; two users per arm are enough for a variance.
    result = evaluate_guardrail(metric="m", harmful_direction="decrease", threshold=0.0, min_samples_per_arm=2,
                                strata=[Stratum(_binary_users(400, 0.9), _binary_users(400, 0.5))])
    assert result.state == "breach"
    two = evaluate_guardrail(metric="m", harmful_direction="decrease", threshold=0.05, min_samples_per_arm=2,
                             strata=[Stratum(_binary_users(2, 0.5), _binary_users(2, 0.5))])
    assert two.state != "no_data"


def test_numbers_for_people_never_use_scientific_notation() -> None:
    assert stats.format_number(8e-05) == "0.00008"
    assert stats.format_number(4.337e-19, signed=True) == "+0.00"
    assert stats.format_number(-0.0449) == "-0.0449"
    assert stats.format_number(1234.5) == "1,234"
    assert "e" not in stats.format_number(1.23e-7)
    # About four significant digits: two decimals from 1, none from 100; what is not a number says so.
    assert (stats.format_number(1.0), stats.format_number(99.99), stats.format_number(100.0)) == ("1.00", "99.99", "100")
    assert (stats.format_number(math.inf), stats.format_number(math.nan)) == ("inf", "nan")


def test_a_cost_guardrail_reads_in_dollars_with_sub_cent_amounts() -> None:
    # Was: "(difference +0.00, 95 % any-time interval +0.00 to +0.00 …)" for costs of a few hundredths of a cent.
    from experiments.results import usd_amount

    result = evaluate_guardrail(
        metric="cost_per_request", harmful_direction="increase", threshold=0.5, threshold_kind="relative",
        strata=[Stratum(_users_with_mean(1_000, 0.000038, 0.000004), _users_with_mean(1_000, 0.000040, 0.000004))],
        format_value=usd_amount,
    )
    assert ("treatment $0.000040 vs control $0.000038 (difference +$0.000002, any-time interval +$0.000001 to "
            "+$0.000003, each end a 95.84 % bound;") in result.reason
    assert "+0.00" not in result.reason
    assert usd_amount(-0.0000375, signed=True) == "-$0.000038" and usd_amount(1.5) == "$1.50"


# ------------------------------------------------------------------ the latency guardrail over a rollout


@pytest.mark.parametrize("rule, change", [
    (simulation.LatencyRollout(), 0.6),
    (simulation.COST_ROLLOUT, 1.0),  # cost per request up more than 50 %
    (simulation.QUALITY_ROLLOUT, -0.07),  # quality down more than 0.05 (absolute, a decrease)
])
def test_the_latency_guardrail_simulation_sums_and_judges_as_the_product_does(rule, change) -> None:
    """simulation.simulate_latency_guardrail (bench/decisions, parts latency_guardrail, cost_guardrail,
    quality_guardrail) at a smaller scale: its per-cell sums at each look are those of the real
    (uncapped) values of the users arrived by then, and its vectorised verdict is
    stats.evaluate_guardrail's, for each default warning rule."""
    from dataclasses import replace

    setup = replace(rule, rollout=simulation.Rollout(stage_hours=3))
    users = simulation._latency_users(np.random.default_rng(7), setup, change)
    first = 40
    sums = simulation.cell_sums(users, setup.rollout.minutes, first)
    fire, hold = simulation.latency_guardrail_margins(sums, setup)
    states = set()
    for look in range(first, setup.rollout.minutes, 9):
        for cell in range(6):
            mine = (users.minute <= look) & (users.cell == cell)
            x, y = users.latency[mine], users.requests[mine]
            assert sums[look - first, cell] == pytest.approx([x.size, x.sum(), x @ x, y.sum(), y @ y, x @ y], rel=1e-12)
        state = simulation.latency_guardrail_state(sums[look - first], setup)
        index = look - first
        vectorised = "no_data" if np.isnan(fire[index]) else "breach" if fire[index] > 0 else "warning" if hold[index] > 0 else "healthy"
        assert state == vectorised
        states.add(state)
    assert states >= {"warning", "breach"}  # the comparison saw the verdicts that matter


def test_the_latency_guardrail_catches_a_doubling_and_rarely_warns_confidently_in_an_aa() -> None:
    setup = simulation.LatencyRollout(rollout=simulation.Rollout(stage_hours=6))
    same = simulation.simulate_latency_guardrail(setup=setup, increase=0.0, experiments=30, seed=31)
    doubled = simulation.simulate_latency_guardrail(setup=setup, increase=1.0, experiments=10, seed=32)
    assert same.fired.rate <= 0.05 and same.disagreements == 0
    assert doubled.fired.rate == 1.0 and doubled.disagreements == 0


def test_the_quality_simulation_moves_treatments_mean_score_by_exactly_the_change() -> None:
    setup = simulation.QUALITY_ROLLOUT
    users = simulation._latency_users(np.random.default_rng(3), setup, -0.05)
    treated = users.cell % 2 == 1
    means = [users.latency[arm].sum() / users.requests[arm].sum() for arm in (~treated, treated)]
    assert means[0] == pytest.approx(0.70, abs=0.003) and means[1] - means[0] == pytest.approx(-0.05, abs=0.006)
    assert users.latency.min() >= 0 and (users.latency <= users.requests).all()  # scores in [0, 1]


def test_the_default_quality_and_cost_warnings_rarely_fire_at_their_tolerance_and_catch_twice_it() -> None:
    for setup, tolerance in ((simulation.QUALITY_ROLLOUT, -0.05), (simulation.COST_ROLLOUT, 0.50)):
        from dataclasses import replace

        short = replace(setup, rollout=simulation.Rollout(stage_hours=6))
        at = simulation.simulate_latency_guardrail(setup=short, increase=tolerance, experiments=20, seed=41)
        twice = simulation.simulate_latency_guardrail(setup=short, increase=2 * tolerance, experiments=8, seed=42)
        assert at.fired.rate <= 0.05 and at.disagreements == 0, setup.guardrail_metric
        assert twice.fired.rate == 1.0 and twice.disagreements == 0, setup.guardrail_metric


def test_the_success_rate_hold_is_the_estimate_beyond_the_tolerance_not_the_confident_verdict() -> None:
    """simulate_rollbacks(hold=True) (bench part success_rate_hold): at a drop of exactly the tolerance the
    estimate is beyond it at some look in most rollouts, while the confident rollback stays within α."""
    rollout = simulation.Rollout(stage_hours=6, treatment_drop=0.05)
    held = simulation.simulate_rollbacks(rollout=rollout, experiments=40, seed=25, hold=True)
    rolled_back = simulation.simulate_rollbacks(rollout=rollout, experiments=40, seed=25)
    assert held.rate >= 0.9 and rolled_back.rate <= 0.05, (held.rate, rolled_back.rate)
    assert held.median_hours is not None and held.median_hours < 1.0
