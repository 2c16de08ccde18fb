"""Statistics of online experiments (pure: numpy/scipy, no Django).

Everything starts from per-arm aggregates, :class:`ArmSummary` = (n, Σx, Σx²), which the results
selector computes in SQL (``COUNT(x)``, ``SUM(x)``, ``SUM(x * x)``) and passes in. For a yes/no
metric such as success, x is 0 or 1, so Σx = Σx² = the number of successes.

What is here
------------
* :func:`compare_proportions` — success rates: absolute lift with a 95 % Wald interval, relative
  lift with a delta-method interval, two-sided p-value of the pooled two-proportion z-test
  (identical to Pearson's chi-square test of the 2×2 table without continuity correction).
* :func:`compare_means` — quality, latency, cost per request: Welch's t-test from (n, mean,
  variance), with absolute and relative (delta-method) 95 % intervals.
* :func:`srm_p_value` — sample-ratio mismatch: chi-square goodness of fit of the arms' counts
  against the split the plan expects (the threshold, GrowthBook's 0.001, is a setting:
  ``ab_testing.srm_p_threshold``, applied by experiments/selectors.py and services.py).
* :func:`sequential_difference` / :func:`evaluate_guardrail` — the guardrail test run every minute.
* :func:`simulate_aa_experiments` — seeded A/A simulation that measures the false-alarm rate of
  looking again and again, with the sequential test or with a naive fixed-horizon test.

The sequential guardrail test
-----------------------------
A fixed-horizon test looked at every minute flags *some* difference in most A/A experiments
(each look is another 5 % chance; see the A/A test). The guardrail therefore uses a confidence
sequence for the difference of means Δ = treatment − control, an interval that holds at every
look at once::

    Δ̂ ± SE · c(τ),    c(τ)² = (1 + 1/(uτ)) · (ln(1 + uτ) + 2 ln(1/α_b))

where SE is the usual unpooled standard error, τ = n_eff / planned_samples_per_arm is the
information fraction (n_eff = 2 / (1/n_control + 1/n_treatment), the per-arm size of a balanced
experiment with the same precision), and u = ρ²·(planned horizon). This is the two-sided
normal-mixture boundary (Robbins 1970; Howard et al. 2021) in the asymptotic form of
Waudby-Smith et al. 2023, "Time-uniform central limit theory and asymptotic confidence
sequences" — the boundary GrowthBook's sequential testing draws — with ρ tuned, as GrowthBook
does, so the interval is narrowest at the planned sample size: u = −2 ln α_b + ln(1 − 2 ln α_b).

One change, and why: drawn at level α_b = α the boundary is valid for looks *forever*, so over
the few days an experiment actually runs it spends far less than α (about 1.5–2 % at α = 5 %
with frequent looks): guardrails would be needlessly slow to catch a regression. We draw it at
the level α_b for which a Brownian motion — the large-sample limit of the standardised running
difference — crosses it somewhere in (0, planned horizon] with probability exactly α under
*continuous* monitoring (:func:`sequential_boundary_level`, ≈ 0.126 for α = 0.05, found by a
deterministic numerical integration, cached). Looks at discrete times (every minute) can only
cross less often, so the family-wise false-alarm rate over the planned horizon is at most α
however often anyone looks. Past the planned horizon the guarantee weakens gradually towards α_b
(the level at which the boundary is always valid); size ``planned_samples_per_arm`` to the sample
an experiment is expected to reach.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

DEFAULT_ALPHA = 0.05
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES_PER_ARM = 150
DEFAULT_PLANNED_SAMPLES_PER_ARM = 2_000

GuardrailState = Literal["no_data", "healthy", "warning", "breach"]
HarmfulDirection = Literal["decrease", "increase"]
ThresholdKind = Literal["absolute", "relative"]
ViolationState = Literal["warning", "breach"]


# --------------------------------------------------------------------------------------------
# Inputs and outputs


@dataclass(frozen=True)
class ArmSummary:
    """One arm's aggregates for one metric: n = COUNT(x), total = SUM(x), sum_of_squares = SUM(x*x)."""

    n: int
    total: float
    sum_of_squares: float

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")

    @classmethod
    def from_values(cls, values: Iterable[float]) -> ArmSummary:
        array = np.asarray(list(values), dtype=float)
        return cls(n=int(array.size), total=float(array.sum()), sum_of_squares=float(np.square(array).sum()))

    @classmethod
    def from_successes(cls, *, n: int, successes: int) -> ArmSummary:
        if not 0 <= successes <= n:
            raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
        return cls(n=n, total=successes, sum_of_squares=successes)

    @property
    def mean(self) -> float:
        return float(self.total) / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (n − 1 in the denominator); NaN below two observations."""
        if self.n < 2:
            return math.nan
        total = float(self.total)
        centred = float(self.sum_of_squares) - total * total / self.n
        # Σx² − (Σx)²/n can come out a hair below zero in floating point for a constant metric.
        return max(centred, 0.0) / (self.n - 1)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Comparison:
    """Treatment against control for one metric, at a fixed horizon (the results page)."""

    control_mean: float
    treatment_mean: float
    absolute_lift: float  # treatment − control, in the metric's units
    absolute_interval: Interval
    relative_lift: float | None  # (treatment − control) / control; None when control's mean is 0
    relative_interval: Interval | None
    p_value: float


# --------------------------------------------------------------------------------------------
# Fixed-horizon comparisons (results endpoint)


def compare_proportions(
    *, control: ArmSummary, treatment: ArmSummary, confidence: float = DEFAULT_CONFIDENCE
) -> Comparison | None:
    """Success rates of two arms of 0/1 outcomes. None while an arm has no observations."""
    if control.n == 0 or treatment.n == 0:
        return None
    p_control, p_treatment = control.mean, treatment.mean
    difference = p_treatment - p_control
    critical = scipy_stats.norm.ppf(0.5 + confidence / 2)

    # The p-value tests "same rate" and so estimates that one rate from both arms (pooled).
    pooled = (float(control.total) + float(treatment.total)) / (control.n + treatment.n)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    p_value = _two_sided_normal_p_value(difference, pooled_se)

    # The interval describes the difference, so each arm keeps its own rate (unpooled, Wald).
    variance_control = p_control * (1 - p_control) / control.n
    variance_treatment = p_treatment * (1 - p_treatment) / treatment.n
    half_width = critical * math.sqrt(variance_control + variance_treatment)
    relative_lift, relative_interval = _relative_lift(
        mean_control=p_control,
        mean_treatment=p_treatment,
        variance_of_mean_control=variance_control,
        variance_of_mean_treatment=variance_treatment,
        critical=critical,
    )
    return Comparison(
        control_mean=p_control,
        treatment_mean=p_treatment,
        absolute_lift=difference,
        absolute_interval=Interval(difference - half_width, difference + half_width),
        relative_lift=relative_lift,
        relative_interval=relative_interval,
        p_value=p_value,
    )


def compare_means(
    *, control: ArmSummary, treatment: ArmSummary, confidence: float = DEFAULT_CONFIDENCE
) -> Comparison | None:
    """Welch's unequal-variance t-test from aggregates. None while an arm has fewer than 2 values."""
    if control.n < 2 or treatment.n < 2:
        return None
    variance_of_mean_control = control.variance / control.n
    variance_of_mean_treatment = treatment.variance / treatment.n
    standard_error = math.sqrt(variance_of_mean_control + variance_of_mean_treatment)
    difference = treatment.mean - control.mean

    if standard_error == 0.0:
        # Both arms constant: the difference is known exactly.
        return Comparison(
            control_mean=control.mean,
            treatment_mean=treatment.mean,
            absolute_lift=difference,
            absolute_interval=Interval(difference, difference),
            relative_lift=difference / control.mean if control.mean else None,
            relative_interval=(
                Interval(difference / control.mean, difference / control.mean) if control.mean else None
            ),
            p_value=1.0 if difference == 0 else 0.0,
        )

    degrees_of_freedom = (variance_of_mean_control + variance_of_mean_treatment) ** 2 / (
        variance_of_mean_control**2 / (control.n - 1) + variance_of_mean_treatment**2 / (treatment.n - 1)
    )
    critical = scipy_stats.t.ppf(0.5 + confidence / 2, degrees_of_freedom)
    p_value = float(2 * scipy_stats.t.sf(abs(difference) / standard_error, degrees_of_freedom))
    half_width = critical * standard_error
    relative_lift, relative_interval = _relative_lift(
        mean_control=control.mean,
        mean_treatment=treatment.mean,
        variance_of_mean_control=variance_of_mean_control,
        variance_of_mean_treatment=variance_of_mean_treatment,
        critical=critical,
    )
    return Comparison(
        control_mean=control.mean,
        treatment_mean=treatment.mean,
        absolute_lift=difference,
        absolute_interval=Interval(difference - half_width, difference + half_width),
        relative_lift=relative_lift,
        relative_interval=relative_interval,
        p_value=p_value,
    )


def _relative_lift(
    *,
    mean_control: float,
    mean_treatment: float,
    variance_of_mean_control: float,
    variance_of_mean_treatment: float,
    critical: float,
) -> tuple[float | None, Interval | None]:
    if mean_control == 0:
        return None, None
    lift = mean_treatment / mean_control - 1
    # Delta method for the ratio of two independent means, as GrowthBook's frequentist engine:
    # Var(T/C) ≈ Var(T)/C² + T²·Var(C)/C⁴.
    variance = variance_of_mean_treatment / mean_control**2 + mean_treatment**2 * variance_of_mean_control / mean_control**4
    half_width = critical * math.sqrt(variance)
    return lift, Interval(lift - half_width, lift + half_width)


def _two_sided_normal_p_value(difference: float, standard_error: float) -> float:
    if standard_error == 0.0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * scipy_stats.norm.sf(abs(difference) / standard_error))


# --------------------------------------------------------------------------------------------
# Sample-ratio mismatch


def srm_p_value(*, observed: Sequence[int], expected_fractions: Sequence[float]) -> float:
    """Chi-square goodness-of-fit p-value of arm counts against the planned split.

    ``expected_fractions`` must sum to 1 and cover the same arms, in the same order, as
    ``observed``. An arm planned at 0 % that has users is an impossible split (p = 0); arms planned
    at 0 % with no users are left out. With no users at all there is no evidence of anything (p = 1).
    """
    if len(observed) != len(expected_fractions) or len(observed) < 2:
        raise ValueError("observed and expected_fractions need the same length, at least 2")
    if any(count < 0 for count in observed) or any(fraction < 0 for fraction in expected_fractions):
        raise ValueError("counts and fractions must be non-negative")
    if not math.isclose(math.fsum(expected_fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"expected_fractions must sum to 1, got {math.fsum(expected_fractions)!r}")
    total = sum(observed)
    if total == 0:
        return 1.0
    kept_observed: list[float] = []
    kept_expected: list[float] = []
    for count, fraction in zip(observed, expected_fractions):
        if fraction == 0:
            if count > 0:
                return 0.0
            continue
        kept_observed.append(count)
        kept_expected.append(fraction * total)
    if len(kept_observed) < 2:
        return 1.0
    statistic = sum((o - e) ** 2 / e for o, e in zip(kept_observed, kept_expected))
    return float(scipy_stats.chi2.sf(statistic, len(kept_observed) - 1))


# --------------------------------------------------------------------------------------------
# Sequential (always-valid over the planned horizon) interval for treatment − control


@dataclass(frozen=True)
class SequentialDifference:
    estimate: float  # treatment mean − control mean
    interval: Interval  # holds at every look up to the planned horizon with probability 1 − alpha
    information_fraction: float  # τ: 1.0 when the planned sample per arm is reached

    @property
    def excludes_zero(self) -> bool:
        return not self.interval.contains(0.0)


def sequential_difference(
    *,
    control: ArmSummary,
    treatment: ArmSummary,
    alpha: float = DEFAULT_ALPHA,
    planned_samples_per_arm: int = DEFAULT_PLANNED_SAMPLES_PER_ARM,
) -> SequentialDifference | None:
    """The confidence-sequence interval for treatment − control. None below 2 values per arm."""
    if control.n < 2 or treatment.n < 2:
        return None
    standard_error = math.sqrt(control.variance / control.n + treatment.variance / treatment.n)
    information_fraction = _information_fraction(control.n, treatment.n, planned_samples_per_arm)
    critical = float(sequential_critical_z(information_fraction=information_fraction, alpha=alpha))
    estimate = treatment.mean - control.mean
    half_width = critical * standard_error
    return SequentialDifference(
        estimate=estimate,
        interval=Interval(estimate - half_width, estimate + half_width),
        information_fraction=information_fraction,
    )


def sequential_critical_z(*, information_fraction: float | np.ndarray, alpha: float = DEFAULT_ALPHA) -> float | np.ndarray:
    """c(τ): how many standard errors the confidence sequence extends either side at τ (vectorised)."""
    level = sequential_boundary_level(alpha)
    return _mixture_boundary_z(np.asarray(information_fraction, dtype=float), level)


@functools.lru_cache(maxsize=32)
def sequential_boundary_level(alpha: float) -> float:
    """α_b such that a Brownian motion crosses the mixture boundary by τ = 1 with probability alpha."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    return float(
        optimize.brentq(lambda level: _crossing_probability(level) - alpha, alpha, 0.999, xtol=1e-7)
    )


def _information_fraction(n_control: int | np.ndarray, n_treatment: int | np.ndarray, planned: int) -> float | np.ndarray:
    effective_n = 2.0 / (1.0 / np.asarray(n_control, dtype=float) + 1.0 / np.asarray(n_treatment, dtype=float))
    return effective_n / planned


def _mixture_tuning(level: float) -> float:
    # u = ρ²·horizon, GrowthBook's choice of ρ: the boundary is narrowest at the planned horizon.
    log_term = -2.0 * math.log(level)
    return log_term + math.log1p(log_term)


def _mixture_boundary_z(information_fraction: np.ndarray, level: float) -> np.ndarray:
    u_tau = _mixture_tuning(level) * information_fraction
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 + 1.0 / u_tau) * (np.log1p(u_tau) + 2.0 * math.log(1.0 / level)))


def _crossing_probability(level: float, *, start: float = 0.01, steps: int = 80, grid_points: int = 241) -> float:
    """P(a standard Brownian motion B leaves |B(τ)| < √τ·c(τ) for some τ in (0, 1]), c drawn at ``level``.

    Propagates the density of B over a log-spaced grid of τ, killing mass outside the boundary; the
    chance of crossing *between* grid points is the Brownian-bridge formula
    exp(−2·(b₁ − x₁)(b₂ − x₂)/Δτ) for each side, which makes a coarse grid agree with continuous
    monitoring (checked against the constant boundary, whose answer is known in closed form, and
    against simulation in the tests). Before τ = 0.01 the boundary is > 9 standard deviations
    away, so nothing measurable crosses there.
    """
    taus = np.geomspace(start, 1.0, steps + 1)
    bounds = np.sqrt(taus) * _mixture_boundary_z(taus, level)
    x = np.linspace(-bounds[0], bounds[0], grid_points)
    weights = _trapezoid_weights(x)
    density = scipy_stats.norm.pdf(x, scale=math.sqrt(start))
    for index in range(steps):
        step = taus[index + 1] - taus[index]
        y = np.linspace(-bounds[index + 1], bounds[index + 1], grid_points)
        from_x, to_y = x[:, None], y[None, :]
        kernel = np.exp(-((to_y - from_x) ** 2) / (2 * step)) / math.sqrt(2 * math.pi * step)
        upper_gap = np.clip((bounds[index] - from_x) * (bounds[index + 1] - to_y), 0.0, None)
        lower_gap = np.clip((bounds[index] + from_x) * (bounds[index + 1] + to_y), 0.0, None)
        kernel *= (1 - np.exp(-2 * upper_gap / step)) * (1 - np.exp(-2 * lower_gap / step))
        density = (weights * density) @ kernel
        x, weights = y, _trapezoid_weights(y)
    return float(1.0 - np.sum(weights * density))


def _trapezoid_weights(grid: np.ndarray) -> np.ndarray:
    weights = np.full(grid.size, grid[1] - grid[0])
    weights[0] = weights[-1] = weights[0] / 2
    return weights


# --------------------------------------------------------------------------------------------
# Guardrails


@dataclass(frozen=True)
class GuardrailResult:
    metric: str
    state: GuardrailState
    estimate: float | None  # treatment − control in the metric's units; None without data
    interval: Interval | None  # the sequential interval for that difference
    reason: str  # one sentence a person can act on


def evaluate_guardrail(
    *,
    metric: str,
    harmful_direction: HarmfulDirection,
    threshold: float,
    control: ArmSummary,
    treatment: ArmSummary,
    threshold_kind: ThresholdKind = "absolute",
    on_violation: ViolationState = "breach",
    alpha: float = DEFAULT_ALPHA,
    min_samples_per_arm: int = DEFAULT_MIN_SAMPLES_PER_ARM,
    planned_samples_per_arm: int = DEFAULT_PLANNED_SAMPLES_PER_ARM,
) -> GuardrailResult:
    """Judge one guardrail metric of a running experiment; safe to call every minute.

    The rule: ``metric`` must not move in ``harmful_direction`` by more than ``threshold``, in the
    metric's units (``absolute``: 0.05 = 5 points of success rate) or as a fraction of control's
    mean (``relative``: 0.30 = 30 % slower). The rules themselves live on the experiment
    (experiments/services.py validates them and holds the defaults).

    * ``no_data`` — an arm has fewer than ``min_samples_per_arm`` values. Holds the stage; never
      advances it.
    * ``on_violation`` ('breach' or 'warning') — the sequential interval lies wholly on the harmful
      side of zero (the harm is real, at family-wise level alpha however often we look) *and* the
      estimated harm is beyond the threshold (the harm is large enough to act on).
    * ``warning`` — the estimate is beyond the threshold but not yet conclusive: hold, look again.
    * ``healthy`` — otherwise.

    A relative threshold is turned into metric units with control's current mean, whose own
    uncertainty is ignored: control is the larger arm for all but the last stage.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    if min_samples_per_arm < 2:
        raise ValueError("min_samples_per_arm must be at least 2: a variance needs two values")
    if control.n < min_samples_per_arm or treatment.n < min_samples_per_arm:
        return GuardrailResult(
            metric=metric,
            state="no_data",
            estimate=None,
            interval=None,
            reason=(
                f"{metric}: waiting for data — control has {control.n} and treatment {treatment.n} of "
                f"the {min_samples_per_arm} samples per arm needed"
            ),
        )
    result = sequential_difference(
        control=control, treatment=treatment, alpha=alpha, planned_samples_per_arm=planned_samples_per_arm
    )
    assert result is not None  # both arms have >= min_samples_per_arm >= 2 values
    harm_sign = -1.0 if harmful_direction == "decrease" else 1.0
    harm = harm_sign * result.estimate  # > 0 means treatment is worse
    limit = threshold if threshold_kind == "absolute" else threshold * abs(control.mean)
    harm_is_confirmed = (result.interval.high < 0) if harmful_direction == "decrease" else (result.interval.low > 0)
    summary = (
        f"{metric}: treatment {treatment.mean:.4g} vs control {control.mean:.4g} "
        f"(difference {result.estimate:+.4g}, {1 - alpha:.0%} sequential interval "
        f"{result.interval.low:+.4g} to {result.interval.high:+.4g}; limit {_describe_limit(threshold, threshold_kind, harmful_direction)})"
    )
    if harm > limit and harm_is_confirmed:
        action = "roll back" if on_violation == "breach" else "review the candidate"
        state: GuardrailState = on_violation
        reason = f"{summary} — worse than the limit, conclusively: {action}"
    elif harm > limit:
        state, reason = "warning", f"{summary} — beyond the limit but not yet conclusive: hold and keep watching"
    else:
        state, reason = "healthy", f"{summary} — within the limit"
    return GuardrailResult(metric=metric, state=state, estimate=result.estimate, interval=result.interval, reason=reason)


def _describe_limit(threshold: float, threshold_kind: ThresholdKind, harmful_direction: HarmfulDirection) -> str:
    verb = "down" if harmful_direction == "decrease" else "up"
    return f"{verb} {threshold:.0%}" if threshold_kind == "relative" else f"{verb} {threshold:g}"


# --------------------------------------------------------------------------------------------
# A/A simulation


@dataclass(frozen=True)
class AASimulationResult:
    experiments: int
    looks_per_experiment: int
    flagged: int  # experiments in which at least one look flagged a difference

    @property
    def false_alarm_rate(self) -> float:
        return self.flagged / self.experiments


def simulate_aa_experiments(
    *,
    seed: int,
    experiments: int = 1_000,
    method: Literal["sequential", "fixed_horizon"] = "sequential",
    stage_fractions: Sequence[float] = (0.10, 0.25, 0.50),
    looks_per_stage: int = 100,
    users_per_look: int = 40,
    success_rate: float = 0.9,
    alpha: float = DEFAULT_ALPHA,
    min_samples_per_arm: int = 100,
    planned_samples_per_arm: int | None = None,
    look_every: int = 1,
) -> AASimulationResult:
    """Run seeded A/A rollouts (both arms succeed with ``success_rate``) and count false alarms.

    Each experiment goes through ``stage_fractions``; in every look interval ("minute")
    ``users_per_look`` users arrive and each lands in treatment with the stage's fraction. At
    every ``look_every``-th minute, once both arms have ``min_samples_per_arm`` users, the
    success-rate difference is tested — by the sequential interval, or by the naive 95 % z-test
    that ignores the repeated looks. ``planned_samples_per_arm`` defaults to the n_eff the design
    reaches at its end. Vectorised over experiments × looks with numpy.
    """
    rng = np.random.default_rng(seed)
    fractions = np.repeat(np.asarray(stage_fractions, dtype=float), looks_per_stage)
    treatment_arrivals = rng.binomial(users_per_look, np.broadcast_to(fractions, (experiments, fractions.size)))
    control_arrivals = users_per_look - treatment_arrivals
    n_treatment = np.cumsum(treatment_arrivals, axis=1)
    n_control = np.cumsum(control_arrivals, axis=1)
    successes_treatment = np.cumsum(rng.binomial(treatment_arrivals, success_rate), axis=1)
    successes_control = np.cumsum(rng.binomial(control_arrivals, success_rate), axis=1)

    looked = np.zeros(fractions.size, dtype=bool)
    looked[look_every - 1 :: look_every] = True
    visible = looked & (n_treatment >= max(min_samples_per_arm, 2)) & (n_control >= max(min_samples_per_arm, 2))

    # Per-arm rates and sample variances exactly as ArmSummary computes them from (n, Σx, Σx²).
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_treatment = successes_treatment / n_treatment
        rate_control = successes_control / n_control
        variance_treatment = rate_treatment * (1 - rate_treatment) * n_treatment / (n_treatment - 1)
        variance_control = rate_control * (1 - rate_control) * n_control / (n_control - 1)
        standard_error = np.sqrt(variance_treatment / n_treatment + variance_control / n_control)
        z = np.where(standard_error > 0, (rate_treatment - rate_control) / standard_error, 0.0)

    if method == "sequential":
        if planned_samples_per_arm is None:
            expected_treatment = users_per_look * fractions.sum()
            expected_control = users_per_look * (1 - fractions).sum()
            planned_samples_per_arm = round(2 / (1 / expected_treatment + 1 / expected_control))
        with np.errstate(divide="ignore", invalid="ignore"):
            information = _information_fraction(n_control, n_treatment, planned_samples_per_arm)
        critical = sequential_critical_z(information_fraction=information, alpha=alpha)
    elif method == "fixed_horizon":
        critical = scipy_stats.norm.ppf(1 - alpha / 2)
    else:
        raise ValueError(f"unknown method {method!r}")

    flagged = (visible & (np.abs(z) >= critical)).any(axis=1)
    return AASimulationResult(experiments=experiments, looks_per_experiment=int(looked.sum()), flagged=int(flagged.sum()))
