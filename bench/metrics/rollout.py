"""/metrics over running rollouts with many outcomes: how long the scrape's rollout part
(`experiments.selectors_monitoring.rollout_states`, what experiments.metrics.RolloutCollector exports)
and the whole /metrics body take, and how many queries they make, against one rollout's outcome
aggregate (`experiments.outcome_aggregate.experiment_metrics`).

Target: the rollout part takes at most a tenth of ONE rollout's aggregate (TARGET_RATIO), so a scrape's
time does not grow with the outcomes of its rollouts: Prometheus gives a scrape 10 s by default, and
reading each running rollout's outcomes took seconds per rollout at a million outcomes.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/metrics/rollout.py \
        [--outcomes 200000] [--repeats 5]

Never writes into the database DATABASE_URL names: it builds the launch board bench's world in
`<that name>_metrics_rollout` beside it (bench/scratch.py, dropped at the end; REDIS_URL an index of its own) (bench/launch/board.py `setup`: the five demo
agents' rollouts running, `--outcomes` synthetic outcomes each, one guardrail evaluation of each, as beat
makes every minute). Each side is timed `--repeats` times after a warm-up, alternating; the best time counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.launch.board import best_times, world_from_command_line  # noqa: E402
from bench.targets import meets_target  # noqa: E402

TARGET_RATIO = 0.1


def main() -> int:
    return world_from_command_line(__doc__, why="the rollouts' aggregates are PostgreSQL's", suffix="metrics_rollout",
                                   measure=measure)


def measure(args: argparse.Namespace, running: list[Any]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from experiments.outcome_aggregate import experiment_metrics
    from experiments.selectors_monitoring import rollout_states
    from genesis.metrics import exposition

    runs = {
        "rollout part": rollout_states,
        "whole /metrics": exposition,
        "aggregate": lambda: experiment_metrics(experiment=running[0]),
    }
    times = best_times(runs, args.repeats)
    queries = {}
    for name in ("rollout part", "whole /metrics"):
        with CaptureQueriesContext(connection) as captured:
            runs[name]()
        queries[name] = len(captured)
    print(f"{len(running)} running rollouts of {args.outcomes:,} outcomes each")
    for name in ("rollout part", "whole /metrics"):
        print(f"{name}: {times[name] * 1000:.1f} ms, {queries[name]} queries")
    print(f"one rollout's experiment_metrics: {times['aggregate'] * 1000:.0f} ms (best of {args.repeats})")
    met = meets_target("ratio rollout part / one rollout's aggregate", times["rollout part"] / times["aggregate"],
                       at_most=TARGET_RATIO, digits=3)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
