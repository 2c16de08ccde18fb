"""Users who return across stages: the results page's variance clustered by user
(experiments/stats.py, "Users return across stages") — a hand-computed case, the reduction to the
independent-strata variance when every user is new, the wider variance of persistent users, Fieller
with correlated arms, and (seeded, small scale) the A/A false-positive rate bench/decisions publishes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import simulation, stats
from experiments.stats import RatioSummary, SharedUsers, Stratum


def _independent(strata: list[Stratum]) -> list[Stratum]:
    """The same cells with the shared-user sums dropped: the stages as independent strata."""
    return [Stratum(stratum.control, stratum.treatment) for stratum in strata]


def test_a_hand_computed_case_of_two_stages_with_returning_users() -> None:
    # (successes, outcomes) per user; A and B stay in control, C moves from control to treatment,
    # D stays in treatment, E leaves after stage 0, F arrives in stage 1.
    stage_0 = {"control": {"A": (1, 1), "B": (0, 1), "C": (1, 2)}, "treatment": {"D": (1, 1), "E": (0, 1)}}
    stage_1 = {"control": {"A": (1, 1), "B": (0, 2)}, "treatment": {"C": (2, 2), "D": (1, 1), "F": (0, 1)}}
    users = ["A", "B", "C", "D", "E", "F"]
    x, y, treated = np.zeros((6, 2)), np.zeros((6, 2)), np.zeros((6, 2), dtype=bool)
    for stage, arms in enumerate((stage_0, stage_1)):
        for arm, members in arms.items():
            for user, (successes, outcomes) in members.items():
                row = users.index(user)
                x[row, stage], y[row, stage], treated[row, stage] = successes, outcomes, arm == "treatment"
    strata = stats.strata_from_users(x, y, treated)
    assert [(s.control.users, s.treatment.users) for s in strata] == [(3, 2), (2, 3)]
    assert {(pair.first, pair.second, pair.users) for pair in strata[1].shared} == {
        ((0, "control"), (1, "control"), 2),  # A and B
        ((0, "control"), (1, "treatment"), 1),  # C
        ((0, "treatment"), (1, "treatment"), 1),  # D
    }
    # By hand. Cell means: stage 0 control 2/4, treatment 1/2; stage 1 control 1/3, treatment 3/4.
    # CMH weights 3·2/5 = 2·3/5: one half each. Each cell's scale: w·√(n/(n−1)) / Y.
    k_c0, k_t0 = 0.5 * math.sqrt(3 / 2) / 4, 0.5 * math.sqrt(2 / 1) / 2
    k_c1, k_t1 = 0.5 * math.sqrt(2 / 1) / 3, 0.5 * math.sqrt(3 / 2) / 4
    # φ_u = Σ treatment k·(x − m·y) − Σ control k·(x − m·y)
    phi = {
        "A": -(k_c0 * (1 - 0.5 * 1) + k_c1 * (1 - 1 / 3 * 1)),
        "B": -(k_c0 * (0 - 0.5 * 1) + k_c1 * (0 - 1 / 3 * 2)),
        "C": -k_c0 * (1 - 0.5 * 2) + k_t1 * (2 - 0.75 * 2),
        "D": k_t0 * (1 - 0.5 * 1) + k_t1 * (1 - 0.75 * 1),
        "E": k_t0 * (0 - 0.5 * 1),
        "F": k_t1 * (0 - 0.75 * 1),
    }
    estimate = stats.stratified_estimate(strata)
    assert estimate is not None
    assert estimate.difference == pytest.approx(0.5 * (0.5 - 0.5) + 0.5 * (0.75 - 1 / 3))
    assert estimate.variance_of_difference == pytest.approx(sum(value**2 for value in phi.values()), rel=1e-12)
    assert estimate.variance_of_difference == pytest.approx(0.2057534479, rel=1e-9)
    # C was in both arms, but its stage-0 rate equals its cell's mean, so its control term is 0 and
    # the arms do not covary here; A and B (control twice) and D (treatment twice) widen it.
    assert estimate.covariance_of_means == pytest.approx(0.0, abs=1e-15)
    independent = stats.stratified_estimate(_independent(strata))
    assert independent is not None
    assert independent.variance_of_difference == pytest.approx(sum(
        k**2 * e**2 for k, e in [(k_c0, 0.5), (k_c0, -0.5), (k_c1, 2 / 3), (k_c1, -2 / 3), (k_t0, 0.5), (k_t0, -0.5),
                                 (k_t1, 0.5), (k_t1, 0.25), (k_t1, -0.75)]
    ), rel=1e-12)
    assert estimate.variance_of_difference > independent.variance_of_difference


def test_with_fresh_users_in_every_stage_the_variance_is_the_independent_strata_one_exactly() -> None:
    rollout = simulation.Rollout(user_population=2_000, users_per_hour=200, within_user_correlation=0.2, treatment_drop=0.02)
    successes, outcomes, treated, _ = simulation.simulate_users(np.random.default_rng(3), rollout, returning=False)
    strata = stats.strata_from_users(successes, outcomes, treated)
    assert all(stratum.shared == () for stratum in strata)
    clustered, independent = stats.compare(strata), stats.compare(_independent(strata))
    assert clustered == independent  # to the last bit
    # ... and that is each cell's delta-method variance, weighted: Σ_s w_s² (Var c_s + Var t_s).
    estimate = stats.stratified_estimate(strata)
    assert estimate is not None
    sizes = np.array([[s.control.users, s.treatment.users] for s in strata], dtype=float)
    weights = sizes.prod(axis=1) / sizes.sum(axis=1)
    weights /= weights.sum()
    by_cell = sum(w**2 * (s.control.variance_of_mean + s.treatment.variance_of_mean) for w, s in zip(weights, strata))
    assert estimate.variance_of_difference == pytest.approx(by_cell, rel=1e-12)


def test_users_who_keep_their_behaviour_across_stages_widen_the_interval() -> None:
    """Persistent users (propensity correlation 0.2, ~5 outcomes a stage) counted in several stages:
    the clustered standard error is larger than the independent-strata one, in every rollout."""
    rollout = simulation.Rollout(user_population=3_000, users_per_hour=300, within_user_correlation=0.2)
    rng = np.random.default_rng(4)
    for _ in range(5):
        strata = stats.strata_from_users(*simulation.simulate_users(rng, rollout)[:3])
        clustered, independent = stats.stratified_estimate(strata), stats.stratified_estimate(_independent(strata))
        assert clustered is not None and independent is not None
        assert clustered.standard_error > 1.05 * independent.standard_error
        assert clustered.difference == independent.difference and clustered.degrees_of_freedom == independent.degrees_of_freedom


def test_p_value_and_fieller_interval_agree_when_users_cross_arms() -> None:
    """Users in control at 10 % and treatment at 50 % make the arms' means covary; Fieller's interval
    takes the covariance, so it still excludes 0 exactly when p < 0.05."""
    rollout = simulation.Rollout(user_population=1_500, users_per_hour=150, within_user_correlation=0.3,
                                 stage_fractions=(0.1, 0.5), treatment_drop=0.02)
    rng = np.random.default_rng(5)
    checked = with_covariance = 0
    for _ in range(60):
        strata = stats.strata_from_users(*simulation.simulate_users(rng, rollout)[:3])
        estimate, comparison = stats.stratified_estimate(strata), stats.compare(strata)
        assert estimate is not None and comparison is not None and comparison.p_value is not None
        with_covariance += estimate.covariance_of_means != 0
        if comparison.relative_interval is None:
            continue
        checked += 1
        assert (comparison.p_value < 0.05) == (not comparison.relative_interval.contains(0.0))
        assert (comparison.p_value < 0.05) == (not comparison.absolute_interval.contains(0.0))  # type: ignore[union-attr]
    assert checked == 60 and with_covariance == 60


def test_shared_users_must_name_an_earlier_cell_and_a_cell_of_their_stage() -> None:
    cell = RatioSummary.from_users([(1.0, 1.0), (0.0, 1.0), (1.0, 1.0)])
    misplaced = SharedUsers(first=(0, "control"), second=(0, "control"), users=1, numerator_products=1.0,
                            numerator_denominator=1.0, denominator_numerator=1.0, denominator_products=1.0)
    with pytest.raises(ValueError, match="an earlier cell"):
        stats.stratified_estimate([Stratum(cell, cell, (misplaced,))])
    later = SharedUsers(first=(0, "control"), second=(1, "control"), users=1, numerator_products=1.0,
                        numerator_denominator=1.0, denominator_numerator=1.0, denominator_products=1.0)
    with pytest.raises(ValueError, match="must be in this stage"):
        stats.stratified_estimate([Stratum(cell, cell, (later,)), Stratum(cell, cell)])


def test_a_user_in_both_arms_of_one_stage_makes_the_arms_covary_by_its_own_terms() -> None:
    # The results selector pairs a stage's control with its treatment when a user has outcomes in both
    # (its SQL: same stage, control before treatment): the first cell is then in the same stage, which
    # is "an earlier cell" too. C is in both arms here; its two terms enter Σ_u φ_u² as one user's.
    control = {"A": (1, 1), "B": (0, 1), "C": (2, 2)}
    treatment = {"C": (0, 1), "D": (1, 1), "E": (1, 2)}
    (cx, cy), (tx, ty) = control["C"], treatment["C"]
    both = SharedUsers(first=(0, "control"), second=(0, "treatment"), users=1, numerator_products=cx * tx,
                       numerator_denominator=cx * ty, denominator_numerator=cy * tx, denominator_products=cy * ty)
    stratum = Stratum(RatioSummary.from_users(control.values()), RatioSummary.from_users(treatment.values()), (both,))
    # One stage: weight 1. Means 3/4 and 2/4; each cell's scale √(n/(n−1)) / Y.
    k = math.sqrt(3 / 2) / 4
    phi = {user: 0.0 for user in "ABCDE"}
    for user, (x, y) in treatment.items():
        phi[user] += k * (x - 0.5 * y)
    for user, (x, y) in control.items():
        phi[user] -= k * (x - 0.75 * y)
    estimate = stats.stratified_estimate([stratum])
    assert estimate is not None
    assert estimate.covariance_of_means == pytest.approx(k * k * (cx - 0.75 * cy) * (tx - 0.5 * ty), rel=1e-12)
    assert estimate.variance_of_difference == pytest.approx(sum(value**2 for value in phi.values()), rel=1e-12)


def test_a_stage_left_out_of_the_estimate_adds_no_shared_terms() -> None:
    # Stage 0 has a single treatment user: not estimable, so its users shared with stage 1 count nowhere.
    x = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    treated = np.array([[False, False], [False, False], [True, True], [True, True], [True, True]])
    strata = stats.strata_from_users(x, y, treated)
    assert strata[0].treatment.users == 1 and strata[1].shared
    assert stats.stratified_estimate(strata) == stats.stratified_estimate([Stratum(RatioSummary.from_users([]), strata[0].treatment),
                                                                           Stratum(strata[1].control, strata[1].treatment)])


def test_a_and_a_with_returning_users_rejects_about_alpha_only_when_clustered() -> None:
    """bench/decisions' returning-users A/A at a smaller scale (seeded): the clustered standard error
    matches the estimate's real spread; the independent-strata one understates it."""
    rollout = simulation.Rollout(user_population=4_000, users_per_hour=400, within_user_correlation=0.2)
    clustered, independent = simulation.final_estimates(rollout=rollout, experiments=300, seed=21)
    assert 0.88 <= clustered.sd_over_se <= 1.12, clustered.sd_over_se
    assert clustered.rejection_rate() <= 0.09 and clustered.coverage >= 0.91
    assert independent.sd_over_se >= 1.12, independent.sd_over_se
    assert independent.rejection_rate() > clustered.rejection_rate()
