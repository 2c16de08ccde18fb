"""Statistics of online experiments (pure: numpy/scipy, no Django).

The unit of analysis is the user
--------------------------------
Users are what the experiment randomises, so every metric is analysed per user: a metric is a
*ratio* Σx / Σy over the arm's users, x being the user's numerator (successes, summed latency,
summed quality, summed cost) and y its denominator (the user's outcomes, or the outcomes that
report quality / cost). :class:`RatioSummary` holds an arm's per-user sufficient statistics
(users, Σx, Σx², Σy, Σy², Σxy), which the results selector computes in SQL, and its variance is
the delta-method variance of a ratio of means — the same as GrowthBook's ``RatioStatistic``. A user
who reports ten correlated outcomes counts once, with the weight of its ten, instead of as ten
independent observations (which made intervals too narrow: issue 14 measured 9.4 % false
rollbacks in A/A with ten outcomes per user at a 5 % level).

Stage-aware estimates
---------------------
The treatment share rises stage by stage (10 → 25 → 50 %). Pooling all outcomes would give
treatment more of the late data than control, so any drift in the base rate over the days of a
rollout would look like an effect (an A/A rollout whose base rate drifts 0.91 → 0.89 showed
p < 0.05 in 95 % of experiments). So each stage is a *stratum*: treatment and control are compared
within the stage, where both saw the same days, and the stages' estimates are combined with
Cochran–Mantel–Haenszel weights w = n_c·n_t / (n_c + n_t) (users), which do not depend on the
estimated variances (inverse-variance weights would correlate with the estimates for rates). A
user active in two stages counts in each.

Users return across stages
--------------------------
The stages are not independent samples: a user whose bucket keeps it in control is in control in
every stage it is active in, and treatment at 10 % is a subset of treatment at 25 %. Its persistent
behaviour then enters several stages' means, and adding the stages' variances as if independent
dropped the covariance between them (an A/A with returning users showed p < 0.05 in 7–13 % of
rollouts instead of 5 %). So the variance is clustered by user, by linearisation (the delta method
over every cell at once): the estimate Σ_s w_s·(m_ts − m_cs), with m_as = X_as / Y_as, moves with
each user u by::

    φ_u = Σ_s w_s · (x_u,ts − m_ts·y_u,ts) / Y_ts  −  Σ_s w_s · (x_u,cs − m_cs·y_u,cs) / Y_cs

(x, y: the user's numerator and denominator in that (stage, arm) cell, 0 where absent), and
Var = Σ_u φ_u², each cell's term scaled by √(n/(n−1)) so that a user in one cell only gives exactly
the per-cell delta-method variance above. Σ_u φ_u² is the per-cell variances plus, for each pair of
cells that share users, the sum over those users of products of their cell terms: the
:class:`SharedUsers` sums (Σx₁x₂, Σx₁y₂, Σy₁x₂, Σy₁y₂) the results selector computes in SQL. With
fresh users in every stage there are none and the variance is the independent-strata one, to the
last bit. A user in both arms (control in the 10 % stage, treatment in the 25 % one) makes the two
arms' means covary; the covariance enters the difference's variance and Fieller's interval.

Fixed-horizon comparisons (the results page)
--------------------------------------------
:func:`compare` — absolute lift with a Welch t interval, the p-value from the *same* unpooled
standard error and degrees of freedom (as GrowthBook's frequentist engine), and the relative lift
with a **Fieller** interval. Fieller's interval for the ratio μ_t / μ_c contains 1 exactly when
the absolute test does not reject, so the p-value, the absolute interval and the relative interval
can never disagree about "no effect" (the delta-method interval GrowthBook uses could, and covered
92.5 % instead of 95 % at small rates). When control's mean is not itself distinguishable from zero
the Fieller set is unbounded and the relative interval is ``None``. Too little data (fewer than two
users in an arm, or no spread at all) gives ``None`` for intervals and p-values, never a fake
``[0, 0]`` and ``p = 1``.

Sequential guardrails (checked every minute)
--------------------------------------------
:func:`sequential_critical_z` — the normal-mixture confidence sequence for treatment − control::

    Δ̂ ± SE · c(τ),    c(τ)² = (1 + 1/(uτ)) · (ln(1 + uτ) + 2 ln(1/α))

the two-sided normal-mixture boundary (Robbins 1970; Howard et al. 2021, in the asymptotic form of
Waudby-Smith et al. 2023), the boundary GrowthBook's sequential testing draws. τ is the information
fraction (effective users / horizon) and u = ρ²·horizon is chosen, as GrowthBook does, so that the
interval is narrowest at the horizon: u = −2 ln α + ln(1 − 2 ln α). The boundary holds at
**every** sample size, for ever (Ville's inequality): ten times the planned traffic, or an
experiment left running for a month, cannot raise the false-alarm rate above α. The horizon only
decides where the interval is tightest.

A guardrail rolls back on one side only (treatment worse by more than the tolerance), so it uses
the boundary one-sided (:func:`one_sided_level`), and two of them, each at α/2
(:func:`guardrail_critical_z`): one narrowest at the planned sample, one at twice the minimum
sample, which judges a gross regression on its first looks. P(a true harm of exactly the tolerance
is ever rolled back) ≤ α by a union bound. (Until 2026-12 the rule also rolled back "confidently
worse, estimate more than twice the tolerance" on the two-sided interval; that clause spent no α
and rolled back 5–11 % at the tolerance.)

A resume restarts the current stage's window (earlier stages' data stay), so the sequence the
guardrail follows starts again: each resume is a fresh chance of a false rollback (one 50 % stage at
exactly the tolerance: 2–3 % with no resume, 6.5–7 % with three — bench/decisions, part
guardrail_resumes). So α is spent over the rollout's *segments*, as the SRM test spends its share
and the benchmark gate its re-runs: the k-th segment (k = 1 + the resumes so far in the whole
rollout) judges at α/(ζ(3)·k³) (:func:`guardrail_segment_alpha`). Each segment's sequence holds at
its own level, so by a union bound over the segments P(a true harm of exactly the tolerance is ever
rolled back) ≤ Σ_k α/(ζ(3)·k³) = α however often the rollout is paused and resumed; the first
segment judges at α/ζ(3) (4.16 % for 5 %).

SRM (sample-ratio mismatch), also checked every minute
------------------------------------------------------
:func:`srm_p_value` is the anytime-valid p-value of Lindon & Malek (2022): the Dirichlet-multinomial
Bayes factor of the observed arm counts against the planned split, p = min(1, 1/BF). Under a
correct split the Bayes factor is a non-negative martingale, so P(p ever falls below a) ≤ a
however often anyone looks (Ville). The prior is concentrated around the planned split
(``SRM_PRIOR_CONCENTRATION``) so that mismatches of about a point are found within hours at
production traffic. A resume restarts the stage's window and so starts a new test; the k-th test of
a stage pauses below its stage's share of the budget spent as share/(ζ(3)·k³)
(:func:`srm_threshold`), so resumes cannot add false pauses beyond the rollout's budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

# The one α-spending series of Genesis (pure, like this module): re-runs of a benchmark and re-started SRM tests.
from models_app.benchmarks.reruns import confidence_text, rerun_alpha

DEFAULT_ALPHA = 0.05
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES_PER_ARM = 150
DEFAULT_PLANNED_SAMPLES_PER_ARM = 2_000
# Dirichlet prior of the SRM test: concentration K around the planned split (α_i = K·p_i). A prior
# standard deviation of about one point at a 10 % split (√(0.09 / K) ≈ 0.0095): a 10 % vs 11 %
# mismatch at 2 000 users/h is found in about 8 h (bench/decisions), gross ones in minutes.
SRM_PRIOR_CONCENTRATION = 1_000.0

GuardrailState = Literal["no_data", "healthy", "warning", "breach"]
HarmfulDirection = Literal["decrease", "increase"]
ThresholdKind = Literal["absolute", "relative"]
ViolationState = Literal["warning", "breach"]


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class RatioSummary:
    """One arm's per-user sufficient statistics of a ratio metric Σx / Σy.

    ``users`` = N, then over the users: Σx, Σx², Σy, Σy², Σx·y. For success rate x is the user's
    successes and y its outcomes; for latency x is its summed latency and y its outcomes; for
    quality and cost y counts only the outcomes that report them.
    """

    users: int
    numerator_sum: float
    numerator_sum_squares: float
    denominator_sum: float
    denominator_sum_squares: float
    cross_sum: float

    def __post_init__(self) -> None:
        if self.users < 0:
            raise ValueError(f"users must be >= 0, got {self.users}")

    @classmethod
    def from_users(cls, users: Iterable[tuple[float, float]]) -> RatioSummary:
        """From (numerator, denominator) per user."""
        pairs = np.asarray(list(users), dtype=float).reshape(-1, 2)
        x, y = pairs[:, 0], pairs[:, 1]
        return cls(
            users=int(len(pairs)), numerator_sum=float(x.sum()), numerator_sum_squares=float((x * x).sum()),
            denominator_sum=float(y.sum()), denominator_sum_squares=float((y * y).sum()), cross_sum=float((x * y).sum()),
        )

    @property
    def mean(self) -> float:
        """Σx / Σy; NaN when no user has a denominator."""
        return self.numerator_sum / self.denominator_sum if self.denominator_sum else math.nan

    @property
    def variance(self) -> float:
        """Per-user delta-method variance of the ratio (GrowthBook's ``RatioStatistic.variance``);
        NaN below two users or without denominators."""
        n = self.users
        if n < 2 or not self.denominator_sum:
            return math.nan
        mean_x, mean_y = self.numerator_sum / n, self.denominator_sum / n
        var_x = _sample_variance(self.numerator_sum, self.numerator_sum_squares, n)
        var_y = _sample_variance(self.denominator_sum, self.denominator_sum_squares, n)
        covariance = (self.cross_sum - self.numerator_sum * self.denominator_sum / n) / (n - 1)
        variance = var_x / mean_y**2 - 2 * covariance * mean_x / mean_y**3 + mean_x**2 * var_y / mean_y**4
        # A constant metric can come out a hair below zero in floating point.
        return max(variance, 0.0)

    @property
    def variance_of_mean(self) -> float:
        return self.variance / self.users if self.users >= 2 else math.nan

    def estimable(self) -> bool:
        """Two users and a denominator: enough for a mean and its variance."""
        return self.users >= 2 and self.denominator_sum > 0


EMPTY = RatioSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)


# Latency and cost per request are heavy-tailed: a few very slow or expensive requests make the mean
# of a small arm skewed, and at a 9:1 split (the 10 % stage) the relative interval covered 91.1 %
# instead of 95 % (88.3 % with heavier tails; bench/decisions, part tails). So each request's value is capped at this percentile
# of the analysed requests of both arms together (winsorised) before it enters a comparison's mean. The
# tools that winsorise cap differently: Statsig, for one, caps each user's aggregated value (the
# percentile of the unit-level values); Genesis caps each request, before the per-user sums (the guardrails judge the real requests: outcome_aggregate.GUARDED_AS);
# success rate and quality are bounded and are not capped.
CAP_PERCENTILE = 99


def cap_rank(count: int, percentile: int = CAP_PERCENTILE) -> int:
    """The 1-based rank of the cap among ``count`` sorted values: the smallest value with at least
    ``percentile`` % of the values at or below it (nearest rank, percentile_disc), ⌈p·n / 100⌉. The
    results selector's SQL counts from the top instead: it skips n − rank = ⌊(100 − p)·n / 100⌋ rows of
    the values in descending order."""
    return (percentile * count + 99) // 100


def pooled_cap(values: Any, percentile: int = CAP_PERCENTILE) -> float:
    """The cap of :data:`CAP_PERCENTILE` over every request of both arms (what the selector's SQL
    computes); NaN without values."""
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    return float(ordered[cap_rank(ordered.size, percentile) - 1]) if ordered.size else math.nan


def _sample_variance(total: float, sum_of_squares: float, n: int) -> float:
    return max(sum_of_squares - total * total / n, 0.0) / (n - 1)


Arm = Literal["control", "treatment"]
Cell = tuple[int, Arm]  # (the stage's position in the strata, arm)


@dataclass(frozen=True)
class SharedUsers:
    """The users present in two (stage, arm) cells of one metric, and the sums over them of the
    products of their numerators x and denominators y in the two cells. ``first`` is the earlier
    cell (an earlier stage, or control of the same stage), ``second`` the later one."""

    first: Cell
    second: Cell
    users: int
    numerator_products: float  # Σ x₁·x₂
    numerator_denominator: float  # Σ x₁·y₂
    denominator_numerator: float  # Σ y₁·x₂
    denominator_products: float  # Σ y₁·y₂


@dataclass(frozen=True)
class Stratum:
    """Control and treatment in one stage. ``shared`` names this stage's users who were also in an
    earlier cell (an earlier stage, or this stage's control when they are now in treatment): each
    entry's ``second`` cell is in this stage. Empty when every user is new to the stage."""

    control: RatioSummary
    treatment: RatioSummary
    shared: tuple[SharedUsers, ...] = ()


def strata_from_users(numerators: Any, denominators: Any, treated: Any) -> list[Stratum]:
    """The strata, shared users included, from per-user arrays of shape (users, stages): a user's
    numerator and denominator in each stage (denominator 0: absent from that stage) and whether it
    was in treatment there. What the results selector computes in SQL; for tests and simulations."""
    x, y = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    in_treatment = np.asarray(treated, dtype=bool)
    if not x.shape == y.shape == in_treatment.shape or x.ndim != 2:
        raise ValueError("numerators, denominators and treated need the same (users, stages) shape")
    stages = x.shape[1]
    present = y > 0
    # One column per (stage, arm) cell, 0 where the user is not in it; every sum is then a product of
    # two columns: the diagonal gives the cells' own sums, the rest the shared users'.
    cells: list[Cell] = [(stage, arm) for stage in range(stages) for arm in ("control", "treatment")]
    members = np.stack([present[:, stage] & (in_treatment[:, stage] == (arm == "treatment")) for stage, arm in cells], axis=1)
    cell_x = np.where(members, np.repeat(x, 2, axis=1), 0.0)
    cell_y = np.where(members, np.repeat(y, 2, axis=1), 0.0)
    counts = members.T.astype(float) @ members.astype(float)
    xx, xy, yy = cell_x.T @ cell_x, cell_x.T @ cell_y, cell_y.T @ cell_y
    strata = []
    for stage in range(stages):
        summaries = {}
        shared = []
        for second in (2 * stage, 2 * stage + 1):
            summaries[cells[second][1]] = RatioSummary(
                users=int(counts[second, second]), numerator_sum=float(cell_x[:, second].sum()),
                numerator_sum_squares=float(xx[second, second]), denominator_sum=float(cell_y[:, second].sum()),
                denominator_sum_squares=float(yy[second, second]), cross_sum=float(xy[second, second]),
            )
            shared += [
                SharedUsers(
                    first=cells[first], second=cells[second], users=int(counts[first, second]),
                    numerator_products=float(xx[first, second]), numerator_denominator=float(xy[first, second]),
                    denominator_numerator=float(xy[second, first]), denominator_products=float(yy[first, second]),
                )
                for first in range(second) if counts[first, second] > 0
            ]
        strata.append(Stratum(summaries["control"], summaries["treatment"], tuple(shared)))
    return strata


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


# --------------------------------------------------------------------------------------------
# The stratified estimate both the results page and the guardrails start from


@dataclass(frozen=True)
class StratifiedEstimate:
    control_mean: float
    treatment_mean: float
    variance_of_control_mean: float
    variance_of_treatment_mean: float
    degrees_of_freedom: float  # Welch–Satterthwaite over every (stage, arm) cell; inf without spread
    effective_users: float  # per-arm users of a balanced one-stage experiment with the same precision
    strata: int  # stages that entered the estimate
    # Cov(treatment mean, control mean): users who were in both arms (control early, treatment later).
    covariance_of_means: float = 0.0

    @property
    def difference(self) -> float:
        return self.treatment_mean - self.control_mean

    @property
    def variance_of_difference(self) -> float:
        variance = self.variance_of_control_mean + self.variance_of_treatment_mean - 2 * self.covariance_of_means
        return max(variance, 0.0)

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.variance_of_difference)


def stratified_estimate(strata: Sequence[Stratum]) -> StratifiedEstimate | None:
    """Each stage's arms compared within the stage, combined with CMH weights, the variance
    clustered by user across stages (module docstring); None while no stage has two users with a
    denominator in both arms."""
    usable_positions = [i for i, s in enumerate(strata) if s.control.estimable() and s.treatment.estimable()]
    usable = [strata[i] for i in usable_positions]
    if not usable:
        return None
    sizes = np.array([[s.control.users, s.treatment.users] for s in usable], dtype=float)
    cmh_weights = sizes[:, 0] * sizes[:, 1] / sizes.sum(axis=1)  # n_c·n_t / (n_c + n_t): half a stage's n_eff
    weights = cmh_weights / cmh_weights.sum()
    means = np.array([[s.control.mean, s.treatment.mean] for s in usable])
    cell_variances = np.array([[s.control.variance_of_mean, s.treatment.variance_of_mean] for s in usable])
    weighted_variances = weights[:, None] ** 2 * cell_variances
    variance_control, variance_treatment = weighted_variances.sum(axis=0)
    total_variance = variance_control + variance_treatment
    # Degrees of freedom from the cells' own variances (a user's cells add information about one
    # person, not more people): the returning users' covariance only widens the standard error.
    satterthwaite = float((weighted_variances**2 / (sizes - 1)).sum())
    degrees_of_freedom = total_variance**2 / satterthwaite if satterthwaite > 0 else math.inf
    shared = _shared_user_covariances(strata, usable_positions, weights)
    return StratifiedEstimate(
        control_mean=float(weights @ means[:, 0]),
        treatment_mean=float(weights @ means[:, 1]),
        variance_of_control_mean=float(variance_control + shared["control"]),
        variance_of_treatment_mean=float(variance_treatment + shared["treatment"]),
        degrees_of_freedom=float(degrees_of_freedom),
        effective_users=float(2 * cmh_weights.sum()),
        strata=len(usable),
        covariance_of_means=float(shared["both"]),
    )


def _shared_user_covariances(strata: Sequence[Stratum], usable_positions: list[int], weights: np.ndarray) -> dict[str, float]:
    """The cross terms of Σ_u φ_u² (module docstring) from the users shared by two cells: added to
    the control mean's variance (two control cells), the treatment mean's (two treatment cells),
    or the covariance of the two means (one cell in each arm)."""
    weight_of_stage = dict(zip(usable_positions, weights))
    totals = {"control": 0.0, "treatment": 0.0, "both": 0.0}

    def cell_term(cell: Cell) -> tuple[float, float]:
        """(the cell's mean m, its scale w·√(n/(n−1)) / Y) of a usable cell."""
        summary = getattr(strata[cell[0]], cell[1])
        return summary.mean, float(weight_of_stage[cell[0]]) * math.sqrt(summary.users / (summary.users - 1)) / summary.denominator_sum

    for position, stratum in enumerate(strata):
        for pair in stratum.shared:
            if pair.second[0] != position or pair.first[0] > position or pair.first == pair.second:
                raise ValueError(f"stage {position} lists shared users of cells {pair.first} and {pair.second}: "
                                 f"the second cell must be in this stage and the first an earlier cell")
            if pair.first[0] not in weight_of_stage or pair.second[0] not in weight_of_stage or pair.users == 0:
                continue  # a stage left out of the estimate (too few users) adds nothing to it
            (mean_1, scale_1), (mean_2, scale_2) = cell_term(pair.first), cell_term(pair.second)
            # Σ_u (x₁ − m₁y₁)(x₂ − m₂y₂) over the shared users
            residual_products = (
                pair.numerator_products - mean_2 * pair.numerator_denominator - mean_1 * pair.denominator_numerator
                + mean_1 * mean_2 * pair.denominator_products
            )
            term = scale_1 * scale_2 * residual_products
            if pair.first[1] == pair.second[1]:
                totals[pair.first[1]] += 2 * term  # the (1, 2) and (2, 1) terms of the square
            else:
                totals["both"] += term
    return totals


# --------------------------------------------------------------------------------------------
# Fixed-horizon comparison (results endpoint, admin page)


@dataclass(frozen=True)
class Comparison:
    """Treatment against control for one metric at a fixed horizon. Intervals and p-value are None
    when the data cannot support them (no spread, or control's mean indistinguishable from zero for
    the relative interval)."""

    control_mean: float
    treatment_mean: float
    absolute_lift: float  # treatment − control, in the metric's units
    absolute_interval: Interval | None
    relative_lift: float | None  # treatment / control − 1; None when control's mean is 0
    relative_interval: Interval | None  # Fieller
    p_value: float | None  # two-sided Welch t, same standard error as the intervals
    strata: int


def compare(strata: Sequence[Stratum], *, confidence: float = DEFAULT_CONFIDENCE) -> Comparison | None:
    """The stratified comparison of one metric; None while no stage has two users in each arm."""
    estimate = stratified_estimate(strata)
    if estimate is None:
        return None
    difference = estimate.difference
    relative_lift = estimate.treatment_mean / estimate.control_mean - 1 if estimate.control_mean else None
    standard_error = estimate.standard_error
    absolute_interval = relative_interval = p_value = None
    if standard_error > 0 and math.isfinite(standard_error):
        critical = float(scipy_stats.t.ppf(0.5 + confidence / 2, estimate.degrees_of_freedom))
        absolute_interval = Interval(difference - critical * standard_error, difference + critical * standard_error)
        p_value = float(2 * scipy_stats.t.sf(abs(difference) / standard_error, estimate.degrees_of_freedom))
        ratio = fieller_interval(
            numerator=estimate.treatment_mean, numerator_variance=estimate.variance_of_treatment_mean,
            denominator=estimate.control_mean, denominator_variance=estimate.variance_of_control_mean,
            critical=critical, covariance=estimate.covariance_of_means,
        )
        relative_interval = Interval(ratio.low - 1, ratio.high - 1) if ratio else None
    return Comparison(
        control_mean=estimate.control_mean, treatment_mean=estimate.treatment_mean, absolute_lift=difference,
        absolute_interval=absolute_interval, relative_lift=relative_lift, relative_interval=relative_interval,
        p_value=p_value, strata=estimate.strata,
    )


def fieller_interval(
    *, numerator: float, numerator_variance: float, denominator: float, denominator_variance: float, critical: float,
    covariance: float = 0.0,
) -> Interval | None:
    """Fieller's interval for numerator / denominator of two normal estimates with the given
    covariance: the ρ with (N − ρ·D)² ≤ z²·(Var N − 2ρ·Cov + ρ²·Var D). None when it is unbounded
    (D within z standard errors of zero)."""
    a = denominator**2 - critical**2 * denominator_variance
    if a <= 0:
        return None
    b = numerator * denominator - critical**2 * covariance
    c = numerator**2 - critical**2 * numerator_variance
    # With a > 0 the quadratic is ≤ 0 at ρ = N / D, so the discriminant is ≥ 0 (up to rounding).
    root = math.sqrt(max(b * b - a * c, 0.0))
    return Interval((b - root) / a, (b + root) / a)


# --------------------------------------------------------------------------------------------
# Sample-ratio mismatch (anytime-valid)


def srm_bayes_factor(
    *, observed: Sequence[int], expected_fractions: Sequence[float], concentration: float = SRM_PRIOR_CONCENTRATION
) -> float:
    """Dirichlet-multinomial Bayes factor of the counts against the planned split (Lindon & Malek
    2022). An arm planned at 0 % that has users makes the split impossible (∞); arms planned at
    0 % with no users are left out."""
    if len(observed) != len(expected_fractions) or len(observed) < 2:
        raise ValueError("observed and expected_fractions need the same length, at least 2")
    if any(count < 0 for count in observed) or any(fraction < 0 for fraction in expected_fractions):
        raise ValueError("counts and fractions must be non-negative")
    if not math.isclose(math.fsum(expected_fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"expected_fractions must sum to 1, got {math.fsum(expected_fractions)!r}")
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    kept = []
    for count, fraction in zip(observed, expected_fractions):
        if fraction == 0:
            if count > 0:
                return math.inf
            continue
        kept.append((count, fraction))
    if len(kept) < 2:
        return 1.0
    counts = np.array([count for count, _ in kept], dtype=float)
    prior = concentration * np.array([fraction for _, fraction in kept])
    log_marginal = (
        special.gammaln(prior.sum()) - special.gammaln(prior.sum() + counts.sum())
        + float((special.gammaln(prior + counts) - special.gammaln(prior)).sum())
    )
    log_null = float((counts * np.log(prior / prior.sum())).sum())
    return math.exp(min(log_marginal - log_null, 700.0))


def srm_p_value(
    *, observed: Sequence[int], expected_fractions: Sequence[float], concentration: float = SRM_PRIOR_CONCENTRATION
) -> float:
    """Anytime-valid p-value of a sample-ratio mismatch: min(1, 1 / Bayes factor). Under a correct
    split, P(it is ever below a) ≤ a, however often it is computed."""
    factor = srm_bayes_factor(observed=observed, expected_fractions=expected_fractions, concentration=concentration)
    return 0.0 if math.isinf(factor) else min(1.0, 1.0 / factor)


def srm_stage_share(*, rollout_alpha: float, stage_plan: Sequence[int]) -> float:
    """Each stage with a control arm (below 100 %) is tested on its own users, so the rollout's
    false-pause budget is shared among them (Bonferroni)."""
    tested = sum(1 for percent in stage_plan if 0 < percent < 100) or 1
    return rollout_alpha / tested


def srm_threshold(*, rollout_alpha: float, stage_plan: Sequence[int], test: int) -> float:
    """Where the ``test``-th SRM test of a stage pauses: its stage's share spent as share/(ζ(3)·k³)
    (reruns.rerun_alpha, the benchmark gate's series). A resume restarts the stage's window, and with
    it the test, whatever the pause was for: each test is a fresh chance of a false pause. With the
    whole share for every test, a stage paused and resumed three times had four; spent this way the
    tests of a stage together stay within its share however often it is resumed, so P(a correctly
    split rollout is ever paused) ≤ rollout_alpha. The first test gets 83 % of the share, the second
    10 %, the third 3 %."""
    return rerun_alpha(alpha=srm_stage_share(rollout_alpha=rollout_alpha, stage_plan=stage_plan), run_number=test)


# --------------------------------------------------------------------------------------------
# Sequential (always-valid) boundaries


def sequential_critical_z(*, information_fraction: float | np.ndarray, alpha: float = DEFAULT_ALPHA) -> float | np.ndarray:
    """c(τ) of the normal-mixture boundary at level alpha, tuned to be narrowest at τ = 1 (vectorised)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    u_tau = _mixture_tuning(alpha) * np.asarray(information_fraction, dtype=float)
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 + 1.0 / u_tau) * (np.log1p(u_tau) + 2.0 * math.log(1.0 / alpha)))


def _mixture_tuning(alpha: float) -> float:
    # u = ρ²·horizon, GrowthBook's choice of ρ: the boundary is narrowest at the planned horizon.
    log_term = -2.0 * math.log(alpha)
    return log_term + math.log1p(log_term)


def one_sided_level(alpha: float) -> float:
    """The level β at which the two-sided boundary c(τ; β) of :func:`sequential_critical_z` is a
    one-sided boundary at level ``alpha``: P(z ever ≥ c(τ; β)) ≤ alpha.

    Why: with the half-normal mixture (the normal prior on the harmful side only) the martingale is
    M⁺ = 2·Φ(w)·M, M the symmetric one and w = z·√(uτ / (1 + uτ)). Where z reaches c(τ; β),
    M = 1/β and w² = ln(1 + uτ) + 2 ln(1/β) ≥ 2 ln(1/β), so M⁺ ≥ 2·Φ(√(2 ln(1/β)))/β, and Ville's
    inequality bounds the chance of that ever happening by β / (2·Φ(√(2 ln(1/β)))) — set equal to
    alpha here (β ≈ 1.99·alpha: 0.0496 for 0.025)."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    level = 2.0 * alpha
    for _ in range(50):  # a contraction: settles to 1e-15 in a handful of steps
        updated = 2.0 * alpha * float(scipy_stats.norm.cdf(math.sqrt(2.0 * math.log(1.0 / level))))
        if abs(updated - level) < 1e-15:
            break
        level = updated
    return level


# The guardrail's second sequence is narrowest at this many (effective) users per arm per minimum
# sample per arm: at a 10 % stage both arms reach the minimum at about 1.8× it, so a gross regression
# is judged by a boundary tuned to its first looks rather than to the planned sample.
EARLY_HORIZON_PER_MIN_SAMPLE = 2.0


def guardrail_segment_alpha(*, alpha: float, segment: int) -> float:
    """The level the rollout's ``segment``-th guardrail segment (1 + the resumes so far in the whole
    rollout) judges at: alpha/(ζ(3)·k³) (reruns.rerun_alpha, the series of the SRM test and the
    benchmark gate). A resume restarts the current stage's window and with it the sequence the
    guardrail follows; each segment's sequence holds at its level, so by a union bound over the
    segments the rollout's false rollbacks at the tolerance stay within Σ_k alpha/(ζ(3)·k³) = alpha
    however often it is resumed. The first segment gets 83 % of alpha, the second 10 %, the third 3 %."""
    return rerun_alpha(alpha=alpha, run_number=segment)


def guardrail_critical_z(
    *, effective_users: Any, alpha: float, planned_samples_per_arm: float, early_samples_per_arm: float,
    segment: int | None = 1,
) -> Any:
    """Standard errors between the estimated harm and the harm the guardrail is confident of
    (vectorised, for bench/decisions): the narrower of two one-sided confidence sequences, each at
    half the segment's level — one tuned to the planned sample, one to the first looks
    (``early_samples_per_arm``). Either may be the one that is crossed, so P(the segment ever rolls
    back | true harm at the tolerance) ≤ its level (a union bound, at every sample size), and over the
    rollout's segments ≤ alpha (:func:`guardrail_segment_alpha`). ``segment=None`` judges at the whole
    alpha, unspent: the rule before 2026-12, for bench/decisions' contrast only."""
    spent = alpha if segment is None else guardrail_segment_alpha(alpha=alpha, segment=segment)
    level = one_sided_level(spent / 2)
    effective = np.asarray(effective_users, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        planned = sequential_critical_z(information_fraction=effective / planned_samples_per_arm, alpha=level)
        early = sequential_critical_z(information_fraction=effective / early_samples_per_arm, alpha=level)
    return np.minimum(planned, early)


# --------------------------------------------------------------------------------------------
# Guardrails


@dataclass(frozen=True)
class GuardrailResult:
    metric: str
    state: GuardrailState
    estimate: float | None  # treatment − control in the metric's units; None without data
    interval: Interval | None  # the sequential interval for that difference
    reason: str  # one sentence a person can act on


# Long: most of it is the docstring that states the published rollback rule, kept whole beside the code.
def evaluate_guardrail(
    *,
    metric: str,
    harmful_direction: HarmfulDirection,
    threshold: float,
    strata: Sequence[Stratum],
    threshold_kind: ThresholdKind = "absolute",
    on_violation: ViolationState = "breach",
    alpha: float = DEFAULT_ALPHA,
    min_samples_per_arm: int = DEFAULT_MIN_SAMPLES_PER_ARM,
    planned_samples_per_arm: int = DEFAULT_PLANNED_SAMPLES_PER_ARM,
    format_value: Callable[..., str] | None = None,
    segment: int = 1,
) -> GuardrailResult:
    """Judge one guardrail metric of a running experiment; safe to call every minute.

    What "roll back when success drops more than 5 points" means (:func:`harm_beyond_tolerance`):
    the treatment is **confidently worse by more than the tolerance** — a sequential
    non-inferiority test. The harm's lower bound is drawn from two one-sided confidence sequences
    at alpha/2 each (:func:`guardrail_critical_z`): one narrowest at ``planned_samples_per_arm``,
    one at twice ``min_samples_per_arm``, so a gross regression is judged by a boundary tuned to
    the first looks. A true harm of exactly the tolerance is rolled back with probability at most
    alpha however long the rollout runs and however often it is checked; smaller harms less often.
    ``segment`` is the rollout's guardrail segment (1 + the resumes so far): it judges at
    alpha/(ζ(3)·k³) (:func:`guardrail_segment_alpha`), so resumes cannot add false rollbacks.
    (Until 2026-12 a second clause also rolled back "confidently worse, estimate more than twice
    the tolerance": not error-controlled — 11 % at the tolerance at base rate 0.6.)

    bench/decisions measures the rollback probability and time at each drop size; the README and
    the admin's guardrail help publish it. ``threshold`` is in the metric's units (``absolute``:
    0.05 = 5 points of success rate) or a fraction of control's mean (``relative``: 0.30 = 30 %
    slower); a relative test is of treatment − (1 ± threshold)·control, whose standard error
    carries the (1 ± threshold)² on control's variance. The caller divides alpha among the rules
    that roll back (Bonferroni).

    * ``no_data`` — an arm has fewer than ``min_samples_per_arm`` users. Holds the stage.
    * ``on_violation`` ('breach' or 'warning') — the rule above holds.
    * ``warning`` — the estimate is beyond the tolerance but the rule does not hold yet (no error
      control: a point estimate; it holds the stage while it lasts).
    * ``healthy`` — otherwise.

    The ``interval`` shown is treatment − control ± the same number of standard errors: each end is
    an any-time bound at 1 − the segment's level (the two ends together at 1 − twice it).
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    if min_samples_per_arm < 2:
        raise ValueError("min_samples_per_arm must be at least 2: a variance needs two users")
    control_users = sum(stratum.control.users for stratum in strata)
    treatment_users = sum(stratum.treatment.users for stratum in strata)
    estimate = stratified_estimate(strata)
    if control_users < min_samples_per_arm or treatment_users < min_samples_per_arm or estimate is None:
        return GuardrailResult(
            metric=metric, state="no_data", estimate=None, interval=None,
            reason=(
                f"{metric}: waiting for data — control has {control_users} and treatment {treatment_users} of "
                f"the {min_samples_per_arm} users per arm needed"
            ),
        )
    critical = float(guardrail_critical_z(
        effective_users=estimate.effective_users, alpha=alpha, planned_samples_per_arm=planned_samples_per_arm,
        early_samples_per_arm=EARLY_HORIZON_PER_MIN_SAMPLE * min_samples_per_arm, segment=segment,
    ))
    level = guardrail_segment_alpha(alpha=alpha, segment=segment)
    control_mean, difference = estimate.control_mean, estimate.difference
    sign = -1.0 if harmful_direction == "decrease" else 1.0
    harm = sign * difference  # > 0: treatment is worse
    # harm − limit = sign·treatment − control_factor·control (+ a constant for an absolute threshold):
    # absolute, harm − threshold; relative, harm − threshold·|control|.
    if threshold_kind == "absolute":
        limit, control_factor = threshold, sign
    else:
        limit, control_factor = threshold * abs(control_mean), sign + threshold * math.copysign(1.0, control_mean)
    harm_standard_error = math.sqrt(max(
        estimate.variance_of_treatment_mean + control_factor**2 * estimate.variance_of_control_mean
        - 2 * sign * control_factor * estimate.covariance_of_means,  # users who were in both arms
        0.0,
    ))
    half_width = critical * estimate.standard_error
    interval = Interval(difference - half_width, difference + half_width)
    shown = format_value or format_number  # the metric's own unit: money for cost, say (the caller's formatter)
    summary = (
        f"{metric}: treatment {shown(control_mean + difference)} vs control {shown(control_mean)} "
        f"(difference {shown(difference, signed=True)}, any-time interval {shown(interval.low, signed=True)} to "
        f"{shown(interval.high, signed=True)}, each end a {confidence_text(1 - level)} bound; "
        f"tolerance {_describe_limit(threshold, threshold_kind, harmful_direction)})"
    )
    if harm_beyond_tolerance(harm=harm, limit=limit, standard_error=harm_standard_error, critical=critical):
        action = "roll back" if on_violation == "breach" else "review the candidate"
        state: GuardrailState = on_violation
        reason = f"{summary} — confidently worse than the tolerance allows: {action}"
    elif harm > limit:
        state, reason = "warning", f"{summary} — beyond the tolerance but not yet confident: hold and keep watching"
    else:
        state, reason = "healthy", f"{summary} — within the tolerance"
    return GuardrailResult(metric=metric, state=state, estimate=difference, interval=interval, reason=reason)


def harm_beyond_tolerance(*, harm: Any, limit: Any, standard_error: Any, critical: Any) -> Any:
    """The guardrail's decision (vectorised, for bench/decisions): the harm's any-time lower bound
    lies beyond the tolerance. harm is the estimated harm (> 0: treatment worse), limit the tolerance
    in the metric's units, standard_error that of harm − limit, critical from
    :func:`guardrail_critical_z`."""
    return np.asarray(harm) - np.asarray(critical) * np.asarray(standard_error) > np.asarray(limit)


def guardrail_rule_text(
    *, metric: str, harmful_direction: HarmfulDirection, threshold: float, threshold_kind: ThresholdKind,
    on_violation: ViolationState, alpha: float,
) -> str:
    """What the rule's decision means, in one sentence for the admin and the results endpoint."""
    worse = "lower" if harmful_direction == "decrease" else "higher"
    action = "Rolls back" if on_violation == "breach" else "Warns"
    tolerance = _describe_limit(threshold, threshold_kind, harmful_direction)
    return (
        f"{action} when treatment's {metric} is confidently {worse} than control's by more than the tolerance "
        f"({tolerance}), by bounds valid at every check, so a change of exactly the tolerance "
        f"{'is rolled back' if on_violation == 'breach' else 'warns'} at most {alpha * 100:g} % of the time over "
        f"the rollout, however often it is paused and resumed: the k-th stretch between resumes is judged at "
        f"{alpha * 100:g} %/(ζ(3)·k³), {confidence_text(1 - guardrail_segment_alpha(alpha=alpha, segment=1))} "
        f"confidence before the first resume."
    )


def _describe_limit(threshold: float, threshold_kind: ThresholdKind, harmful_direction: HarmfulDirection) -> str:
    verb = "down" if harmful_direction == "decrease" else "up"
    return f"{verb} {threshold:.0%}" if threshold_kind == "relative" else f"{verb} {format_number(threshold)}"


def format_number(value: float, *, signed: bool = False) -> str:
    """A number for people: fixed notation (never 8e-05), about four significant digits, and
    floating-point dust (4e-19) shown as 0."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 1e-12:
        value = 0.0
    magnitude = abs(value)
    decimals = 0 if magnitude >= 100 else 2 if magnitude >= 1 or magnitude == 0 else min(10, 3 - math.floor(math.log10(magnitude)))
    text = f"{value:+,.{decimals}f}" if signed else f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".") if decimals > 2 else text
    return text
