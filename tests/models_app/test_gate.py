"""The benchmark gate: known answers for the paired bootstrap and the verdict rule (pure: no database)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from models_app.benchmarks.breakdown import regressions, score_histogram, tag_breakdown
from models_app.benchmarks.reruns import ZETA_3, confidence_text, rerun_alpha, rerun_confidence
from models_app.benchmarks.stats import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    RULE_AT_LEAST_THRESHOLD,
    RULE_IMPROVES_AND_REACHES,
    PairedScore,
    bootstrap_means,
    compare_paired,
    expanded_tail,
    fail_side_high,
    fieller_interval,
    gate_verdict,
    more_cases_to_decide,
    quantile_mc_se,
    rule_text,
)

MIN_CASES = 20  # BENCHMARK_MIN_CASES's default
AT_LEAST, IMPROVES = RULE_AT_LEAST_THRESHOLD, RULE_IMPROVES_AND_REACHES
# The bootstrap and rule tests on a handful of cases waive the minimum, to check the arithmetic alone.
NO_MINIMUM = 1


def pairs(baseline: list[float], candidate: list[float], tags: tuple[str, ...] = ()) -> list[PairedScore]:
    return [PairedScore(key=f"c{i:03d}", baseline=b, candidate=c, tags=tags) for i, (b, c) in enumerate(zip(baseline, candidate))]


# ---- the verdict rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "improvement, low, high, verdict",
    [
        (0.10, 0.02, 0.18, PASS),  # at least the threshold, interval above zero
        (0.08, 0.001, 0.20, PASS),  # exactly the threshold counts
        (0.10, -0.01, 0.21, INCONCLUSIVE),  # enough on average, but zero is plausible
        (0.05, 0.01, 0.09, INCONCLUSIVE),  # below the threshold, but the interval still reaches it
        (0.07, 0.01, 0.079, FAIL),  # positive, yet even the optimistic end is below the threshold
        (0.0, -0.05, 0.05, FAIL),  # no change
        (-0.20, -0.30, -0.10, FAIL),  # worse
        (0.10, 0.0, 0.20, INCONCLUSIVE),  # a lower bound of exactly zero is not above zero
        (0.05, 0.01, 0.08, INCONCLUSIVE),  # an upper end exactly at the threshold still reaches it: not FAIL
    ],
)
def test_improves_and_reaches_rule_known_answers(improvement, low, high, verdict):
    assert gate_verdict(relative_improvement=improvement, ci_low=low, ci_high=high, threshold=0.08, rule=IMPROVES) == verdict


@pytest.mark.parametrize(
    "improvement, low, high, verdict",
    [
        (0.20, 0.08, 0.30, PASS),  # the lower end at the threshold: confident of at least 8 %
        (0.10, 0.02, 0.18, INCONCLUSIVE),  # improves, confidently, but not confidently by 8 %
        (0.30, 0.079, 0.50, INCONCLUSIVE),  # just short of the threshold at the lower end
        (0.07, 0.01, 0.079, FAIL),  # confidently below the threshold
        (0.07, 0.01, 0.08, INCONCLUSIVE),  # FAIL is an upper end below the threshold, not at it
        (-0.20, -0.30, -0.10, FAIL),
    ],
)
def test_at_least_threshold_rule_known_answers(improvement, low, high, verdict):
    assert gate_verdict(relative_improvement=improvement, ci_low=low, ci_high=high, threshold=0.08, rule=AT_LEAST) == verdict


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown gate rule 'sometimes'"):
        gate_verdict(relative_improvement=0.1, ci_low=0.09, ci_high=0.2, threshold=0.08, rule="sometimes")


def test_more_cases_known_answers():
    # Heading for PASS: the lower half-width 0.12 must shrink below 0.10 → n·(0.12/0.10)² = 144 cases.
    assert more_cases_to_decide(n=100, relative_improvement=0.10, ci_low=-0.02, ci_high=0.22, threshold=0.08, rule=IMPROVES) == 44
    # Under at_least_threshold the lower end must rise to the threshold: n·(0.12/0.02)² = 3 600 cases.
    assert more_cases_to_decide(n=100, relative_improvement=0.10, ci_low=-0.02, ci_high=0.22, threshold=0.08, rule=AT_LEAST) == 3500
    # Heading for FAIL: the upper half-width 0.06 must shrink below 0.08 − 0.05 → n·(0.06/0.03)² = 400 cases.
    assert more_cases_to_decide(n=100, relative_improvement=0.05, ci_low=0.0, ci_high=0.11, threshold=0.08, rule=IMPROVES) == 300
    # On the boundary itself no number of cases decides it.
    assert more_cases_to_decide(n=100, relative_improvement=0.0, ci_low=-0.1, ci_high=0.1, threshold=0.0, rule=IMPROVES) is None


# ---- the paired bootstrap --------------------------------------------------------------------------------------


def test_a_constant_improvement_has_a_zero_width_interval_and_passes():
    result = compare_paired(pairs([0.5] * 40, [0.6] * 40), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=1)
    assert result.relative_improvement == pytest.approx(0.2)
    assert result.ci_low == pytest.approx(0.2) and result.ci_high == pytest.approx(0.2)
    assert result.verdict == PASS and result.wins == 40 and result.regressions == []


def test_identical_models_fail_the_gate_on_a_large_suite():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    result = compare_paired(pairs(scores, scores), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert (result.relative_improvement, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert result.verdict == FAIL and result.ties == 100
    assert "even its optimistic end is not enough" in result.reasons[1]


def test_identical_models_on_40_cases_are_not_rejected_for_want_of_a_single_win():
    # 40 ties and no disagreement: a candidate 8 % better than a 0.6 baseline wins at least 4.8 % of the
    # cases, so 40 cases without a win happen with probability up to 0.952⁴⁰ ≈ 14 % — no ground for FAIL.
    # The zero-width interval alone would FAIL; one more candidate win lifts its upper end to ≈ +14 %.
    scores = [1.0, 0.0, 1.0, 1.0, 0.0] * 8
    result = compare_paired(pairs(scores, scores), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.verdict == INCONCLUSIVE
    assert "one more where the candidate is right and the baseline wrong" in result.reasons[1]
    assert "+14.0 %" in result.reasons[1] and "not FAIL" in result.reasons[1]


def test_two_case_bootstrap_known_answer():
    # Resampling two cases gives the candidate mean 1, ½ or 0 with probabilities ¼, ½, ¼, so the
    # relative change is 0, −½ or −1: the 95 % interval spans exactly [−1, 0].
    result = compare_paired(pairs([1.0, 1.0], [1.0, 0.0]), threshold=0.08, rule=AT_LEAST, min_cases=NO_MINIMUM, resamples=2000, seed=3)
    assert result.relative_improvement == pytest.approx(-0.5)
    assert result.bootstrap_ci == (pytest.approx(-1.0), pytest.approx(0.0))
    # The reported interval is the hull with Fieller's: with t₁ = 12.71 on two cases, −0.5 ± 12.71·0.5.
    assert (result.ci_low, result.ci_high) == (pytest.approx(-0.5 - 12.7062 * 0.5, abs=1e-3), pytest.approx(5.853, abs=1e-3))
    assert result.verdict == INCONCLUSIVE  # two cases cannot rule out +8 % (the bootstrap alone said FAIL)
    assert result.delta_sd == pytest.approx(math.sqrt(0.5))  # two cases have a spread (deltas 0 and −1)
    assert [r.key for r in result.regressions] == ["c001"]


def test_interval_agrees_with_the_normal_approximation_on_a_large_suite():
    # Baseline fixed at 0.5, candidate right on 300 of 500 cases: relative improvement = 2·mean − 1 = 0.2,
    # standard error of the mean √(0.6·0.4/500) → interval 0.2 ± 2·1.96·0.0219 ≈ [0.114, 0.286].
    candidate = [1.0] * 300 + [0.0] * 200
    result = compare_paired(pairs([0.5] * 500, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=4000, seed=11)
    half_width = 2 * 1.959964 * math.sqrt(0.6 * 0.4 / 500)
    assert result.relative_improvement == pytest.approx(0.2)
    assert result.ci_low == pytest.approx(0.2 - half_width, abs=0.01)
    assert result.ci_high == pytest.approx(0.2 + half_width, abs=0.01)
    assert result.verdict == PASS


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(5)
    baseline = list(rng.integers(0, 2, 60).astype(float))
    candidate = list(rng.integers(0, 2, 60).astype(float))
    first = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=42)
    again = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=42)
    other = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=43)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_the_pairing_matters():
    # The candidate is right exactly where the baseline is, plus on 6 more of 60 cases: no case got
    # worse, so every paired resample shows a gain, although 6 wins in 60 is a small difference of means.
    baseline = [1.0] * 30 + [0.0] * 30
    candidate = [1.0] * 36 + [0.0] * 24
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=IMPROVES, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert result.relative_improvement == pytest.approx(0.2)
    assert result.ci_low > 0 and result.verdict == PASS and result.losses == 0


def test_inconclusive_says_how_many_more_cases_would_decide():
    rng = np.random.default_rng(7)
    baseline = rng.integers(0, 2, 40).astype(float)
    flips = rng.random(40)
    candidate = np.where(flips < 0.25, 1.0, np.where(flips > 0.85, 0.0, baseline))
    result = compare_paired(pairs(list(baseline), list(candidate)), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert result.verdict == INCONCLUSIVE
    assert result.more_cases_needed is not None and result.more_cases_needed > 0
    assert f"about {result.more_cases_needed} more case(s) would decide it" in result.reasons[-1]


def test_a_zero_baseline_is_judged_on_the_absolute_gain():
    result = compare_paired(pairs([0.0] * 20, [1.0] * 10 + [0.0] * 10), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert result.verdict == PASS and result.relative_improvement is None and result.ci_low is None
    assert "unbounded" in result.reasons[0]
    nothing = compare_paired(pairs([0.0] * 20, [0.0] * 20), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert nothing.verdict == FAIL


def test_no_paired_case_is_inconclusive():
    result = compare_paired([], threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, seed=0)
    assert result.verdict == INCONCLUSIVE and result.n == 0


def test_resamples_and_confidence_are_validated():
    with pytest.raises(ValueError):
        compare_paired(pairs([1.0], [1.0]), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=0, seed=0)
    with pytest.raises(ValueError):
        compare_paired(pairs([1.0], [1.0]), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, confidence=1.0, seed=0)
    with pytest.raises(ValueError, match="min_cases"):
        compare_paired(pairs([1.0], [1.0]), threshold=0.08, rule=AT_LEAST, min_cases=0, seed=0)


# ---- resamples where the baseline scored nothing ---------------------------------------------------------------


def test_a_resample_where_both_models_score_zero_is_no_change_not_nan():
    # Baseline right on case 0 only; the candidate also on cases 7-9, and never worse. A resample missing
    # case 0 has a baseline mean of 0: with a gain the change is +inf, without one (no 0, 7, 8 or 9
    # drawn) it is 0 — sign(0)·inf used to make it NaN, and a NaN quantile made the verdict meaningless.
    # Known answer: no change is negative, and P(no 7, 8, 9 drawn) = 0.7¹⁰ ≈ 2.8 % > 2.5 %, so the lower
    # bound is exactly 0; P(baseline mean 0) = 0.9¹⁰ ≈ 35 % > 2.5 %, so the upper end is +inf.
    baseline = [1.0] + [0.0] * 9
    candidate = [1.0] + [0.0] * 6 + [1.0, 1.0, 1.0]
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=NO_MINIMUM, resamples=20_000, seed=0)

    assert result.relative_improvement == pytest.approx(3.0)
    assert result.verdict == INCONCLUSIVE  # enough on average, but the lower bound 0 is not above zero
    assert "[+0.0 %, +∞]" in result.reasons[1] and not any("nan" in reason for reason in result.reasons)
    # An unbounded end is not an interval one can print: both ends are left out, and a reason says why.
    assert (result.ci_low, result.ci_high) == (None, None)
    assert "no finite end" in result.reasons[-1]


def test_a_baseline_that_scores_on_few_cases_passes_without_a_half_open_interval():
    # Baseline right on 2 of 30 cases, the candidate on 20 (including those 2): +900 %. About 13 % of
    # resamples (28/30)³⁰ miss both baseline hits, so the interval's upper end is +inf.
    baseline = [1.0] * 2 + [0.0] * 28
    candidate = [1.0] * 20 + [0.0] * 10
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=IMPROVES, min_cases=MIN_CASES, resamples=2000, seed=0)

    assert result.relative_improvement == pytest.approx(9.0)
    assert result.verdict == PASS and "lies entirely above zero" in result.reasons[1]
    assert (result.ci_low, result.ci_high) == (None, None)
    # The count named is of the resamples whose baseline mean is 0 (the same seed draws the same resamples).
    base_means, _ = bootstrap_means(np.array(baseline), np.array(candidate), resamples=2000, seed=0)
    zero = int((base_means == 0).sum())
    assert 0.09 < zero / 2000 < 0.17
    assert f"{zero} of 2000 resamples drew only cases where the baseline scored 0" in result.reasons[-1]
    json.dumps(result.as_dict(), allow_nan=False)  # nothing infinite or NaN reaches the stored JSON


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.sampled_from([0.0, 0.5, 1.0])), min_size=1, max_size=25))
def test_the_interval_is_two_finite_numbers_or_none_and_nothing_is_nan(scores):
    baseline, candidate = [b for b, _ in scores], [c for _, c in scores]
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=NO_MINIMUM, resamples=2000, seed=0)

    assert (result.ci_low is None) == (result.ci_high is None)
    if result.ci_low is not None:
        assert math.isfinite(result.ci_low) and math.isfinite(result.ci_high) and result.ci_low <= result.ci_high
    json.dumps(result.as_dict(), allow_nan=False)
    assert not any("nan" in reason.lower() for reason in result.reasons)


# ---- the minimum number of cases ----------------------------------------------------------------------------------


def test_too_few_cases_are_inconclusive_however_clear_they_look():
    # Two cases with the same +20 % gain: a zero-width interval above zero, which would PASS.
    two = pairs([0.5, 0.5], [0.6, 0.6])
    assert compare_paired(two, threshold=0.08, rule=AT_LEAST, min_cases=2, resamples=2000, seed=0).verdict == PASS

    result = compare_paired(two, threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert result.verdict == INCONCLUSIVE and result.more_cases_needed == 18
    assert result.reasons[0] == (
        "only 2 paired case(s): the gate needs at least 20 to decide, so the verdict is INCONCLUSIVE; add cases to the suite"
    )
    # The same holds for a clear loss: too few cases to reject a candidate either.
    assert compare_paired(pairs([1.0, 1.0], [0.0, 0.0]), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, seed=0).verdict == INCONCLUSIVE


def test_the_minimum_itself_is_enough_to_decide():
    at_minimum = compare_paired(pairs([0.5] * 20, [0.6] * 20), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    one_short = compare_paired(pairs([0.5] * 19, [0.6] * 19), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=0)
    assert (at_minimum.verdict, one_short.verdict) == (PASS, INCONCLUSIVE)
    assert at_minimum.more_cases_needed is None and one_short.more_cases_needed == 1


# ---- breakdowns ---------------------------------------------------------------------------------------------------


def test_per_tag_breakdown_and_regressions_worst_first():
    data = [
        PairedScore("a", 1.0, 0.0, ("difficulty:hard", "json")),
        PairedScore("b", 0.5, 1.0, ("difficulty:hard",)),
        PairedScore("c", 1.0, 0.5, ("difficulty:easy",)),
        PairedScore("d", 0.0, 0.0, ("difficulty:easy",)),
    ]
    rows = {row.tag: row for row in tag_breakdown(data)}
    assert list(rows) == ["difficulty:easy", "difficulty:hard", "json"]
    hard = rows["difficulty:hard"]
    assert (hard.n, hard.baseline_mean, hard.candidate_mean, hard.wins, hard.losses) == (2, 0.75, 0.5, 1, 1)
    assert hard.relative_improvement == pytest.approx(-1 / 3)
    assert rows["difficulty:easy"].ties == 1
    assert [(r.key, r.delta) for r in regressions(data)] == [("a", -1.0), ("c", -0.5)]
    assert [r.key for r in regressions(data, limit=1)] == ["a"]


def test_score_histogram_bins():
    assert score_histogram([0.0, 0.05, 0.1, 0.55, 0.99, 1.0], bins=10) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_comparison_serialises_to_json_ready_rounded_values():
    data = compare_paired(pairs([0.5] * 3, [2 / 3] * 3, ("t",)), threshold=0.08, rule=AT_LEAST, min_cases=NO_MINIMUM, resamples=2000, seed=0).as_dict()
    assert data["candidate_mean"] == 0.666667 and data["per_tag"][0]["tag"] == "t"
    assert isinstance(data["reasons"], list) and data["verdict"] == PASS


# ---- FAIL needs one more candidate win to stay below the threshold (review F3) ------------------------------


@pytest.mark.parametrize("rule", [AT_LEAST, IMPROVES])
def test_fail_reads_the_one_more_win_upper_end_when_given(rule):
    # The interval alone ends below t; the upper end after one more candidate win does not: not FAIL.
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.05, ci_high=0.07, threshold=0.08, rule=rule) == FAIL
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.05, ci_high=0.07, threshold=0.08, rule=rule,
                        fail_high=0.09) == INCONCLUSIVE
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.05, ci_high=0.07, threshold=0.08, rule=rule,
                        fail_high=0.079) == FAIL
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.05, ci_high=0.07, threshold=0.08, rule=rule,
                        fail_high=math.inf) == INCONCLUSIVE


def test_the_expanded_tail_is_hesterbergs_from_two_cases_and_plain_below():
    # Φ(−√(n/(n−1))·t_{n−1, 0.975}); the plain 2.5 % only below two cases (no t quantile there).
    for n in (2, 3, 32):
        expected = scipy_stats.norm.sf(math.sqrt(n / (n - 1)) * scipy_stats.t.ppf(0.975, df=n - 1))
        assert expanded_tail(n=n, confidence=0.95) == pytest.approx(expected, rel=1e-12)
    assert expanded_tail(n=2, confidence=0.95) < 1e-6
    assert expanded_tail(n=1, confidence=0.95) == pytest.approx(0.025)


def test_the_gain_interval_is_the_paired_t_interval_of_the_mean_delta():
    # A zero baseline is judged on the absolute gain: Fieller's set is then the paired t interval.
    baseline = np.zeros(6)
    candidate = np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0])
    half = scipy_stats.t.ppf(0.975, df=5) * candidate.std(ddof=1) / math.sqrt(6)
    low, high = fieller_interval(baseline, candidate, statistic="gain", confidence=0.95)
    assert (low, high) == pytest.approx((candidate.mean() - half, candidate.mean() + half), rel=1e-12)


def test_an_end_whose_neighbouring_quantile_is_infinite_has_no_monte_carlo_error():
    # Zero-baseline resamples make the top of the relative bootstrap +∞: the upper end's MC error is
    # then unknown (None), never ∞ (which would also read every boundary as "close").
    values = np.concatenate([np.linspace(0.0, 1.0, 990), np.full(10, np.inf)])
    middle = quantile_mc_se(values, q=0.5)
    assert middle is not None and 0 < middle < 0.02
    # q = 0.988 ± one binomial SE (0.0034): the quantile below is finite, the one above is +∞.
    assert quantile_mc_se(values, q=0.988) is None
    assert quantile_mc_se(values, q=0.999) is None


def test_fail_side_high_is_fieller_with_one_pseudo_case_where_the_candidate_wins():
    baseline = np.array([1.0, 0.0, 1.0, 1.0, 0.0] * 8)
    candidate = baseline.copy()
    expected = fieller_interval(np.append(baseline, 0.0), np.append(candidate, 1.0), statistic="relative", confidence=0.95)
    assert expected is not None
    assert fail_side_high(baseline, candidate, confidence=0.95) == pytest.approx(expected[1])
    # The correction shrinks with the suite: 1/n on the mean delta.
    highs = [fail_side_high(np.tile(baseline, k), np.tile(candidate, k), confidence=0.95) for k in (1, 4, 16)]
    assert highs[0] > highs[1] > highs[2] > 0
    assert highs[2] < 0.08  # 640 ties: a candidate 8 % better would have won somewhere


def test_no_candidate_win_on_a_small_near_ceiling_suite_is_not_a_fail():
    # The review's case: right/wrong, baseline 0.85, 20 cases, the candidate loses one case and wins none.
    # The hull's upper end (≈ +6 %) is below t = 8 %, but a candidate 8 % better misses every win this
    # often; one more win puts the upper end above t.
    baseline = [1.0] * 17 + [0.0] * 3
    candidate = [1.0] * 16 + [0.0] * 4
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=4)
    assert result.ci_high is not None and result.ci_high < 0.08
    assert result.verdict == INCONCLUSIVE
    assert "too few cases (or too few disagreements) to reject" in result.reasons[1]


def test_a_clear_loss_still_fails_on_a_small_suite():
    # 20 cases, the candidate loses 8 and wins 1: one more win changes nothing.
    baseline = [1.0] * 14 + [0.0] * 6
    candidate = [0.0] * 8 + [1.0] * 6 + [1.0] + [0.0] * 5
    result = compare_paired(pairs(baseline, candidate), threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=5)
    assert result.verdict == FAIL


# ---- re-runs spend alpha (review F5) ------------------------------------------------------------------------


def test_rerun_alpha_spends_at_most_alpha_over_any_number_of_runs():
    alphas = [rerun_alpha(alpha=0.05, run_number=k) for k in range(1, 10_001)]
    assert sum(alphas) <= 0.05
    assert sum(alphas) == pytest.approx(0.05, rel=1e-7)
    assert alphas == sorted(alphas, reverse=True)
    assert alphas[0] == pytest.approx(0.05 / ZETA_3)  # 4.16 %: the first run reads a 95.84 % interval
    assert rerun_confidence(confidence=0.95, run_number=2) == pytest.approx(1 - 0.05 / (ZETA_3 * 8))
    # One way to name the level everywhere (the gate's own reasons said "95.8404 %" on a first run).
    assert [confidence_text(rerun_confidence(confidence=0.95, run_number=k)) for k in (1, 2, 3)] == ["95.84 %", "99.48 %", "99.85 %"]
    assert confidence_text(0.95) == "95 %"
    with pytest.raises(ValueError):
        rerun_alpha(alpha=0.05, run_number=0)


def test_a_rerun_reads_a_wider_interval_and_says_which_run_it_is():
    rng = np.random.default_rng(8)
    baseline = (rng.random(200) < 0.6).astype(float)
    candidate = np.where(rng.random(200) < 0.25, 1.0, baseline)
    args = dict(threshold=0.08, rule=AT_LEAST, min_cases=MIN_CASES, resamples=2000, seed=11)
    single = compare_paired(pairs(list(baseline), list(candidate)), **args)
    first = compare_paired(pairs(list(baseline), list(candidate)), run_number=1, **args)
    third = compare_paired(pairs(list(baseline), list(candidate)), run_number=3, **args)
    assert single.run_number is None and single.alpha == pytest.approx(0.05) and single.confidence == 0.95
    assert first.run_number == 1 and first.alpha == pytest.approx(0.05 / ZETA_3)
    assert third.alpha == pytest.approx(0.05 / (ZETA_3 * 27))
    assert third.ci_low < first.ci_low < single.ci_low
    assert third.ci_high > first.ci_high > single.ci_high
    assert "run 3 of this candidate on this suite" in third.reasons[-1] and "99.85 %" in third.reasons[-1]
    assert not any("of this candidate on this suite" in reason for reason in single.reasons)


def test_the_verdicts_reasons_name_the_level_as_every_page_does():
    # UX review: the reason said "the 95.8405 % interval" where the run page and summary said 95.84 %.
    scored = [PairedScore(key=f"c{i}", baseline=0.5, candidate=0.7 if i % 4 else 0.5) for i in range(40)]
    comparison = compare_paired(scored, threshold=0.08, rule=AT_LEAST, min_cases=20, resamples=2000, seed=1, confidence=0.95,
                                run_number=1)
    level = confidence_text(1 - 0.05 / ZETA_3)
    assert level == "95.84 %" and any(f"the {level} interval" in reason for reason in comparison.reasons), comparison.reasons


def test_the_rule_text_states_the_rule_gate_verdict_applies_at_the_runs_level() -> None:
    """Before 2026-12-07 the run page and --json said "95 %" whatever the run's α, and FAIL without its
    one more win."""
    first = rule_text(AT_LEAST, confidence=rerun_confidence(confidence=0.95, run_number=1))
    assert "on the 95.84 % interval" in first and "95 %" not in first.replace("95.84 %", "")
    assert "PASS when its lower end ≥ threshold" in first
    assert "FAIL when its upper end < threshold and would stay below it with one more case where the candidate is right" in first
    reaches = rule_text(IMPROVES, confidence=0.95)
    assert "on the 95 % interval" in reaches and "PASS when its lower end > 0 and the estimate ≥ threshold" in reaches
    # What the text says FAIL needs is what gate_verdict does: an upper end below t is not FAIL while one
    # more win would lift it to t.
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.1, ci_high=0.07, threshold=0.08,
                              rule=AT_LEAST, fail_high=0.09) == INCONCLUSIVE
    assert gate_verdict(relative_improvement=0.0, ci_low=-0.1, ci_high=0.07, threshold=0.08,
                              rule=AT_LEAST, fail_high=0.075) == FAIL
    with pytest.raises(ValueError):
        rule_text("sometimes")
