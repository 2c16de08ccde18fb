"""The Go/No-Go report's per-tag "regressed" caution: how often it names a tag of a candidate that is
better everywhere (false caution), and how often it names a tag that is truly worse (power), under the
report's rule (`launch.report.tag_wins_and_regressions`: sign test per tag, Holm across tags, 5 %) and
under the rule before it (any tag with a lower mean).

Suites: 48 paired cases from `models_app.benchmarks.simulation.simulate_scores` (its reference score
model: 70 % right/wrong, 30 % graded, baseline mean 0.60, models' errors correlated 0.7), six tags of
6, 8, 10, 14, 20 and 30 cases, each a random subset drawn anew for every suite (a case may carry several
tags, as a case counts under each of its tags). Per-tag rows come from the real
`models_app.benchmarks.breakdown.tag_breakdown`.

False caution: every case drawn at a true relative improvement r (0, +8 %, +16 %); the share of suites in
which at least one tag is named regressed. Power: the cases of one tag (10, 20 or 30 cases) drawn at a
worse true relative change (−10 %, −25 %, −50 %), every other case at +8 % (the same baseline scores);
the share of suites in which that tag is named. Each share ± at most 1.1 points (one binomial standard
error at 2 000 suites).

    .venv/bin/python bench/launch/tag_cautions.py [--suites 2000] [--seed 20261207] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launch.report import tag_wins_and_regressions  # noqa: E402
from models_app.benchmarks.breakdown import PairedScore, tag_breakdown  # noqa: E402
from models_app.benchmarks.simulation import simulate_scores  # noqa: E402

CASES = 48
TAG_SIZES = (6, 8, 10, 14, 20, 30)
UNIFORM_IMPROVEMENTS = (0.0, 0.08, 0.16)
REST_IMPROVEMENT = 0.08
WORSE_TAG_SIZES = (10, 20, 30)
WORSE_CHANGES = (-0.10, -0.25, -0.50)


def before_regressions(per_tag: list[dict[str, Any]]) -> list[str]:
    """The rule before (launch/report.py at 687a724): any tag whose mean delta is below zero."""
    return [tag["tag"] for tag in per_tag if (tag.get("mean_delta") or 0) < 0]


def after_regressions(per_tag: list[dict[str, Any]]) -> list[str]:
    return [tag["tag"] for tag in tag_wins_and_regressions(per_tag)[1]]


def _suite(rng: np.random.Generator, *, improvement: float, worse_size: int | None = None,
           worse_change: float = 0.0) -> list[dict[str, Any]]:
    tags = {f"t{size}": set(rng.choice(CASES, size=size, replace=False).tolist()) for size in TAG_SIZES}
    state = rng.bit_generator.state
    baseline, candidate = simulate_scores(rng, n=CASES, true_improvement=improvement)
    if worse_size is not None:
        rng.bit_generator.state = state  # the same cases and baseline scores, the candidate worse on one tag
        _, worse = simulate_scores(rng, n=CASES, true_improvement=worse_change)
        in_tag = np.isin(np.arange(CASES), sorted(tags[f"t{worse_size}"]))
        candidate = np.where(in_tag, worse, candidate)
    pairs = [PairedScore(key=str(case), baseline=float(baseline[case]), candidate=float(candidate[case]),
                         tags=tuple(name for name, members in tags.items() if case in members)) for case in range(CASES)]
    return [asdict(row) for row in tag_breakdown(pairs)]


def measure(*, suites: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    false_caution = []
    for improvement in UNIFORM_IMPROVEMENTS:
        before = after = 0
        for _ in range(suites):
            per_tag = _suite(rng, improvement=improvement)
            before += bool(before_regressions(per_tag))
            after += bool(after_regressions(per_tag))
        false_caution.append({"improvement": improvement, "before": before / suites, "after": after / suites})
    power = []
    for size in WORSE_TAG_SIZES:
        for change in WORSE_CHANGES:
            before = after = 0
            for _ in range(suites):
                per_tag = _suite(rng, improvement=REST_IMPROVEMENT, worse_size=size, worse_change=change)
                before += f"t{size}" in before_regressions(per_tag)
                after += f"t{size}" in after_regressions(per_tag)
            power.append({"tag_cases": size, "change": change, "before": before / suites, "after": after / suites})
    return {"false_caution": false_caution, "power": power}


def render(numbers: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["P(at least one tag named regressed) when the candidate is uniformly better (48 cases, six tags of 6–30):", "",
             "| true improvement, every case | before (any lower mean) | now (sign test, Holm, 5 %) |", "|---|---|---|"]
    lines += [f"| {row['improvement'] * 100:+.0f} % | {row['before'] * 100:.1f} % | {row['after'] * 100:.1f} % |"
              for row in numbers["false_caution"]]
    lines += ["", "P(the worse tag is named regressed): one tag's cases truly worse, the rest +8 %:", "",
              "| tag's cases | its true change | before | now |", "|---|---|---|---|"]
    lines += [f"| {row['tag_cases']} | {row['change'] * 100:+.0f} % | {row['before'] * 100:.1f} % | {row['after'] * 100:.1f} % |"
              for row in numbers["power"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    numbers = measure(suites=args.suites, seed=args.seed)
    print(json.dumps(numbers, indent=1) if args.json else render(numbers))


if __name__ == "__main__":
    main()
