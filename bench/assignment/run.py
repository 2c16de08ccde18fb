"""Assignment speed: our ``assign_variant`` against the GrowthBook Python SDK on the same experiment.

Target (issue 5): our decision takes at most 0.5x the SDK's time.

Both sides decide the same thing for the same user ids: a 10 % stage of one experiment, hash v2,
treatment when the bucket is below 0.10. The SDK gets the most favourable setup we know — one
``GrowthBook`` instance reused for every user (``set_attributes`` then ``run``) and one
``Experiment`` object — so the ratio is not flattered by SDK construction cost. Before timing,
every user's decision is compared between the two; the script exits 1 on any mismatch.
Times are the best of ``--repeats`` runs (the least disturbed by the rest of the machine).

    .venv/bin/python bench/assignment/run.py [--users 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.targets import meets_target  # noqa: E402
from experiments.assignment import assign_variant, bucket  # noqa: E402

TARGET_RATIO = 0.5
SEED = "bench-qa_agent-3f9c2a71d4e5b6a8"
STAGE_FRACTION = 0.10


def best_time(decide_all: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        decide_all()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    try:
        from growthbook import Experiment, GrowthBook
        from growthbook.core import gbhash
    except ImportError:
        print("growthbook is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
        return 2

    user_ids = [f"user-{index:07d}" for index in range(args.users)]
    # variations ordered [treatment, control] with weights [f, 1 - f]: GrowthBook's first range is
    # [0, f), i.e. exactly our "bucket < f" rule.
    experiment = Experiment(
        key="qa_agent-rollout",
        variations=["treatment", "control"],
        weights=[STAGE_FRACTION, 1 - STAGE_FRACTION],
        hashVersion=2,
        seed=SEED,
    )
    growthbook = GrowthBook(attributes={"id": user_ids[0]})

    def growthbook_decisions() -> list[str]:
        decisions = []
        for user_id in user_ids:
            growthbook.set_attributes({"id": user_id})
            decisions.append(growthbook.run(experiment).value)
        return decisions

    def our_decisions() -> list[str]:
        return [assign_variant(seed=SEED, user_id=user_id, treatment_fraction=STAGE_FRACTION) for user_id in user_ids]

    def growthbook_bare_hash() -> list[float | None]:
        return [gbhash(SEED, user_id, 2) for user_id in user_ids]

    def our_bare_hash() -> list[float]:
        return [bucket(seed=SEED, user_id=user_id) for user_id in user_ids]

    ours, theirs = our_decisions(), growthbook_decisions()
    mismatches = sum(1 for a, b in zip(ours, theirs) if a != b)
    treated = ours.count("treatment")
    print(f"users: {args.users}, stage {STAGE_FRACTION:.0%}, treatment share {treated / args.users:.4f}, "
          f"decisions differing from GrowthBook: {mismatches}")
    if mismatches:
        return 1

    growthbook_seconds = best_time(growthbook_decisions, args.repeats)
    our_seconds = best_time(our_decisions, args.repeats)
    growthbook_hash_seconds = best_time(growthbook_bare_hash, args.repeats)
    our_hash_seconds = best_time(our_bare_hash, args.repeats)

    ratio = our_seconds / growthbook_seconds
    per_user = 1e6 / args.users
    print(f"GrowthBook SDK  set_attributes+run: {growthbook_seconds:.3f} s ({growthbook_seconds * per_user:.2f} µs/decision)")
    print(f"ours            assign_variant:     {our_seconds:.3f} s ({our_seconds * per_user:.2f} µs/decision)")
    met = meets_target("ratio ours/GrowthBook", ratio, at_most=TARGET_RATIO, digits=3)
    print(f"for reference, hash alone: GrowthBook gbhash {growthbook_hash_seconds:.3f} s, "
          f"ours bucket {our_hash_seconds:.3f} s, ratio {our_hash_seconds / growthbook_hash_seconds:.3f}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
