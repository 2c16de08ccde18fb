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

Returning users (``Rollout.user_population``): the arrivals are visits of a fixed population of
users, each keeping its hash bucket (control stays control, a treated user stays treated as the
share rises) and its own success propensity across the stages, as real users do. The results
page's final estimate is then computed per simulated rollout by stats.compare itself, on the cells
and shared-user sums stats.strata_from_users builds from the users (what the selector's SQL builds).

The latency guardrail (:func:`simulate_latency_guardrail`): log-normal requests, judged uncapped as
the guardrails judge them (the comparisons' cap does not apply), on each cell's running per-user
sums (:func:`cell_sums`); the looks a vectorised screen puts at or near the line are judged by
stats.evaluate_guardrail itself, so every verdict counted is the product's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize, special
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
    # None: every arrival is a new user. N: the arrivals are visits (Poisson) of N users who return
    # across stages with their bucket and their propensity (beta, within_user_correlation); each
    # visit reports outcomes_per_user outcomes. Only final_estimates simulates them.
    user_population: int | None = None

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
    if rollout.user_population is not None:
        raise ValueError("simulate_cells draws a new user per arrival; returning users (user_population) are "
                         "simulated by final_estimates")
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


def simulate_rollbacks(*, rollout: Rollout, experiments: int, seed: int, batch: int = 25, hold: bool = False) -> TriggerRate:
    """How often the success-rate guardrail rolls a rollout back, and how soon. ``hold=True``: how often
    (and how soon) its estimate goes beyond the tolerance at some look instead — the 'warning' that
    holds the stage (stats.evaluate_guardrail: harm > limit; a point estimate, not error-controlled)."""
    rng = np.random.default_rng(seed)
    rolled_back, hours = 0, []
    for start in range(0, experiments, batch):
        size = min(batch, experiments - start)
        control, treatment = simulate_cells(rng, rollout, size)
        # Per batch: the per-event view counts each outcome as a user of one outcome (k = 1). Overwriting
        # the rollout's k here (before 2026-12-07) converted every later batch with k = 1, reading a
        # user's success count as a rate: 64 % "rollbacks" of an A/A that were the bug's.
        k = rollout.outcomes_per_user
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
        if hold:
            critical = np.zeros_like(critical)
        first = _first_rollback_look(rollout, control, treatment, difference=difference, standard_error=standard_error,
                                     effective=effective, critical=critical)
        look_minutes = np.flatnonzero(looks) + 1
        for index in first[first >= 0]:
            hours.append(look_minutes[index] / 60)
        rolled_back += int((first >= 0).sum())
    return TriggerRate(experiments=experiments, triggered=rolled_back, hours_to_trigger=hours)


def simulate_guardrail_resumes(
    *, rollout: Rollout, resumes: int, experiments: int, seed: int, spend_on_resumes: bool = True, batch: int = 25
) -> TriggerRate:
    """How often the success-rate guardrail rolls back a rollout paused and resumed ``resumes`` times,
    each resume at a uniformly random minute of the rollout (the paused time itself is not simulated:
    the rollout's minutes are the same). As production does (services._resume), a resume restarts
    the current stage's stratum — its data before the resume drop out, earlier stages' stay — and
    starts the rollout's next guardrail segment: the k-th judges at stats.guardrail_critical_z(segment=k);
    with ``spend_on_resumes=False`` every segment at the whole alpha (before 2026-12). The same seed
    draws the same data both ways."""
    rng = np.random.default_rng(seed)
    k, minutes = rollout.outcomes_per_user, rollout.minutes
    looks = np.arange(minutes) % rollout.check_every_minutes == rollout.check_every_minutes - 1
    look_minutes = np.flatnonzero(looks) + 1
    rolled_back, hours = 0, []
    for start in range(0, experiments, batch):
        size = min(batch, experiments - start)
        arms = simulate_cells(rng, rollout, size)
        cuts = np.sort(rng.integers(1, minutes, size=(size, resumes)), axis=1)
        for arm in arms:
            _restart_strata(arm, cuts, rollout.minutes_per_stage)
        control, treatment = (_Cells(*(getattr(arm, name)[:, looks] for name in ("users", "total", "squares"))) for arm in arms)
        segment = 1 + (cuts[:, None, :] <= np.arange(minutes)[None, :, None]).sum(axis=-1)[:, looks]
        difference, standard_error, effective, _, _ = stratified_difference(control, treatment, k)
        critical = np.empty_like(effective)
        for number in range(1, resumes + 2):
            at = segment == number
            critical[at] = stats.guardrail_critical_z(
                effective_users=effective[at], alpha=rollout.alpha, planned_samples_per_arm=rollout.planned_users_per_arm,
                early_samples_per_arm=stats.EARLY_HORIZON_PER_MIN_SAMPLE * rollout.min_users_per_arm,
                segment=number if spend_on_resumes else None,
            )
        first = _first_rollback_look(rollout, control, treatment, difference=difference, standard_error=standard_error,
                                     effective=effective, critical=critical)
        hours += [look_minutes[index] / 60 for index in first[first >= 0]]
        rolled_back += int((first >= 0).sum())
    return TriggerRate(experiments=experiments, triggered=rolled_back, hours_to_trigger=hours)


def _first_rollback_look(
    rollout: Rollout, control: _Cells, treatment: _Cells, *, difference: np.ndarray, standard_error: np.ndarray,
    effective: np.ndarray, critical: np.ndarray,
) -> np.ndarray:
    """Per simulated rollout, the index of the first look at which the guardrail rolls back (both arms
    past the minimum users and the harm beyond the tolerance at `critical`), -1 when none does."""
    enough = (control.users.sum(axis=-1) >= rollout.min_users_per_arm) & (
        treatment.users.sum(axis=-1) >= rollout.min_users_per_arm
    )
    with np.errstate(invalid="ignore"):
        breach = enough & (effective > 0) & stats.harm_beyond_tolerance(
            harm=-difference, limit=rollout.tolerance, standard_error=standard_error, critical=critical
        )
    return np.where(breach.any(axis=1), breach.argmax(axis=1), -1)


def _restart_strata(cells: _Cells, cuts: np.ndarray, per_stage: int) -> None:
    """Drop, in place, each stage's running sums from before each of its resumes (``cuts``: per
    experiment, the sorted minutes the resumes happen at): the stage's stratum counts from the resume,
    as production's stage window [started_at, …) does. Sorted, so each cut drops what the previous
    one left."""
    for experiment, minute in zip(*np.nonzero(cuts >= 0)):
        cut = int(cuts[experiment, minute])
        stage = cut // per_stage
        if cut % per_stage == 0:  # resumed at the stage's first minute: nothing before it in the stage
            continue
        for running in (cells.users, cells.total, cells.squares):
            running[experiment, cut:, stage] -= running[experiment, cut - 1, stage]


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


def peeking_rejections(*, rollout: Rollout, experiments: int, seed: int, batch: int = 25) -> dict[str, float]:
    """How often the results page's fixed-horizon p-value of success rate (normal approximation) is
    below 0.05 at the end of the rollout, at some daily look, and at some hourly look from hour 3:
    what reading it as a stopping rule would cost."""
    rng = np.random.default_rng(seed)
    hourly = np.arange(59, rollout.minutes, 60)
    counts = {"end": 0, "daily": 0, "hourly": 0}
    for start in range(0, experiments, batch):
        control, treatment = simulate_cells(rng, rollout, min(batch, experiments - start))
        picked = [_Cells(*(getattr(arm, name)[:, hourly] for name in ("users", "total", "squares"))) for arm in (control, treatment)]
        difference, standard_error, _, _, _ = stratified_difference(picked[0], picked[1], rollout.outcomes_per_user)
        with np.errstate(divide="ignore", invalid="ignore"):
            significant = 2 * scipy_stats.norm.sf(np.abs(difference) / standard_error) < 0.05
        counts["end"] += int(significant[:, -1].sum())
        counts["daily"] += int(significant[:, 23::24].any(axis=1).sum())
        counts["hourly"] += int(significant[:, 2:].any(axis=1).sum())
    return {look: count / experiments for look, count in counts.items()}


# --------------------------------------------------------------------------------------------
# Returning users: the results page's estimate at the end of the rollout


def simulate_users(
    rng: np.random.Generator, rollout: Rollout, *, returning: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One rollout of ``rollout.user_population`` users, per (user, stage): successes, outcomes,
    whether treated, and the expected difference of the stage's arms (per stage). ``returning``
    False draws new users in every stage (independent strata, for contrast): ``population`` rows
    per stage, each present in its own stage only."""
    population = rollout.user_population
    if population is None or population < 2:
        raise ValueError("simulate_users needs Rollout.user_population (at least 2 users)")
    stages = len(rollout.stage_fractions)
    stage_middle = (np.arange(stages) + 0.5) * rollout.minutes_per_stage
    control_rates, _ = _rates(rollout, stage_middle)
    visits_per_user = rollout.users_per_hour * rollout.stage_hours / population
    rho = rollout.within_user_correlation
    # Treatment scales each user's propensity, so an arm's expected rate drops by exactly treatment_drop.
    treatment_factor = 1 - rollout.treatment_drop / rollout.control_rate
    draws = 1 if returning else stages
    bucket = rng.random((population, draws))
    if rho > 0:
        strength = (1 - rho) / rho
        base = rollout.control_rate
        propensity = rng.beta(base * strength, (1 - base) * strength, size=(population, draws))
    else:
        propensity = np.full((population, draws), rollout.control_rate)
    bucket, propensity = np.broadcast_to(bucket, (population, stages)), np.broadcast_to(propensity, (population, stages))
    treated = bucket < np.asarray(rollout.stage_fractions)
    rate = np.clip(propensity * (control_rates / rollout.control_rate) * np.where(treated, treatment_factor, 1.0), 0, 1)
    outcomes = rng.poisson(visits_per_user, size=(population, stages)) * rollout.outcomes_per_user
    successes = rng.binomial(outcomes, rate)
    if not returning:  # stage s's users are rows s·population … (s + 1)·population − 1
        blocks = np.kron(np.eye(stages, dtype=bool), np.ones((population, 1), dtype=bool))
        outcomes = np.where(blocks, np.tile(outcomes, (stages, 1)), 0)
        successes = np.where(blocks, np.tile(successes, (stages, 1)), 0)
        treated = np.tile(treated, (stages, 1))
    return successes.astype(float), outcomes.astype(float), treated, control_rates * (treatment_factor - 1)


@dataclass(frozen=True)
class FinalEstimates:
    """The results page's success-rate comparison at the end of each simulated rollout."""

    p_values: np.ndarray
    covered: np.ndarray  # the 95 % absolute interval holds the true difference
    standard_errors: np.ndarray
    differences: np.ndarray
    true_differences: np.ndarray

    def rejection_rate(self, alpha: float = 0.05) -> float:
        return float((self.p_values < alpha).mean())

    @property
    def coverage(self) -> float:
        return float(self.covered.mean())

    @property
    def sd_over_se(self) -> float:
        """The estimate's spread over the rollouts against the standard error reported (1: honest)."""
        return float(self.differences.std(ddof=1) / math.sqrt(float((self.standard_errors**2).mean())))


def final_estimates(*, rollout: Rollout, experiments: int, seed: int, returning: bool = True) -> tuple[FinalEstimates, FinalEstimates]:
    """stats.compare on each simulated rollout's users (``rollout.user_population`` of them), as
    production computes it (clustered by user) and, on the same data, with the shared-user sums
    dropped: the stages as independent strata (the old way)."""
    rng = np.random.default_rng(seed)
    collected: dict[bool, list[list[float]]] = {True: [], False: []}
    for _ in range(experiments):
        successes, outcomes, treated, stage_truth = simulate_users(rng, rollout, returning=returning)
        clustered = stats.strata_from_users(successes, outcomes, treated)
        sizes = np.array([[s.control.users, s.treatment.users] for s in clustered], dtype=float)
        weights = sizes[:, 0] * sizes[:, 1] / sizes.sum(axis=1)
        truth = float(weights @ stage_truth / weights.sum())
        for is_clustered, strata in ((True, clustered), (False, [stats.Stratum(s.control, s.treatment) for s in clustered])):
            comparison, estimate = stats.compare(strata), stats.stratified_estimate(strata)
            if comparison is None or estimate is None or comparison.p_value is None or comparison.absolute_interval is None:
                continue
            collected[is_clustered].append([
                comparison.p_value, float(comparison.absolute_interval.contains(truth)), estimate.standard_error,
                estimate.difference - truth, truth,
            ])
    results = []
    for is_clustered in (True, False):
        columns = np.asarray(collected[is_clustered], dtype=float).reshape(-1, 5).T
        results.append(FinalEstimates(columns[0], columns[1].astype(bool), columns[2], columns[3], columns[4]))
    return results[0], results[1]


# --------------------------------------------------------------------------------------------
# SRM


@dataclass(frozen=True)
class SrmPauses(TriggerRate):
    """TriggerRate's first pauses, and every pause counted: a rollout resumed after a pause can be
    paused again. ``triggered`` counts rollouts paused at least once, ``pauses`` all their pauses."""

    pauses: int = 0

    @property
    def pauses_per_rollout(self) -> float:
        return self.pauses / self.experiments


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
    manual_resumes: int = 0,
    srm_resumes: int = 0,
    spend_on_resumes: bool = True,
) -> SrmPauses:
    """How often the per-minute SRM check pauses a rollout, and how soon (running hours from the start).
    ``true_fractions``: the share treatment really gets (the planned one when None: a correct split).

    Resumes restart the stage's window, and with it the SRM test, as production does; the stage then
    runs ``stage_hours`` from its last resume. In each stage a person pauses and resumes
    ``manual_resumes`` times for reasons of their own (each at a uniformly random minute of the
    window), and resumes up to ``srm_resumes`` SRM pauses (they find nothing wrong); past that an
    SRM pause stops the rollout. The k-th test of a stage pauses below stats.srm_threshold(test=k);
    with ``spend_on_resumes=False`` every test pauses below the stage's whole share (before 2026-12)."""
    rng = np.random.default_rng(seed)
    true_fractions = stage_fractions if true_fractions is None else true_fractions
    per_stage = round(stage_hours * 60)
    plan = [round(fraction * 100) for fraction in stage_fractions] + [100]
    share = stats.srm_stage_share(rollout_alpha=rollout_alpha, stage_plan=plan)

    def log_threshold(test: int) -> float:
        threshold = stats.srm_threshold(rollout_alpha=rollout_alpha, stage_plan=plan, test=test) if spend_on_resumes else share
        return -math.log(threshold)

    first_pause, pauses = np.full(experiments, -1.0), np.zeros(experiments, dtype=int)
    elapsed, stopped = np.zeros(experiments), np.zeros(experiments, dtype=bool)  # running minutes; paused for good
    for planned, true in zip(stage_fractions, true_fractions):
        test, running = np.ones(experiments, dtype=int), ~stopped
        manual_left, srm_left = np.full(experiments, manual_resumes), np.full(experiments, srm_resumes)
        while running.any():
            index = np.flatnonzero(running)
            length = np.where(manual_left[index] > 0, rng.integers(1, per_stage + 1, size=index.size), per_stage)
            minute = _srm_first_pause(
                rng, users_per_minute=users_per_hour / 60, minutes=per_stage, planned=planned, true=true,
                log_thresholds=np.array([log_threshold(k) for k in test[index]]), window=length,
                check_every_minutes=check_every_minutes,
            )
            paused, manual = minute > 0, (minute == 0) & (manual_left[index] > 0)
            elapsed[index] += np.where(paused, minute, length)
            pauses[index[paused]] += 1
            first = index[paused & (first_pause[index] < 0)]
            first_pause[first] = elapsed[first] / 60
            resumed = paused & (srm_left[index] > 0)
            srm_left[index[resumed]] -= 1
            manual_left[index[manual]] -= 1
            test[index[resumed | manual]] += 1
            stopped[index[paused & ~resumed]] = True
            running[index[~(resumed | manual)]] = False
    ever = first_pause >= 0
    return SrmPauses(experiments=experiments, triggered=int(ever.sum()), hours_to_trigger=list(first_pause[ever]),
                     pauses=int(pauses.sum()))


def _srm_first_pause(
    rng: np.random.Generator, *, users_per_minute: float, minutes: int, planned: float, true: float,
    log_thresholds: np.ndarray, window: np.ndarray, check_every_minutes: int,
    concentration: float = stats.SRM_PRIOR_CONCENTRATION,
) -> np.ndarray:
    """The minute (1, 2, …) at which each of a batch of fresh SRM tests first pauses within its
    ``window`` (minutes), 0 where it never does: the Bayes factor of stats.srm_bayes_factor for two
    arms, vectorised over tests × minutes, against each test's own threshold."""
    arrivals = rng.poisson(users_per_minute, size=(log_thresholds.size, minutes))
    treated = np.cumsum(rng.binomial(arrivals, true), axis=1).astype(float)
    total = np.cumsum(arrivals, axis=1).astype(float)
    control = total - treated
    a, b = concentration * planned, concentration * (1 - planned)
    log_factor = (
        special.gammaln(a + b) - special.gammaln(a + b + total)
        + special.gammaln(a + treated) - special.gammaln(a) + special.gammaln(b + control) - special.gammaln(b)
        - treated * math.log(planned) - control * math.log(1 - planned)
    )
    minute = np.arange(minutes)
    looks = (minute % check_every_minutes == check_every_minutes - 1) & (minute < window[:, None])
    flagged = (log_factor >= log_thresholds[:, None]) & looks
    return np.where(flagged.any(axis=1), flagged.argmax(axis=1) + 1, 0)


# --------------------------------------------------------------------------------------------
# Heavy-tailed metrics (latency, cost per request): the relative interval's coverage, capped or not


@dataclass(frozen=True)
class TailedMetric:
    """One stage of an experiment on a per-request metric: ``users`` users, each in treatment with
    probability ``treatment_share``, each sending 1 + Poisson(1) requests. A request's value is
    log-normal: a per-user factor (log-sd ``user_sigma``) times a per-request one, ``sigma`` being
    the log-sd of a request's value overall (1.5: heavy-tailed, mean/median 3.1; 0.3: light).
    Treatment multiplies every value by 1 + ``lift``."""

    users: int = 20_000
    treatment_share: float = 0.10
    sigma: float = 1.5
    user_sigma: float = 0.5
    lift: float = 0.0
    median: float = 800.0

    def log_means(self) -> tuple[float, float]:
        return math.log(self.median), math.log(self.median * (1 + self.lift))

    def capped_mean(self, log_mean: float, cap: float) -> float:
        """E[min(X, cap)] of a request's value X (log-normal), in closed form."""
        sigma = self.sigma
        if math.isinf(cap):
            return math.exp(log_mean + sigma**2 / 2)
        below = scipy_stats.norm.cdf((math.log(cap) - log_mean - sigma**2) / sigma)
        return math.exp(log_mean + sigma**2 / 2) * below + cap * scipy_stats.norm.sf((math.log(cap) - log_mean) / sigma)

    def population_cap(self, percentile: float) -> float:
        """The percentile of both arms' requests together (a mixture), which the pooled cap estimates."""
        share, (control, treatment) = self.treatment_share, self.log_means()

        def excess(log_value: float) -> float:
            below = (1 - share) * scipy_stats.norm.cdf((log_value - control) / self.sigma)
            return float(below + share * scipy_stats.norm.cdf((log_value - treatment) / self.sigma) - percentile / 100)

        return math.exp(optimize.brentq(excess, control - 20 * self.sigma, treatment + 20 * self.sigma))

    def true_lift(self, cap: float = math.inf) -> float:
        control, treatment = self.log_means()
        return self.capped_mean(treatment, cap) / self.capped_mean(control, cap) - 1


@dataclass(frozen=True)
class Coverage:
    """How often the relative-lift 95 % interval held the true lift, and on which side it missed."""

    experiments: int
    covered: int
    truth_below: int  # the interval lay above the truth
    truth_above: int  # the interval lay below the truth

    @property
    def rate(self) -> float:
        return self.covered / self.experiments


def _user_summary(values: np.ndarray, owner: np.ndarray, users: np.ndarray, requests: np.ndarray) -> stats.RatioSummary:
    """The RatioSummary of the users in ``users`` (x: summed values, y: requests) from per-request values."""
    x = np.bincount(owner, weights=values, minlength=requests.size)[users]
    y = requests[users].astype(float)
    return stats.RatioSummary(users=int(users.size), numerator_sum=float(x.sum()), numerator_sum_squares=float(x @ x),
                              denominator_sum=float(y.sum()), denominator_sum_squares=float(y @ y), cross_sum=float(x @ y))


def tailed_coverage(*, metric: TailedMetric, experiments: int, seed: int) -> dict[str, Coverage]:
    """stats.compare's relative-lift interval on simulated experiments, on the same data: the plain
    mean ('uncapped', the old way) against its true lift, and the mean of requests capped at the
    pooled :data:`stats.CAP_PERCENTILE` (production) against the true lift of capped means at the
    population's percentile."""
    rng = np.random.default_rng(seed)
    request_sigma = math.sqrt(max(metric.sigma**2 - metric.user_sigma**2, 0.0))
    truths = {"uncapped": metric.true_lift(), "capped": metric.true_lift(metric.population_cap(stats.CAP_PERCENTILE))}
    counts = {name: [0, 0, 0, 0] for name in truths}
    log_means = np.array(metric.log_means())
    for _ in range(experiments):
        treated = rng.random(metric.users) < metric.treatment_share
        requests = 1 + rng.poisson(1.0, size=metric.users)
        owner = np.repeat(np.arange(metric.users), requests)
        user_log = log_means[treated.astype(int)] + rng.normal(0.0, metric.user_sigma, size=metric.users)
        values = np.exp(user_log[owner] + rng.normal(0.0, request_sigma, size=owner.size))
        for name in truths:
            kept = np.minimum(values, stats.pooled_cap(values)) if name == "capped" else values
            strata = [stats.Stratum(_user_summary(kept, owner, np.flatnonzero(~treated), requests),
                                    _user_summary(kept, owner, np.flatnonzero(treated), requests))]
            comparison = stats.compare(strata)
            interval = comparison.relative_interval if comparison else None
            tally = counts[name]
            tally[0] += 1
            if interval is None:  # an unbounded Fieller set holds every lift (as part estimates counts it)
                tally[1] += 1
                continue
            tally[1] += int(interval.contains(truths[name]))
            tally[2] += int(truths[name] < interval.low)
            tally[3] += int(truths[name] > interval.high)
    return {name: Coverage(*tally) for name, tally in counts.items()}


# --------------------------------------------------------------------------------------------
# The latency guardrail over a rollout: the real (uncapped) requests, as the guardrails judge them


@dataclass(frozen=True)
class LatencyRollout:
    """A rollout (stages, traffic, the rule's α and samples: ``rollout``; its success-rate fields
    are unused) whose users each send 1 + Poisson(1) requests of log-normal latency (``metric``: its
    ``sigma``, ``user_sigma`` and ``median``; ``users``, ``treatment_share`` and ``lift`` are unused),
    judged by the default latency guardrail: "mean latency up more than ``tolerance``" (relative).

    The other per-request warning rules run through the same machinery: ``guardrail_metric``,
    ``harmful_direction`` and ``threshold_kind`` are the rule's (COST_ROLLOUT: cost per request up more
    than 50 %, log-normal like latency); ``values="quality"`` draws scores in [0, 1] instead — each
    user's mean quality Beta around ``quality_mean`` (concentration ``quality_user_concentration``),
    each request's score Beta around the user's (``quality_request_concentration``) — for the rule
    "quality down more than 0.05" (QUALITY_ROLLOUT), every request scored."""

    rollout: Rollout = Rollout()
    metric: TailedMetric = TailedMetric()
    tolerance: float = 0.30
    guardrail_metric: str = "latency_ms"
    harmful_direction: stats.HarmfulDirection = "increase"
    threshold_kind: stats.ThresholdKind = "relative"
    values: str = "lognormal"  # or "quality"
    quality_mean: float = 0.70
    quality_user_concentration: float = 20.0
    quality_request_concentration: float = 4.0


# The default warning rules of experiments.services.default_guardrails, beside the latency one.
QUALITY_ROLLOUT = LatencyRollout(tolerance=0.05, guardrail_metric="quality", harmful_direction="decrease",
                                 threshold_kind="absolute", values="quality")
# The same rule on scores spread towards 0 and 1 (per-request SD 0.37 instead of 0.20): judge scores that
# are mostly right/wrong, the noisier case for the rule.
QUALITY_SPREAD_ROLLOUT = replace(QUALITY_ROLLOUT, quality_request_concentration=0.5)
COST_ROLLOUT = LatencyRollout(tolerance=0.50, guardrail_metric="cost_per_request")


@dataclass(frozen=True)
class _LatencyUsers:
    """One simulated rollout, per user in arrival order: its minute, (stage, arm) cell
    2·stage + treated, requests and summed latency."""

    minute: np.ndarray
    cell: np.ndarray
    requests: np.ndarray
    latency: np.ndarray


def _latency_users(rng: np.random.Generator, setup: LatencyRollout, increase: float) -> _LatencyUsers:
    """Treatment's every request is (1 + increase) times what it would have been, so its mean
    latency is exactly ``increase`` above control's. With ``values="quality"`` ``increase`` is
    absolute instead: treatment's mean score is ``quality_mean + increase`` (−0.05: 5 points lower)."""
    rollout, metric = setup.rollout, setup.metric
    per_stage = rollout.minutes_per_stage
    arrivals = rng.poisson(rollout.users_per_hour / 60, size=rollout.minutes)
    minute = np.repeat(np.arange(rollout.minutes), arrivals)
    stage = minute // per_stage
    treated = rng.random(minute.size) < np.asarray(rollout.stage_fractions)[stage]
    requests = 1 + rng.poisson(1.0, size=minute.size)
    owner = np.repeat(np.arange(minute.size), requests)
    if setup.values == "quality":
        arm_mean = setup.quality_mean + increase * treated
        user_mean = rng.beta(arm_mean * setup.quality_user_concentration, (1 - arm_mean) * setup.quality_user_concentration)
        concentration = setup.quality_request_concentration
        scores = rng.beta(user_mean[owner] * concentration, (1 - user_mean[owner]) * concentration)
        return _LatencyUsers(minute=minute, cell=2 * stage + treated, requests=requests.astype(float),
                             latency=np.bincount(owner, weights=scores, minlength=minute.size))
    request_sigma = math.sqrt(max(metric.sigma**2 - metric.user_sigma**2, 0.0))
    user_log = math.log(metric.median) + np.log1p(increase) * treated + rng.normal(0.0, metric.user_sigma, size=minute.size)
    values = np.exp(user_log[owner] + rng.normal(0.0, request_sigma, size=owner.size))
    return _LatencyUsers(minute=minute, cell=2 * stage + treated, requests=requests.astype(float),
                         latency=np.bincount(owner, weights=values, minlength=minute.size))


CELL_SUMS = ("users", "x", "xx", "y", "yy", "xy")  # a RatioSummary's fields, x the user's summed latency


def cell_sums(users: _LatencyUsers, minutes: int, first_look: int) -> np.ndarray:
    """Per look (minute) from ``first_look`` on, per (stage, arm) cell, the running totals of
    CELL_SUMS over the cell's users so far: shape (looks, cells, 6)."""
    cells = 6
    index = users.minute * cells + users.cell
    x, y = users.latency, users.requests
    columns = (np.ones_like(x), x, x**2, y, y**2, x * y)
    return np.stack([np.bincount(index, weights=column, minlength=minutes * cells).reshape(minutes, cells)
                     for column in columns], axis=-1).cumsum(axis=0)[first_look:]


def latency_guardrail_margins(sums: np.ndarray, setup: LatencyRollout) -> tuple[np.ndarray, np.ndarray]:
    """stats.evaluate_guardrail on the setup's rule (the latency one: "up more than tolerance") at every look of
    ``sums`` (cell_sums), vectorised with the formulas of stats.stratified_estimate and
    RatioSummary.variance (fresh users: no shared-user terms): (harm − bound − tolerance, > 0 where
    the rule holds; harm − tolerance, > 0 where the estimate is beyond it), NaN without data."""
    rollout = setup.rollout
    n, x, xx, y, yy, xy = (sums[..., column].reshape(len(sums), -1, 2) for column in range(6))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_x, mean_y = x / n, y / n
        var_x, var_y = np.maximum(xx - x * x / n, 0) / (n - 1), np.maximum(yy - y * y / n, 0) / (n - 1)
        covariance = (xy - x * y / n) / (n - 1)
        variance = np.maximum(var_x / mean_y**2 - 2 * covariance * mean_x / mean_y**3 + mean_x**2 * var_y / mean_y**4, 0)
        usable = np.all((n >= 2) & (y > 0), axis=-1)
        cmh = np.where(usable, n[..., 0] * n[..., 1] / (n[..., 0] + n[..., 1]), 0.0)
        weights = cmh / cmh.sum(axis=1, keepdims=True)
        means = np.nansum(np.where(usable[..., None], weights[..., None] * x / y, 0.0), axis=1)
        variances = np.nansum(np.where(usable[..., None], weights[..., None] ** 2 * variance / n, 0.0), axis=1)
    control, treatment = means[:, 0], means[:, 1]
    sign = -1.0 if setup.harmful_direction == "decrease" else 1.0
    if setup.threshold_kind == "absolute":
        limit, factor = np.full_like(control, setup.tolerance), np.full_like(control, sign)
    else:
        limit, factor = setup.tolerance * np.abs(control), sign + setup.tolerance * np.sign(control)
    standard_error = np.sqrt(np.maximum(variances[:, 1] + factor**2 * variances[:, 0], 0.0))
    critical = stats.guardrail_critical_z(
        effective_users=2 * cmh.sum(axis=1), alpha=rollout.alpha, planned_samples_per_arm=rollout.planned_users_per_arm,
        early_samples_per_arm=stats.EARLY_HORIZON_PER_MIN_SAMPLE * rollout.min_users_per_arm,
    )
    arm_users = n.sum(axis=1)
    enough = (arm_users >= rollout.min_users_per_arm).all(axis=1) & usable.any(axis=1)
    harm = sign * (treatment - control)
    return np.where(enough, harm - critical * standard_error - limit, np.nan), np.where(enough, harm - limit, np.nan)


def latency_guardrail_state(sums_at_look: np.ndarray, setup: LatencyRollout) -> str:
    """stats.evaluate_guardrail's state on one look's cell sums. The rule is asked to 'breach' so
    that its confident verdict reads apart from a hold (both are 'warning' for the default rule)."""
    summaries = [stats.RatioSummary(int(round(cell[0])), *(float(value) for value in cell[1:])) for cell in sums_at_look]
    strata = [stats.Stratum(summaries[index], summaries[index + 1]) for index in range(0, len(summaries), 2)]
    return stats.evaluate_guardrail(
        metric=setup.guardrail_metric, harmful_direction=setup.harmful_direction, threshold=setup.tolerance,
        threshold_kind=setup.threshold_kind,
        on_violation="breach", strata=strata, alpha=setup.rollout.alpha,
        min_samples_per_arm=setup.rollout.min_users_per_arm, planned_samples_per_arm=setup.rollout.planned_users_per_arm,
    ).state


@dataclass(frozen=True)
class LatencyGuardrail:
    """How often the latency guardrail's confident verdict came (``fired``: what α bounds) and how often
    its estimate went beyond the tolerance at some look (``held``: a hold, not error-controlled), each
    read from stats.evaluate_guardrail itself; ``disagreements``: looks where the vectorised screen and
    it differed (0)."""

    fired: TriggerRate
    held: TriggerRate
    disagreements: int


def _first_by_the_product(sums: np.ndarray, margin: np.ndarray, setup: LatencyRollout, states: tuple[str, ...]) -> tuple[int | None, int]:
    """The first look whose stats.evaluate_guardrail state is in ``states``, asking it at the looks the
    vectorised margin puts at or near the line (a micro-millisecond of rounding below it), in order;
    and how many of those looks the two disagreed on."""
    disagreements = 0
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(margin > -1e-6)
    for look in candidates:
        in_state = latency_guardrail_state(sums[look], setup) in states
        disagreements += int(in_state != (margin[look] > 0))
        if in_state:
            return int(look), disagreements
    return None, disagreements


def simulate_latency_guardrail(*, setup: LatencyRollout, increase: float, experiments: int, seed: int) -> LatencyGuardrail:
    """The default latency guardrail through whole rollouts, checked every minute, with the treatment's
    mean latency ``increase`` above control's (relative)."""
    rng = np.random.default_rng(seed)
    rollout = setup.rollout
    hours: dict[str, list[float]] = {"fired": [], "held": []}
    disagreements = 0
    for _ in range(experiments):
        users = _latency_users(rng, setup, increase)
        arm_users = np.stack([np.bincount(users.minute[users.cell % 2 == arm], minlength=rollout.minutes) for arm in (0, 1)])
        enough = (arm_users.cumsum(axis=1) >= rollout.min_users_per_arm).all(axis=0)
        if not enough.any():
            continue
        first = int(enough.argmax())
        sums = cell_sums(users, rollout.minutes, first)
        fire_margin, hold_margin = latency_guardrail_margins(sums, setup)
        for name, margin, states in (("fired", fire_margin, ("breach",)), ("held", hold_margin, ("warning", "breach"))):
            look, disagreed = _first_by_the_product(sums, margin, setup, states)
            disagreements += disagreed
            if look is not None:
                hours[name].append((first + look + 1) / 60)
    return LatencyGuardrail(
        fired=TriggerRate(experiments=experiments, triggered=len(hours["fired"]), hours_to_trigger=hours["fired"]),
        held=TriggerRate(experiments=experiments, triggered=len(hours["held"]), hours_to_trigger=hours["held"]),
        disagreements=disagreements,
    )
