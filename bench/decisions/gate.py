"""The benchmark gate's operating characteristics: P(PASS / FAIL / INCONCLUSIVE) by suite size and true
improvement, under both rules, and how often the bootstrap seed alone changes a borderline verdict.

Every verdict comes from `models_app.benchmarks.stats.gate_scores` — the decision `compare_paired` makes
for a finished run, minus the per-case report — on suites drawn from `models_app.benchmarks.simulation.simulate_scores`.

What the simulated suites assume (the reference score model; see its docstring): per-case scores in
[0, 1] like the scorers produce — 70 % of cases right/wrong (exact, regex, JSON schema), 30 % graded like
an LLM judge (continuous) — baseline mean 0.60, the candidate's mean 0.60·(1 + r) exactly; each case has
a difficulty both models share, and the models' own errors correlate 0.7 (a fine-tune errs where its
base errs), so the two disagree on about 40 % of cases and the per-case delta SD is about 0.36.

Resampling: the table uses --resamples (2 000 by default, not production's 10 000 with refinement near
a boundary) to stay within a few minutes on 2 cores; that only adds Monte-Carlo noise to each verdict,
which the hull with Fieller's interval mostly hides. The seed-flip part uses the production defaults.
Each probability is printed with its binomial standard error.

P(FAIL | r ≥ t) is checked on the table and on small and near-ceiling suites (FAIL_SCENARIOS: the
reference mix at n = 20 and 32; right/wrong suites at baseline 0.85, n = 20…100, and 0.6, n = 20), and
re-running an INCONCLUSIVE candidate up to 5 times (bench/decisions/gate_reruns.py) before and after
re-runs spend α.

    .venv/bin/python bench/decisions/gate.py [--simulations 1000] [--resamples 2000] [--flip-suites 300]
                                            [--rerun-suites 400] [--seed 20261206] [--workers 2] [--json]
    .venv/bin/python bench/decisions/gate.py --at-threshold-only --simulations 10000   # P(PASS | r = t), ± SE

Importable: `gate_operating_characteristics(seed=...)` returns the numbers as a dict, and `main(seed=...)`
prints them (bench/decisions/run.py's `gate` part calls it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.decisions import gate_reruns  # noqa: E402
from models_app.benchmarks import stats as gate  # noqa: E402
from models_app.benchmarks.simulation import simulate_scores  # noqa: E402

THRESHOLD = 0.08  # BENCHMARK_MIN_RELATIVE_IMPROVEMENT's default
SIZES = (32, 100, 400)
IMPROVEMENTS = (0.0, 0.05, 0.08, 0.12, 0.2)
RULES = (gate.RULE_AT_LEAST_THRESHOLD, gate.RULE_IMPROVES_AND_REACHES)
BENCH_RESAMPLES = 2_000
SIMULATIONS = 1_000
FLIP_SUITES = 300
FLIP_SIZE = 100
DEFAULT_SEED = 20261206
# The "done when": P(PASS | r ≤ 0) ≤ 2.5 % under both rules, P(PASS | r = t) ≤ 5 % under at_least.
NULL_PASS_LIMIT = 0.025
AT_THRESHOLD_PASS_LIMIT = 0.05
# Review F3: a candidate at or above the threshold is rejected at most 2.5 % of the time (FAIL reads the
# interval's upper end, a one-sided 2.5 % test of r ≥ t), also on small and near-ceiling suites.
ABOVE_THRESHOLD_FAIL_LIMIT = 0.025
FAIL_IMPROVEMENTS = (0.08, 0.10, 0.12)
# (label, n, simulate_scores keyword arguments): the reference mix at small n, and the review's
# right/wrong suites — near the ceiling (baseline 0.85), where candidate wins are rare ±1 deltas.
FAIL_SCENARIOS: tuple[tuple[str, int, dict[str, float]], ...] = (
    ("reference mix", 20, {}),
    ("reference mix", 32, {}),
    ("right/wrong, baseline 0.85", 20, {"graded_share": 0.0, "baseline_mean": 0.85}),
    ("right/wrong, baseline 0.85", 32, {"graded_share": 0.0, "baseline_mean": 0.85}),
    ("right/wrong, baseline 0.85", 50, {"graded_share": 0.0, "baseline_mean": 0.85}),
    ("right/wrong, baseline 0.85", 100, {"graded_share": 0.0, "baseline_mean": 0.85}),
    ("right/wrong, baseline 0.6", 20, {"graded_share": 0.0}),
)


def _cell(args: tuple[int, int, float, int, int]) -> list[dict[str, Any]]:
    """One (n, r) cell: `simulations` suites, each judged under both rules with the same resampling seed."""
    seed, n, improvement, simulations, resamples = args
    rng = np.random.default_rng([seed, n, round(improvement * 1000)])
    counts = {rule: {gate.PASS: 0, gate.FAIL: 0, gate.INCONCLUSIVE: 0} for rule in RULES}
    for _ in range(simulations):
        baseline, candidate = simulate_scores(rng, n=n, true_improvement=improvement)
        resampling_seed = int(rng.integers(2**63))
        for rule in RULES:
            result = gate.gate_scores(baseline, candidate, threshold=THRESHOLD, rule=rule, resamples=resamples,
                                      seed=resampling_seed)
            counts[rule][result.verdict] += 1
    rows = []
    for rule in RULES:
        share = {verdict: count / simulations for verdict, count in counts[rule].items()}
        rows.append({
            "rule": rule, "n": n, "true_improvement": improvement, "simulations": simulations,
            "pass": share[gate.PASS], "fail": share[gate.FAIL], "inconclusive": share[gate.INCONCLUSIVE],
            "pass_se": math.sqrt(share[gate.PASS] * (1 - share[gate.PASS]) / simulations),
        })
    return rows


def _fail_cell(args: tuple[int, int, str, int, float, int, int]) -> dict[str, Any]:
    """One (scenario, r ≥ t) cell: how often `simulations` suites FAIL (FAIL reads the same upper end under
    both rules, so the default rule's verdict is the FAIL rate of either)."""
    seed, index, label, n, improvement, simulations, resamples = args
    options = dict(FAIL_SCENARIOS[index][2])
    rng = np.random.default_rng([seed, 3, index, round(improvement * 1000)])
    fails = 0
    for _ in range(simulations):
        baseline, candidate = simulate_scores(rng, n=n, true_improvement=improvement,
                                              baseline_mean=options.get("baseline_mean", 0.6),
                                              graded_share=options.get("graded_share", 0.3))
        fails += gate.gate_scores(baseline, candidate, threshold=THRESHOLD, rule=gate.RULE_AT_LEAST_THRESHOLD,
                                  resamples=resamples, seed=int(rng.integers(2**63))).verdict == gate.FAIL
    share = fails / simulations
    return {"scenario": label, "n": n, "true_improvement": improvement, "simulations": simulations, "fail": share,
            "fail_se": math.sqrt(share * (1 - share) / simulations)}


def reference_relative_sd(seed: int) -> float:
    """The reference model's per-case SD of the relative improvement (delta SD / baseline mean), measured."""
    baseline, candidate = simulate_scores(np.random.default_rng([seed, 0]), n=400_000, true_improvement=THRESHOLD)
    return float((candidate - baseline).std(ddof=1) / baseline.mean())


def borderline_improvement(*, rule: str, n: int, relative_sd: float) -> float:
    """The true improvement at which the rule PASSes half the time at n cases (the planner's normal model)."""
    low, high = 0.0, 2.0
    for _ in range(60):
        middle = (low + high) / 2
        power = gate.gate_power(n=n, true_improvement=middle, threshold=THRESHOLD, rule=rule, relative_sd=relative_sd)
        low, high = (middle, high) if power < 0.5 else (low, middle)
    return (low + high) / 2


def _flips(args: tuple[int, str, float, int]) -> dict[str, Any]:
    """Borderline suites at n = FLIP_SIZE judged twice with different resampling seeds: how often the
    verdict differs, with production's resampling and with the old 2 000 resamples and no refinement."""
    seed, rule, improvement, suites = args
    rng = np.random.default_rng([seed, 7, FLIP_SIZE])
    settings: dict[str, dict[str, Any]] = {
        "production (10 000 + refinement)": {"resamples": gate.DEFAULT_RESAMPLES, "refine": True},
        "2 000, no refinement": {"resamples": 2_000, "refine": False},
    }
    flips = dict.fromkeys(settings, 0)
    close = 0
    passes = 0
    for _ in range(suites):
        baseline, candidate = simulate_scores(rng, n=FLIP_SIZE, true_improvement=improvement)
        first_seed, second_seed = (int(value) for value in rng.integers(2**63, size=2))
        for label, options in settings.items():
            first = gate.gate_scores(baseline, candidate, threshold=THRESHOLD, rule=rule, seed=first_seed, **options)
            second = gate.gate_scores(baseline, candidate, threshold=THRESHOLD, rule=rule, seed=second_seed, **options)
            flips[label] += first.verdict != second.verdict
            if label.startswith("production"):
                close += first.mc_close
                passes += first.verdict == gate.PASS
    return {"rule": rule, "n": FLIP_SIZE, "true_improvement": improvement, "suites": suites,
            "pass": passes / suites, "mc_close": close / suites,
            "flip_rate": {label: count / suites for label, count in flips.items()}}


def gate_call_seconds(*, n: int = 1_000, repeats: int = 3) -> float:
    """Best-of-`repeats` time of one production gate call (10 000 resamples, refinement on) at n cases."""
    baseline, candidate = simulate_scores(np.random.default_rng(1), n=n, true_improvement=0.1)
    best = math.inf
    for repeat in range(repeats):
        started = time.perf_counter()
        gate.gate_scores(baseline, candidate, threshold=THRESHOLD, rule=gate.DEFAULT_RULE, seed=repeat)
        best = min(best, time.perf_counter() - started)
    return best


def gate_operating_characteristics(
    *, seed: int = DEFAULT_SEED, simulations: int = SIMULATIONS, resamples: int = BENCH_RESAMPLES,
    flip_suites: int = FLIP_SUITES, workers: int | None = None, rerun_suites: int = gate_reruns.SUITES,
) -> dict[str, Any]:
    """The gate's table, seed-flip rates and call time, as plain data (deterministic for a seed)."""
    started = time.perf_counter()
    workers = workers or min(2, os.cpu_count() or 1)
    cells = [(seed, n, improvement, simulations, resamples) for n in SIZES for improvement in IMPROVEMENTS]
    relative_sd = reference_relative_sd(seed)
    flip_jobs = [(seed, rule, borderline_improvement(rule=rule, n=FLIP_SIZE, relative_sd=relative_sd), flip_suites)
                 for rule in RULES]
    fail_jobs = [(seed, index, label, n, improvement, simulations, resamples)
                 for index, (label, n, _options) in enumerate(FAIL_SCENARIOS) for improvement in FAIL_IMPROVEMENTS]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        table = [row for rows in pool.map(_cell, cells) for row in rows]
        flips = list(pool.map(_flips, flip_jobs))
        fail_rows = list(pool.map(_fail_cell, fail_jobs))
    for row in table:  # the planner's normal model of the same P(PASS), printed beside the simulated one
        row["modelled_pass"] = gate.gate_power(n=row["n"], true_improvement=row["true_improvement"], threshold=THRESHOLD,
                                               rule=row["rule"], relative_sd=relative_sd)
    reruns = gate_reruns.rerun_pass_rates(seed=seed, suites=rerun_suites, resamples=resamples, workers=workers)
    # P(FAIL | r ≥ t): the small and near-ceiling scenarios, and every table cell at or above the threshold.
    fail_above = max([row["fail"] for row in fail_rows]
                     + [row["fail"] for row in table if row["true_improvement"] >= THRESHOLD])
    null_pass = {rule: max(row["pass"] for row in table if row["rule"] == rule and row["true_improvement"] <= 0)
                 for rule in RULES}
    at_threshold = max(row["pass"] for row in table
                       if row["rule"] == gate.RULE_AT_LEAST_THRESHOLD and row["true_improvement"] == THRESHOLD)
    return {
        "threshold": THRESHOLD, "sizes": list(SIZES), "improvements": list(IMPROVEMENTS), "seed": seed,
        "simulations": simulations, "resamples": resamples, "reference_relative_sd": relative_sd,
        "table": table, "seed_flips": flips,
        "gate_call_seconds_n1000": gate_call_seconds(),
        "checks": {
            "pass_given_no_improvement": null_pass,
            "pass_given_no_improvement_ok": all(value <= NULL_PASS_LIMIT for value in null_pass.values()),
            "pass_at_threshold_at_least_rule": at_threshold,
            "pass_at_threshold_at_least_rule_ok": at_threshold <= AT_THRESHOLD_PASS_LIMIT,
            "fail_given_at_least_threshold": fail_above,
            "fail_given_at_least_threshold_ok": fail_above <= ABOVE_THRESHOLD_FAIL_LIMIT,
            "pass_within_reruns_at_threshold": reruns["check"]["pass_within_runs_at_threshold_after"],
            "pass_within_reruns_at_threshold_ok": reruns["check"]["ok"],
        },
        "fail_above_threshold": fail_rows,
        "reruns": reruns,
        "seconds": time.perf_counter() - started,
    }


def _format(result: dict[str, Any]) -> str:
    lines = [
        f"Benchmark gate: threshold {result['threshold']:.0%}, {result['simulations']} simulated suites a cell, "
        f"{result['resamples']} resamples a verdict, seed {result['seed']} "
        f"(reference score model: per-case relative SD {result['reference_relative_sd']:.3f})",
    ]
    for rule in RULES:
        lines.append(f"\n{rule}: P(PASS / FAIL / INCONCLUSIVE) in %  (± binomial SE of PASS)")
        lines.append("  n     " + "".join(f"r = {r:<17.2f}" for r in result["improvements"]))
        for n in result["sizes"]:
            cells = [row for row in result["table"] if row["rule"] == rule and row["n"] == n]
            lines.append(f"  {n:<5} " + "".join(
                f"{row['pass'] * 100:4.1f}/{row['fail'] * 100:4.1f}/{row['inconclusive'] * 100:4.1f} ±{row['pass_se'] * 100:.1f}  "
                for row in cells))
            lines.append("        planner's model: " + " / ".join(f"{row['modelled_pass'] * 100:.1f}" for row in cells))
    lines.append(f"\nSeed flips at n = {FLIP_SIZE}, borderline suites (true r where the rule PASSes about half the time):")
    for flip in result["seed_flips"]:
        rates = ", ".join(f"{label}: {rate * 100:.1f} %" for label, rate in flip["flip_rate"].items())
        lines.append(f"  {flip['rule']:<22} r = {flip['true_improvement']:.3f} ({flip['suites']} suites, PASS "
                     f"{flip['pass'] * 100:.0f} %, flagged mc_close {flip['mc_close'] * 100:.1f} %): {rates}")
    checks = result["checks"]
    lines.append(f"\nOne production gate call at n = 1 000: {result['gate_call_seconds_n1000'] * 1000:.0f} ms (best of 3)")
    lines.append("Done when: P(PASS | r ≤ 0) ≤ 2.5 % under both rules: "
                 + ", ".join(f"{rule} {value * 100:.1f} %" for rule, value in checks["pass_given_no_improvement"].items())
                 + (" — ok" if checks["pass_given_no_improvement_ok"] else " — NOT MET"))
    lines.append(f"           P(PASS | r = threshold) ≤ 5 % under at_least_threshold: "
                 f"{checks['pass_at_threshold_at_least_rule'] * 100:.1f} %"
                 + (" — ok" if checks["pass_at_threshold_at_least_rule_ok"] else " — NOT MET"))
    lines.append(f"           P(FAIL | r ≥ threshold) ≤ {ABOVE_THRESHOLD_FAIL_LIMIT * 100:.1f} % (the table's cells at r ≥ t and "
                 f"the scenarios below): {checks['fail_given_at_least_threshold'] * 100:.1f} %"
                 + (" — ok" if checks["fail_given_at_least_threshold_ok"] else " — NOT MET"))
    lines.append(f"\nP(FAIL) when the candidate reaches the threshold, small and near-ceiling suites "
                 f"({result['simulations']} suites a cell, {result['resamples']} resamples + refinement), in % (± binomial SE):")
    for label, n, _options in FAIL_SCENARIOS:
        cells = [row for row in result["fail_above_threshold"] if row["scenario"] == label and row["n"] == n]
        lines.append(f"  {label:<27} n = {n:<4} " + "   ".join(
            f"r = {row['true_improvement']:.2f}: {row['fail'] * 100:4.1f} ±{row['fail_se'] * 100:.1f}" for row in cells))
    lines.append("")
    lines += gate_reruns.format_rerun_rates(result["reruns"])
    lines.append(f"({result['seconds']:.0f} s)")
    return "\n".join(lines)


def at_threshold_cells(*, seed: int, simulations: int, resamples: int) -> str:
    """The table's cells at r = t (the same seeds: their first 1 000 suites are the table's), each with its
    Monte-Carlo standard error and 95 % Wilson interval: how tight "P(PASS | r = t)" is."""
    lines = [f"P(PASS | r = t = {THRESHOLD}) in %, {simulations} suites a cell, {resamples} resamples, seed {seed}:"]
    for n in SIZES:
        for row in _cell((seed, n, THRESHOLD, simulations, resamples)):
            share, z = row["pass"], 1.96
            centre = (share + z * z / (2 * simulations)) / (1 + z * z / simulations)
            half = z * math.sqrt(share * (1 - share) / simulations + z * z / (4 * simulations**2)) / (1 + z * z / simulations)
            lines.append(f"  {row['rule']:<22} n = {n:<4} {share * 100:5.2f} ± {row['pass_se'] * 100:.2f} "
                         f"(95 % {(centre - half) * 100:.2f}–{(centre + half) * 100:.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, seed: int | None = None) -> int:
    """Print the gate's numbers. `main(seed=…)` (as bench/decisions/run.py calls it) reads no command
    line: the caller's own arguments are not this script's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--simulations", type=int, default=SIMULATIONS, help="simulated suites per (n, r) cell")
    parser.add_argument("--resamples", type=int, default=BENCH_RESAMPLES, help="bootstrap resamples per verdict in the table")
    parser.add_argument("--flip-suites", type=int, default=FLIP_SUITES, help="borderline suites for the seed-flip rate")
    parser.add_argument("--rerun-suites", type=int, default=gate_reruns.SUITES, help="suites per re-run cell")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--at-threshold-only", action="store_true",
                        help="only the cells P(PASS | r = t) of the table (both rules), with --simulations suites each")
    args = parser.parse_args([] if argv is None and seed is not None else argv)
    if seed is not None:
        args.seed = seed
    if args.at_threshold_only:
        print(at_threshold_cells(seed=args.seed, simulations=args.simulations, resamples=args.resamples))
        return 0
    result = gate_operating_characteristics(seed=args.seed, simulations=args.simulations, resamples=args.resamples,
                                            flip_suites=args.flip_suites, workers=args.workers,
                                            rerun_suites=args.rerun_suites)
    print(json.dumps(result, indent=2) if args.json else _format(result))
    checks = result["checks"]
    return 0 if all(value for key, value in checks.items() if key.endswith("_ok")) else 1


if __name__ == "__main__":
    sys.exit(main())
