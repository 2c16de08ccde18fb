"""Seeded rollout simulations that measure the decision rules' operating characteristics (pure:
numpy, no Django). bench/decisions/run.py prints them at production scale; the tests pin them at a
smaller one.

A simulated rollout: users arrive every minute (Poisson, ``users_per_hour``), each lands in
treatment with the stage's share and reports ``outcomes_per_user`` outcomes at once, correlated
within the user (a beta-binomial with intra-user correlation ``within_user_correlation``). The
stages (10 → 25 → 50 % for 48 h each by default) are the strata of experiments/stats.py; every
``check_every_minutes`` the guardrail rule of stats.evaluate_guardrail is applied, vectorised over
experiments × minutes with exactly the formulas of stats.stratified_estimate and the decision of
stats.harm_beyond_tolerance with stats.guardrail_critical_z (a test checks the two agree on the same
data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

from experiments import stats


@dataclass(frozen=True)
class Rollout:
    users_per_hour: float = 2_000
    stage_fractions: tuple[float, ...] = (0.10, 0.25, 0.50)
    stage_hours: float = 48
    check_every_minutes: int = 1
    outcomes_per_user: int = 1
    within_user_correlation: float = 0.0
    control_rate: float = 0.9
    # Base rate at the end of the rollout, for a drift that moves both arms alike (None: no drift).
    final_control_rate: float | None = None
    treatment_drop: float = 0.0  # absolute: 0.10 = treatment succeeds 10 points less
    # The guardrail rule (production defaults).
    tolerance: float = 0.05
    alpha: float = stats.DEFAULT_ALPHA
    min_users_per_arm: int = stats.DEFAULT_MIN_SAMPLES_PER_ARM
    planned_users_per_arm: int = stats.DEFAULT_PLANNED_SAMPLES_PER_ARM
    # Analyse each user as one unit (True, production) or every outcome as independent (the old way).
    per_user: bool = True

    @property
    def minutes_per_stage(self) -> int:
        return round(self.stage_hours * 60)

    @property
    def minutes(self) -> int:
        return self.minutes_per_stage * len(self.stage_fractions)


@dataclass
class _Cells:
    """Cumulative per-user statistics of one arm, shape (experiments, minutes, stages)."""

    users: np.ndarray
    total: np.ndarray
    squares: np.ndarray


@dataclass(frozen=True)
class TriggerRate:
    """How many simulated rollouts a rule acted on (rolled back, paused), and after how long."""

    experiments: int
    triggered: int
    hours_to_trigger: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.triggered / self.experiments

    @property
    def median_hours(self) -> float | None:
        return float(np.median(self.hours_to_trigger)) if self.hours_to_trigger else None


def _rates(rollout: Rollout, minute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Control's and treatment's success probability at each minute."""
    progress = minute / max(1, rollout.minutes - 1)
    final = rollout.control_rate if rollout.final_control_rate is None else rollout.final_control_rate
    control = rollout.control_rate + (final - rollout.control_rate) * progress
    return control, control - rollout.treatment_drop


def _arm_minutes(
    rng: np.random.Generator, rollout: Rollout, users: np.ndarray, rates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Σx and Σx² per (experiment, minute) of the users arriving then, x = a user's successes."""
    k = rollout.outcomes_per_user
    if k == 1:
        successes = rng.binomial(users, np.broadcast_to(rates, users.shape))
        return successes.astype(float), successes.astype(float)
    flat_counts = users.ravel()
    cell_of_user = np.repeat(np.arange(flat_counts.size), flat_counts)
    user_rates = np.broadcast_to(rates, users.shape).ravel()[cell_of_user]
    rho = rollout.within_user_correlation
    if rho > 0:
        strength = (1 - rho) / rho
        user_rates = rng.beta(user_rates * strength, (1 - user_rates) * strength)
    x = rng.binomial(k, user_rates).astype(float)
    total = np.bincount(cell_of_user, weights=x, minlength=flat_counts.size).reshape(users.shape)
    squares = np.bincount(cell_of_user, weights=x * x, minlength=flat_counts.size).reshape(users.shape)
    return total, squares


def simulate_cells(rng: np.random.Generator, rollout: Rollout, experiments: int) -> tuple[_Cells, _Cells]:
    minutes, per_stage, stages = rollout.minutes, rollout.minutes_per_stage, len(rollout.stage_fractions)
    minute = np.arange(minutes)
    stage_of_minute = minute // per_stage
    fractions = np.asarray(rollout.stage_fractions)[stage_of_minute]
    arrivals = rng.poisson(rollout.users_per_hour / 60, size=(experiments, minutes))
    treated = rng.binomial(arrivals, np.broadcast_to(fractions, arrivals.shape))
    control_rate, treatment_rate = _rates(rollout, minute)
    arms = []
    for users, rates in ((arrivals - treated, control_rate), (treated, treatment_rate)):
        total, squares = _arm_minutes(rng, rollout, users, rates)
        cells = _Cells(*(np.zeros((experiments, minutes, stages)) for _ in range(3)))
        for stage in range(stages):
            window = slice(stage * per_stage, (stage + 1) * per_stage)
            for target, source in ((cells.users, users), (cells.total, total), (cells.squares, squares)):
                running = np.cumsum(source[:, window], axis=1)
                target[:, window, stage] = running
                # A finished stage keeps its totals for every later look.
                target[:, (stage + 1) * per_stage:, stage] = running[:, -1:]
        arms.append(cells)
    return arms[0], arms[1]


def _per_event(cells: _Cells, k: int) -> _Cells:
    """The old analysis: every outcome an independent 0/1 observation."""
    return _Cells(users=cells.users * k, total=cells.total, squares=cells.total)


def stratified_difference(control: _Cells, treatment: _Cells, k: int) -> tuple[np.ndarray, ...]:
    """stats.stratified_estimate, vectorised: (difference, standard error, effective users, control
    mean, treatment mean). x is a user's successes over k outcomes, so the ratio's per-user variance
    is Var(x) / k²."""
    nc, nt = control.users, treatment.users
    usable = (nc >= 2) & (nt >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(usable, nc * nt / (nc + nt), 0.0)
        weight_sum = weights.sum(axis=-1)
        means, variances = [], []
        for arm in (control, treatment):
            n = arm.users
            mean = np.where(usable, arm.total / (k * n), 0.0)
            variance_of_x = np.where(usable, np.maximum(arm.squares - arm.total**2 / n, 0) / (n - 1), 0.0)
            means.append((weights * mean).sum(axis=-1) / weight_sum)
            variances.append((weights**2 * np.where(usable, variance_of_x / k**2 / n, 0.0)).sum(axis=-1) / weight_sum**2)
    difference = means[1] - means[0]
    return difference, np.sqrt(variances[0] + variances[1]), 2 * weight_sum, means[0], means[1]


def simulate_rollbacks(*, rollout: Rollout, experiments: int, seed: int, batch: int = 25) -> TriggerRate:
    """How often the success-rate guardrail rolls a rollout back, and how soon."""
    rng = np.random.default_rng(seed)
    rolled_back, hours = 0, []
    k = rollout.outcomes_per_user
    for start in range(0, experiments, batch):
        size = min(batch, experiments - start)
        control, treatment = simulate_cells(rng, rollout, size)
        if not rollout.per_user:
            control, treatment, k = _per_event(control, k), _per_event(treatment, k), 1
        looks = np.arange(rollout.minutes) % rollout.check_every_minutes == rollout.check_every_minutes - 1
        control = _Cells(*(getattr(control, name)[:, looks] for name in ("users", "total", "squares")))
        treatment = _Cells(*(getattr(treatment, name)[:, looks] for name in ("users", "total", "squares")))
        difference, standard_error, effective, _, _ = stratified_difference(control, treatment, k)
        critical = stats.guardrail_critical_z(
            effective_users=effective, alpha=rollout.alpha, planned_samples_per_arm=rollout.planned_users_per_arm,
            early_samples_per_arm=stats.EARLY_HORIZON_PER_MIN_SAMPLE * rollout.min_users_per_arm,
        )
        enough = (control.users.sum(axis=-1) >= rollout.min_users_per_arm) & (
            treatment.users.sum(axis=-1) >= rollout.min_users_per_arm
        )
        with np.errstate(invalid="ignore"):
            breach = enough & (effective > 0) & stats.harm_beyond_tolerance(
                harm=-difference, limit=rollout.tolerance, standard_error=standard_error, critical=critical
            )
        first = np.where(breach.any(axis=1), breach.argmax(axis=1), -1)
        look_minutes = np.flatnonzero(looks) + 1
        for index in first[first >= 0]:
            hours.append(look_minutes[index] / 60)
        rolled_back += int((first >= 0).sum())
    return TriggerRate(experiments=experiments, triggered=rolled_back, hours_to_trigger=hours)


def final_p_values(*, rollout: Rollout, experiments: int, seed: int, stratified: bool = True) -> np.ndarray:
    """The results page's two-sided p-value of success rate at the end of each simulated rollout,
    stratified by stage (production) or pooled over stages (the old way). Normal approximation: the
    arms have tens of thousands of users."""
    rng = np.random.default_rng(seed)
    control, treatment = simulate_cells(rng, rollout, experiments)
    k = rollout.outcomes_per_user
    last = [_Cells(*(getattr(arm, name)[:, -1:] for name in ("users", "total", "squares"))) for arm in (control, treatment)]
    if not stratified:
        last = [_Cells(*(getattr(arm, name).sum(axis=-1, keepdims=True) for name in ("users", "total", "squares"))) for arm in last]
    difference, standard_error, _, _, _ = stratified_difference(last[0], last[1], k)
    return 2 * scipy_stats.norm.sf(np.abs(difference[:, 0]) / standard_error[:, 0])


# --------------------------------------------------------------------------------------------
# SRM


def simulate_srm(
    *,
    experiments: int,
    seed: int,
    users_per_hour: float = 2_000,
    stage_fractions: Sequence[float] = (0.10, 0.25, 0.50),
    true_fractions: Sequence[float] | None = None,
    stage_hours: float = 48,
    check_every_minutes: int = 1,
    rollout_alpha: float = 0.01,
    concentration: float = stats.SRM_PRIOR_CONCENTRATION,
) -> TriggerRate:
    """How often the per-minute SRM check pauses a rollout, and how soon. ``true_fractions`` is the
    share treatment really gets (the planned one when None: a correct split)."""
    rng = np.random.default_rng(seed)
    true_fractions = stage_fractions if true_fractions is None else true_fractions
    per_stage = round(stage_hours * 60)
    threshold = stats.srm_threshold_per_stage(
        rollout_alpha=rollout_alpha, stage_plan=[round(f * 100) for f in stage_fractions] + [100]
    )
    log_threshold = -math.log(threshold)
    first_pause = np.full(experiments, -1.0)
    for stage, (planned, true) in enumerate(zip(stage_fractions, true_fractions)):
        arrivals = rng.poisson(users_per_hour / 60, size=(experiments, per_stage))
        treated = np.cumsum(rng.binomial(arrivals, true), axis=1).astype(float)
        total = np.cumsum(arrivals, axis=1).astype(float)
        control = total - treated
        a, b = concentration * planned, concentration * (1 - planned)
        log_factor = (
            special.gammaln(a + b) - special.gammaln(a + b + total)
            + special.gammaln(a + treated) - special.gammaln(a) + special.gammaln(b + control) - special.gammaln(b)
            - treated * math.log(planned) - control * math.log(1 - planned)
        )
        looks = np.arange(per_stage) % check_every_minutes == check_every_minutes - 1
        flagged = (log_factor >= log_threshold) & looks
        hit = flagged.any(axis=1) & (first_pause < 0)
        first_pause[hit] = (stage * per_stage + flagged[hit].argmax(axis=1) + 1) / 60
    paused = first_pause >= 0
    return TriggerRate(experiments=experiments, triggered=int(paused.sum()), hours_to_trigger=list(first_pause[paused]))
