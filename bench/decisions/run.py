"""The operating characteristics of every decision rule Genesis makes, measured by seeded simulation
at production scale (issue 14), and a parity check against GrowthBook's gbstats.

    .venv/bin/pip install --no-deps -r requirements-bench-nodeps.txt      # gbstats, once
    .venv/bin/python bench/decisions/run.py [--part NAME ...] [--experiments N] [--seed S]

Parts (each a few minutes at most on 2 cores):

* ``guardrails`` — A/A rollbacks of the success-rate guardrail, checked every minute through three
  48 h stages (10 → 25 → 50 %) at 2 000 users/h: one outcome per user, ten correlated outcomes per
  user (intra-user correlation 0.2, and the old per-outcome analysis on the same data for
  contrast), the same at a true drop of exactly the tolerance (per user and per outcome), ten times
  the planned traffic; then the rollback probability and median time at drops
  of 0, 2, 3, 4, 5, 6, 8, 10, 15 and 20 points (tolerance 5), at base rate 0.9, 0.75 and 0.6
  (2 000 users/h) and at base rate 0.9 with 200 users/h.
* ``srm`` — correctly split rollouts paused by the per-minute SRM check, and the time to catch a
  10 % vs 11 % split; then with resumes (each restarts the stage's test): SRM pauses resumed, manual
  pause/resume cycles, both — before (every test at the stage's whole share) and after (the k-th
  test of a stage at share/(ζ(3)·k³)).
* ``guardrail_resumes`` — a resume restarts the current stage's window and with it the guardrail's
  sequence: P(rollback) at a true drop of exactly the tolerance with 0, 1 and 3 resumes (each at a
  uniformly random minute), before (every segment at the whole α) and after (the rollout's k-th
  segment at α/(ζ(3)·k³)), same data both ways; one 50 % stage of 48 h at 2 000 users/h, base rate
  0.75 (the review's setting), and the default three stages at base rate 0.6 (the hardest curve);
  the longest part, about 10 min on a loaded 2-core machine.
* ``estimates`` — an A/A whose base rate drifts 0.91 → 0.89 over the six days: the results page's
  p < 0.05 rate stratified by stage (production) and pooled (the old way); the relative-lift
  interval's coverage at p 0.05 → 0.06 with 200 users per arm; p-value/interval agreement; how often
  an A/A's fixed-horizon p-value dips below 0.05 when looked at daily or hourly (peeking).
* ``returning`` — users who return across the stages (a population of 20 000 users visiting at
  2 000 visits/h, each keeping its hash bucket and its own success propensity, intra-user
  correlation 0.2): the results page's A/A p < 0.05 rate and the 95 % interval's coverage at a true
  2-point drop, with the variance clustered by user (production) and with the stages taken as
  independent strata (the old way) on the same data; fresh users in every stage for contrast.
* ``tails`` — latency and cost per request are heavy-tailed: the relative-lift 95 % interval's
  coverage at a 9:1 split (the 10 % stage) and 1:1, log-normal requests (log-sd 1.5 and 2.0: heavy;
  0.3: light), with each request capped at the pooled 99th percentile (production) and uncapped
  (the old way) on the same data.
* ``latency_guardrail`` — the default latency guardrail (mean latency up more than 30 % warns, α 5 %)
  as beat runs it: checked every minute through three 48 h stages (10 → 25 → 50 %) at 2 000 users/h,
  1 + Poisson(1) log-normal requests per user (log-sd 1.5), judged on the real requests, uncapped,
  as the guardrails judge them (the comparisons' cap does not apply); how often its confident
  verdict comes (and how often its estimate holds the stage) in an A/A, with the mean latency up
  exactly 30 % (the tolerance) and up 60 %. Every verdict is stats.evaluate_guardrail's own.
* ``quality_guardrail`` / ``cost_guardrail`` — the other default warning rules the same way: mean
  quality down more than 0.05 (absolute; Beta-distributed scores in [0, 1], every request scored) and
  cost per request up more than 50 % (relative; log-normal requests as for latency): in an A/A, at
  exactly the tolerance and at twice it.
* ``success_rate_hold`` — how often the success-rate guardrail's estimate goes beyond its 5-point
  tolerance at some look (the 'warning' that holds the stage, not error-controlled) at drops of 0, 2
  and 5 points, on the four operating curves' settings.
* ``curve`` — the success-rate rollback curve at one experiment's own settings (--stages, --stage-hours,
  --tolerance, --min-users, --planned-users, --alpha, --users-per-hour, --base-rate): what the admin's
  experiment page tells an experiment that differs from the defaults to run.
* ``gate`` — the benchmark gate's P(PASS / FAIL / INCONCLUSIVE) (bench/decisions/gate.py).
* ``health`` — agent health's P(degraded / failing) per read by true error rate, p95 and traffic
  (bench/health/run.py).
* ``tag_cautions`` — the Go/No-Go report's per-tag "regressed" caution: false cautions on uniformly
  better candidates and power on a truly worse tag (bench/launch/tag_cautions.py).
* ``gbstats`` — relative lift, intervals and p-values of per-user ratio metrics against gbstats'
  frequentist engine (RatioStatistic + TwoSidedTTest).

Everything calls experiments/stats.py and experiments/simulation.py directly: the same functions
the results selector and the guardrail task call.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments import simulation, stats  # noqa: E402  (after the path is set)

DROPS = (0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.15, 0.20)
# (label, control's success rate, users per hour)
OPERATING_CURVES = (
    ("base rate 0.9, 2 000 users/h", 0.9, 2_000.0),
    ("base rate 0.75, 2 000 users/h", 0.75, 2_000.0),
    ("base rate 0.6, 2 000 users/h", 0.6, 2_000.0),
    ("base rate 0.9, 200 users/h", 0.9, 200.0),
)


# (label, manual pause/resumes a stage, SRM pauses resumed a stage at most): simulate_srm's options.
SRM_RESUMES = (
    ("no resume", 0, 0),
    ("every SRM pause resumed (up to 3 a stage)", 0, 3),
    ("3 manual pause/resumes a stage", 3, 0),
    ("both", 3, 3),
)


def _line(label: str, value: str) -> None:
    print(f"  {label:<58} {value}")


def _rate(result: simulation.TriggerRate) -> str:
    low, high = _wilson(result.rate, result.experiments)
    median = f", median {result.median_hours:.2f} h" if result.median_hours is not None else ""
    return f"{result.rate:6.1%}  (95 % CI {low:.1%}–{high:.1%}, n={result.experiments}{median})"


def _wilson(rate: float, n: int) -> tuple[float, float]:
    z = 1.96
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def guardrail_scenarios(*, experiments: int) -> list[tuple[str, simulation.Rollout, int]]:
    """The guardrails part's single scenarios: (label, rollout, rollouts)."""
    base = simulation.Rollout()
    clustered = replace(base, outcomes_per_user=10, within_user_correlation=0.2)
    at_tolerance = replace(clustered, treatment_drop=base.tolerance)
    return [
        ("A/A, one outcome per user", base, experiments),
        ("A/A, 10 outcomes per user (correlation 0.2)", clustered, experiments // 2),
        ("  same data, every outcome counted as independent (per event)", replace(clustered, per_user=False), experiments // 4),
        ("10 outcomes per user, true drop of exactly the tolerance", at_tolerance, experiments // 4),
        ("  same data, every outcome counted as independent (per event)", replace(at_tolerance, per_user=False), experiments // 4),
        ("A/A, traffic 10× the plan (20 000 users/h)", replace(base, users_per_hour=20_000), experiments // 2),
    ]


def part_guardrails(*, experiments: int, seed: int) -> None:
    print("Guardrail (success rate, tolerance 5 points, alpha 5 %, checked every minute, 3 × 48 h at 2 000 users/h)")
    base = simulation.Rollout()
    for label, rollout, count in guardrail_scenarios(experiments=experiments):
        _line(label, _rate(simulation.simulate_rollbacks(rollout=rollout, experiments=count, seed=seed)))
    # The curve at the default, then where a rollback decision is hardest: a base rate nearer 0.5
    # (more variance per user) and a tenth of the traffic (the first looks come from few users).
    for label, control_rate, users_per_hour in OPERATING_CURVES:
        print(f"  Operating curve — P(rollback) over the rollout, by true drop ({label}):")
        for drop in DROPS:
            rollout = replace(base, treatment_drop=drop, control_rate=control_rate, users_per_hour=users_per_hour)
            result = simulation.simulate_rollbacks(rollout=rollout, experiments=experiments // 2, seed=seed + 1)
            _line(f"    drop {drop * 100:.0f} points", _rate(result))


def part_curve(*, experiments: int, seed: int, options: argparse.Namespace | None = None) -> None:
    """The success-rate rollback curve at one experiment's own settings (the admin's experiment page
    prints this command with them when they differ from the defaults the published curve is for)."""
    options = options or argparse.Namespace(stages="10,25,50", stage_hours=48.0, tolerance=0.05, min_users=150,
                                            planned_users=2_000, alpha=0.05, users_per_hour=2_000.0, base_rate=0.9)
    stages = tuple(int(percent) / 100 for percent in options.stages.split(",") if int(percent) < 100)
    base = simulation.Rollout(stage_fractions=stages or (0.5,), stage_hours=options.stage_hours, tolerance=options.tolerance,
                              min_users_per_arm=options.min_users, planned_users_per_arm=options.planned_users,
                              alpha=options.alpha, users_per_hour=options.users_per_hour, control_rate=options.base_rate)
    print(f"Success-rate rollback curve: stages {options.stages} % of {options.stage_hours:g} h, tolerance "
          f"{options.tolerance:g}, alpha {options.alpha:g}, min users {options.min_users}, planned users "
          f"{options.planned_users}, {options.users_per_hour:g} users/h, base rate {options.base_rate:g}, checked every "
          f"minute ({experiments // 2} rollouts a drop, seed {seed + 1})")
    for multiple in (0.0, 0.4, 0.8, 1.0, 1.2, 1.6, 2.0, 3.0):
        drop = round(multiple * options.tolerance, 6)
        result = simulation.simulate_rollbacks(rollout=replace(base, treatment_drop=drop),
                                               experiments=max(1, experiments // 2), seed=seed + 1)
        _line(f"  drop {drop * 100:g} points ({multiple:g} × the tolerance)", _rate(result))


def part_srm(*, experiments: int, seed: int) -> None:
    print("SRM (anytime-valid, rollout budget 1 %, checked every minute over 3 × 48 h at 2 000 users/h)")
    _line("correct split: rollouts paused", _rate(simulation.simulate_srm(experiments=experiments * 2, seed=seed)))
    mismatch = simulation.simulate_srm(experiments=experiments // 2, seed=seed + 1, true_fractions=(0.11, 0.25, 0.50))
    _line("10 % planned, 11 % observed: caught", _rate(mismatch))
    within_day = sum(hours <= 24 for hours in mismatch.hours_to_trigger) / mismatch.experiments
    _line("  … within 24 h", f"{within_day:6.1%}")
    # A resume restarts the stage's test. Before 2026-12 every test had the stage's whole share; now
    # the k-th test of a stage has share/(ζ(3)·k³) (stats.srm_threshold). Same seed both ways.
    print("  Resumes, correct split — rollouts ever paused (pauses per rollout), before: every test at the stage's")
    print("  share / after: the k-th test of a stage at share/(ζ(3)·k³)")
    for label, manual_resumes, srm_resumes in SRM_RESUMES:
        for when, spend in (("before", False), ("after", True)):
            result = simulation.simulate_srm(experiments=experiments * 2, seed=seed + 2, manual_resumes=manual_resumes,
                                             srm_resumes=srm_resumes, spend_on_resumes=spend)
            _line(f"    {label}, {when}", f"{_rate(result)}; {result.pauses_per_rollout:.2%} pauses per rollout")
    for when, spend in (("before", False), ("after", True)):
        caught = simulation.simulate_srm(experiments=experiments // 2, seed=seed + 1, true_fractions=(0.11, 0.25, 0.50),
                                         manual_resumes=3, spend_on_resumes=spend)
        _line(f"  10 % vs 11 %, 3 manual pause/resumes a stage: caught, {when}", _rate(caught))


# (label, rollout, rollouts per 1 000 of --experiments)
RESUMED_ROLLOUTS = (
    ("one 50 % stage of 48 h, 2 000 users/h, base rate 0.75, drop 5 points",
     simulation.Rollout(stage_fractions=(0.5,), control_rate=0.75, treatment_drop=0.05), 10_000),
    ("10 → 25 → 50 % of 48 h each, 2 000 users/h, base rate 0.6, drop 5 points",
     simulation.Rollout(control_rate=0.6, treatment_drop=0.05), 5_000),
)


def part_guardrail_resumes(*, experiments: int, seed: int) -> None:
    print("Guardrail resumes (success rate, tolerance 5 points, alpha 5 %, checked every minute): P(rollback) at a true "
          "drop of exactly the tolerance, each resume at a random minute restarting the current stage's window; "
          "before: every segment at alpha / after: the rollout's k-th segment at alpha/(ζ(3)·k³)")
    for position, (label, rollout, per_thousand) in enumerate(RESUMED_ROLLOUTS):
        count = max(1, experiments * per_thousand // 1_000)
        print(f"  {label} (seed {seed + position})")
        for resumes in (0, 1, 3):
            for when, spend in (("before", False), ("after", True)):
                result = simulation.simulate_guardrail_resumes(
                    rollout=rollout, resumes=resumes, experiments=count, seed=seed + position, spend_on_resumes=spend
                )
                _line(f"    {resumes} resume{'' if resumes == 1 else 's'}, {when}", _rate(result))


def part_estimates(*, experiments: int, seed: int) -> None:
    print("Results page estimates")
    drift = simulation.Rollout(control_rate=0.91, final_control_rate=0.89)
    count = min(experiments, 200)
    for label, stratified in (("stratified by stage (production)", True), ("pooled over stages (the old way)", False)):
        p_values = np.concatenate([
            simulation.final_p_values(rollout=drift, experiments=25, seed=seed + batch, stratified=stratified)
            for batch in range(count // 25)
        ])
        _line(f"A/A with drift 0.91 → 0.89: p < 0.05, {label}", f"{(p_values < 0.05).mean():6.1%}  (n={p_values.size})")
    rng = np.random.default_rng(seed)
    true_lift, covered, delta_covered, agree, bounded, total = 0.06 / 0.05 - 1, 0, 0, 0, 0, 0
    for _ in range(4_000):
        c, t = rng.binomial(200, 0.05), rng.binomial(200, 0.06)
        control = stats.RatioSummary.from_users([(1.0, 1.0)] * c + [(0.0, 1.0)] * (200 - c))
        treatment = stats.RatioSummary.from_users([(1.0, 1.0)] * t + [(0.0, 1.0)] * (200 - t))
        result = stats.compare([stats.Stratum(control, treatment)])
        if result is None or result.p_value is None:
            continue
        total += 1
        covered += result.relative_interval is None or result.relative_interval.contains(true_lift)
        mc, mt = c / 200, t / 200
        delta_se = math.sqrt((mt * (1 - mt) / 199) / mc**2 + mt**2 * (mc * (1 - mc) / 199) / mc**4)
        delta_covered += abs(mt / mc - 1 - true_lift) <= 1.96 * delta_se
        if result.relative_interval is not None:
            bounded += 1
            agree += (result.p_value < 0.05) == (not result.relative_interval.contains(0.0))
    _line("relative-lift 95 % interval coverage, p 0.05 → 0.06, n 200 (Fieller)", f"{covered / total:6.1%}  (n={total})")
    _line("  the delta-method interval on the same data", f"{delta_covered / total:6.1%}")
    _line("p < 0.05 exactly when the (bounded) relative interval excludes 0", f"{agree / bounded:6.1%}  (n={bounded})")
    peeking = simulation.peeking_rejections(rollout=simulation.Rollout(), experiments=count, seed=seed)
    _line("A/A, fixed-horizon p < 0.05 at the end / some daily / some hourly look",
          f"{peeking['end']:.1%} / {peeking['daily']:.1%} / {peeking['hourly']:.1%}  (n={count}; why it is labelled "
          "valid at the planned end only)")


def part_returning(*, experiments: int, seed: int) -> None:
    print("Results page estimates with returning users (3 × 48 h, 10 → 25 → 50 %, success rate 0.9, stats.compare per rollout)")
    returning = simulation.Rollout(user_population=20_000, within_user_correlation=0.2)
    scenarios = [
        ("A/A, fresh users in every stage (~5 outcomes each)", returning, False, experiments // 2),
        ("A/A, 20 000 returning users (~5 outcomes a stage)", returning, True, experiments),
        ("A/A, 10 000 returning users (~10 outcomes a stage)", replace(returning, user_population=10_000), True, experiments),
        ("true drop of 2 points, 20 000 returning users", replace(returning, treatment_drop=0.02), True, experiments // 2),
    ]
    for label, rollout, users_return, count in scenarios:
        clustered, independent = simulation.final_estimates(rollout=rollout, experiments=count, seed=seed, returning=users_return)
        print(f"  {label}")
        for name, result in (("clustered by user (production)", clustered), ("stages as independent (the old way)", independent)):
            low, high = _wilson(result.rejection_rate(), result.p_values.size)
            _line(f"    {name}: p < 0.05", f"{result.rejection_rate():6.1%}  (95 % CI {low:.1%}–{high:.1%}, n={result.p_values.size}); "
                  f"coverage {result.coverage:.1%}; true SD / reported SE {result.sd_over_se:.2f}")


# (label, the metric's simulated stage, experiments per 1 000 of --experiments)
TAILED = (
    ("heavy (log-sd 1.5), 2 000 users, 9:1, A/A", simulation.TailedMetric(users=2_000, sigma=1.5), 2),
    ("heavy (log-sd 1.5), 2 000 users, 1:1, A/A", simulation.TailedMetric(users=2_000, sigma=1.5, treatment_share=0.5), 2),
    ("heavy (log-sd 1.5), 2 000 users, 9:1, treatment +20 %", simulation.TailedMetric(users=2_000, sigma=1.5, lift=0.2), 2),
    ("heavier (log-sd 2.0), 2 000 users, 9:1, A/A", simulation.TailedMetric(users=2_000, sigma=2.0), 2),
    ("heavier (log-sd 2.0), 5 000 users, 9:1, A/A", simulation.TailedMetric(users=5_000, sigma=2.0), 2),
    ("heavier (log-sd 2.0), 5 000 users, 1:1, A/A", simulation.TailedMetric(users=5_000, sigma=2.0, treatment_share=0.5), 2),
    ("light (log-sd 0.3), 2 000 users, 9:1, A/A", simulation.TailedMetric(users=2_000, sigma=0.3, user_sigma=0.15), 2),
    ("light (log-sd 0.3), 2 000 users, 1:1, A/A", simulation.TailedMetric(users=2_000, sigma=0.3, user_sigma=0.15, treatment_share=0.5), 2),
)


def part_tails(*, experiments: int, seed: int) -> None:
    print(f"Relative-lift 95 % interval of a per-request metric (latency, cost), one stage, 1 + Poisson(1) requests per "
          f"user: coverage with requests capped at the pooled {stats.CAP_PERCENTILE}th percentile (production) and uncapped")
    for position, (label, metric, per_thousand) in enumerate(TAILED):
        count = experiments * per_thousand
        found = simulation.tailed_coverage(metric=metric, experiments=count, seed=seed + position)
        print(f"  {label}")
        for name in ("capped", "uncapped"):
            result = found[name]
            low, high = _wilson(result.rate, result.experiments)
            _line(f"    {name}", f"{result.rate:6.1%}  (95 % CI {low:.1%}–{high:.1%}, n={result.experiments}); the truth "
                  f"below / above the interval {result.truth_below / count:.1%} / {result.truth_above / count:.1%}")


# (label, the treatment's mean latency above control's, rollouts per 1 000 of --experiments)
LATENCY_INCREASES = (
    ("A/A", 0.0, 500),
    ("mean latency up 30 % (the tolerance)", 0.30, 500),
    ("mean latency up 60 %", 0.60, 200),
)


# The other default warning rules (experiments.services.default_guardrails), measured the same way.
QUALITY_CHANGES = (
    ("A/A", 0.0, 500),
    ("mean quality down 0.05 (the tolerance)", -0.05, 500),
    ("mean quality down 0.10", -0.10, 200),
)
COST_INCREASES = (
    ("A/A", 0.0, 500),
    ("cost per request up 50 % (the tolerance)", 0.50, 500),
    ("cost per request up 100 %", 1.00, 200),
)


def part_latency_guardrail(*, experiments: int, seed: int) -> None:
    setup = simulation.LatencyRollout()
    print(f"Latency guardrail (up more than {setup.tolerance:.0%} warns, alpha {setup.rollout.alpha:.0%}; checked every minute, "
          f"3 × 48 h at 2 000 users/h, log-normal requests of log-sd {setup.metric.sigma}, judged uncapped)")
    _warning_rule(setup, LATENCY_INCREASES, experiments=experiments, seed=seed)


def part_quality_guardrail(*, experiments: int, seed: int) -> None:
    for setup in (simulation.QUALITY_ROLLOUT, simulation.QUALITY_SPREAD_ROLLOUT):
        print(f"Quality guardrail (down more than {setup.tolerance:g} warns, alpha {setup.rollout.alpha:.0%}; checked every "
              f"minute, 3 × 48 h at 2 000 users/h, 1 + Poisson(1) requests per user, every one scored: Beta scores of mean "
              f"{setup.quality_mean}, user concentration {setup.quality_user_concentration:g}, request concentration "
              f"{setup.quality_request_concentration:g})")
        _warning_rule(setup, QUALITY_CHANGES, experiments=experiments, seed=seed)


def part_cost_guardrail(*, experiments: int, seed: int) -> None:
    setup = simulation.COST_ROLLOUT
    print(f"Cost-per-request guardrail (up more than {setup.tolerance:.0%} warns, alpha {setup.rollout.alpha:.0%}; checked "
          f"every minute, 3 × 48 h at 2 000 users/h, log-normal requests of log-sd {setup.metric.sigma} as for latency, "
          "judged uncapped)")
    _warning_rule(setup, COST_INCREASES, experiments=experiments, seed=seed)


def part_success_rate_hold(*, experiments: int, seed: int) -> None:
    print("Success-rate guardrail's hold (the estimate more than 5 points down at some look: 'warning', holds the stage; "
          "not error-controlled), checked every minute, 3 × 48 h, one outcome per user")
    for label, control_rate, users_per_hour in OPERATING_CURVES:
        print(f"  {label}")
        for drop in (0.0, 0.02, 0.05):
            rollout = simulation.Rollout(treatment_drop=drop, control_rate=control_rate, users_per_hour=users_per_hour)
            result = simulation.simulate_rollbacks(rollout=rollout, experiments=max(1, experiments // 2), seed=seed + 1, hold=True)
            _line(f"    drop {drop * 100:.0f} points: held at some look", _rate(result))


def _warning_rule(setup: simulation.LatencyRollout, changes: tuple[tuple[str, float, int], ...], *, experiments: int,
                  seed: int) -> None:
    for position, (label, increase, per_thousand) in enumerate(changes):
        count = max(1, experiments * per_thousand // 1_000)
        result = simulation.simulate_latency_guardrail(setup=setup, increase=increase, experiments=count, seed=seed + position)
        print(f"  {label} (seed {seed + position})")
        _line("    confident verdict ('review the candidate')", _rate(result.fired))
        _line("    estimate beyond the tolerance at some look (holds)", _rate(result.held))
        _line("    looks where the vectorised screen and stats.evaluate_guardrail differ", str(result.disagreements))


def part_gate(*, experiments: int, seed: int) -> None:
    try:
        from bench.decisions import gate
    except ImportError as exc:  # written alongside; say so rather than fail the other parts
        print(f"Benchmark gate: bench/decisions/gate.py is not available ({exc})")
        return
    gate.main(seed=seed)


def part_health(*, experiments: int, seed: int) -> None:
    from bench.health import run as health

    print("Agent health (GET /agents/{agent}/health, the Agent admin column)")
    health.main(["--seed", str(seed)])


def part_tag_cautions(*, experiments: int, seed: int) -> None:
    from bench.launch import tag_cautions

    print("The Go/No-Go report's per-tag regressed caution")
    tag_cautions.main(["--seed", str(seed)])


def part_gbstats(*, experiments: int, seed: int) -> None:
    print("Parity with GrowthBook's gbstats (frequentist, per-user ratio metrics, one stage)")
    try:
        from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
        from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic
    except ImportError:
        print("  gbstats is not installed: .venv/bin/pip install --no-deps -r requirements-bench-nodeps.txt")
        return
    rng = np.random.default_rng(seed)
    worst = {"relative lift": 0.0, "absolute interval": 0.0, "p-value (absolute)": 0.0,
             "relative interval (Fieller vs delta), 5 000 users/arm": 0.0}
    relative_test_p = 0.0
    for _ in range(200):
        arms = []
        for arm in range(2):
            users = 5_000
            outcomes = rng.integers(1, 8, size=users).astype(float)
            rate = np.clip(rng.beta(8, 2, size=users) + 0.02 * arm, 0, 1)
            successes = rng.binomial(outcomes.astype(int), rate).astype(float)
            ours = stats.RatioSummary.from_users(zip(successes, outcomes))
            theirs = RatioStatistic(
                n=users,
                m_statistic=SampleMeanStatistic(n=users, sum=successes.sum(), sum_squares=(successes**2).sum()),
                d_statistic=SampleMeanStatistic(n=users, sum=outcomes.sum(), sum_squares=(outcomes**2).sum()),
                m_d_sum_of_products=(successes * outcomes).sum(),
            )
            arms.append((ours, theirs))
        comparison = stats.compare([stats.Stratum(arms[0][0], arms[1][0])])
        absolute = TwoSidedTTest(arms[0][1], arms[1][1], FrequentistConfig(difference_type="absolute")).compute_result()
        relative = TwoSidedTTest(arms[0][1], arms[1][1], FrequentistConfig(difference_type="relative")).compute_result()
        assert comparison is not None and comparison.absolute_interval and comparison.relative_interval and comparison.p_value is not None
        worst["relative lift"] = max(worst["relative lift"], abs(comparison.relative_lift - relative.expected))
        worst["absolute interval"] = max(worst["absolute interval"], abs(comparison.absolute_interval.low - absolute.ci[0]),
                                         abs(comparison.absolute_interval.high - absolute.ci[1]))
        worst["p-value (absolute)"] = max(worst["p-value (absolute)"], abs(comparison.p_value - absolute.p_value))
        key = "relative interval (Fieller vs delta), 5 000 users/arm"
        worst[key] = max(worst[key], abs(comparison.relative_interval.low - relative.ci[0]),
                         abs(comparison.relative_interval.high - relative.ci[1]))
        relative_test_p = max(relative_test_p, abs(comparison.p_value - relative.p_value))
    for label, difference in worst.items():
        _line(f"max |ours − gbstats|, {label}", f"{difference:.2e}  {'ok' if difference <= 1e-3 else 'ABOVE 1e-3'}")
    # gbstats' relative test has a p-value of its own (the delta-method z of the lift), which can
    # disagree with its absolute one; ours is the absolute test's, which Fieller's interval matches.
    _line("  for information: gbstats' relative-test p-value, a different test", f"{relative_test_p:.2e}")


PARTS = {"guardrails": part_guardrails, "guardrail_resumes": part_guardrail_resumes, "srm": part_srm, "estimates": part_estimates, "returning": part_returning,
         "tails": part_tails, "latency_guardrail": part_latency_guardrail, "quality_guardrail": part_quality_guardrail,
         "cost_guardrail": part_cost_guardrail, "curve": part_curve, "success_rate_hold": part_success_rate_hold, "gate": part_gate,
         "health": part_health, "tag_cautions": part_tag_cautions, "gbstats": part_gbstats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=sorted(PARTS), help="run only these parts (repeatable)")
    parser.add_argument("--experiments", type=int, default=1_000, help="simulated rollouts per scenario (default 1 000)")
    parser.add_argument("--seed", type=int, default=20261206)
    curve = parser.add_argument_group("--part curve: one experiment's own settings (defaults: the published curve's)")
    curve.add_argument("--stages", default="10,25,50", help="treatment percentages with a control arm")
    curve.add_argument("--stage-hours", type=float, default=48.0)
    curve.add_argument("--tolerance", type=float, default=0.05, help="success-rate drop that rolls back (absolute)")
    curve.add_argument("--min-users", type=int, default=150, help="minimum users per arm")
    curve.add_argument("--planned-users", type=int, default=2_000, help="planned users per arm")
    curve.add_argument("--alpha", type=float, default=0.05, help="the success-rate rule's level")
    curve.add_argument("--users-per-hour", type=float, default=2_000.0)
    curve.add_argument("--base-rate", type=float, default=0.9, help="control's success rate")
    args = parser.parse_args()
    for name in args.part or [part for part in PARTS if part != "curve"]:
        started = time.perf_counter()
        if name == "curve":
            part_curve(experiments=args.experiments, seed=args.seed, options=args)
        else:
            PARTS[name](experiments=args.experiments, seed=args.seed)
        print(f"  [{name}: {time.perf_counter() - started:.0f} s]\n", flush=True)


if __name__ == "__main__":
    main()
