"""Results over 1 M outcomes: `experiment_results` (the selector behind
`GET /api/v1/experiments/{key}/results`) against the bare SQL aggregate it is built on.

Target (issue 5): the selector takes <= 2x the bare aggregate.

The bare aggregate is one hand-written GROUP BY over the experiment's outcomes computing the
per-event numbers of the page — per arm n, successes, Σ/Σ² of latency, quality and cost, outcomes
and distinct users in the current stage, latency p50/p95 with percentile_cont. The selector computes
the per-user, per-stage sufficient statistics instead (a GROUP BY per user inside one per stage and
arm), the percentiles, and then the statistics (stratified lift, intervals, p-values, SRM, the
sequential guardrails).
Each side is timed `--repeats` times after a warm-up run, alternating; the best time counts.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/results/run.py [--outcomes 1000000] [--repeats 5]

Never writes into the database DATABASE_URL names: it seeds `<that name>_results_bench` beside it
(bench/scratch.py, dropped at the end), starts analyst_agent's demo experiment there and fills it with
synthetic outcomes (generate_series). REDIS_URL, if set, must be an index no one else uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.synthetic_outcomes import fill_outcomes  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

if TYPE_CHECKING:
    from experiments.models import Experiment

TARGET_RATIO = 2.0
AGENT = "analyst_agent"


def setup(outcomes: int) -> Experiment:
    """analyst_agent's running experiment with `outcomes` outcomes, in the scratch database (refused anywhere else)."""
    require_scratch()
    import io

    from django.core.management import call_command

    from experiments.models import Experiment
    from experiments.services import experiment_start

    call_command("seed_demo", stdout=io.StringIO())
    experiment = Experiment.objects.filter(agent__slug=AGENT, status="running").first()
    if experiment is None:
        draft = Experiment.objects.filter(agent__slug=AGENT, status="draft").order_by("-created_at").first()
        if draft is None:
            raise SystemExit(f"{AGENT} has no draft experiment to start (seed_demo makes one on a fresh database)")
        experiment = experiment_start(experiment=draft, actor=None, override_reason="bench/results: synthetic data")
    experiment = Experiment.objects.select_related("control", "treatment", "current_stage").get(pk=experiment.pk)
    assert experiment.current_stage is not None  # a started experiment is in a stage
    started = time.perf_counter()
    inserted = fill_outcomes(experiment, outcomes=outcomes, prefix="bench-results-")
    if inserted:
        print(f"inserted {inserted:,} synthetic outcomes in {time.perf_counter() - started:.1f} s")
    return experiment


BARE_SQL = """
SELECT variant,
       count(*), sum(success::int),
       sum(latency_ms), sum(latency_ms * latency_ms),
       count(quality), sum(quality), sum(quality * quality),
       count(cost_usd), sum(cost_usd), sum((cost_usd::float8) * (cost_usd::float8)),
       count(*) FILTER (WHERE occurred_at >= %(stage)s),
       count(DISTINCT user_id) FILTER (WHERE occurred_at >= %(stage)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
FROM experiments_outcomeevent
WHERE experiment_id = %(exp)s AND variant IN ('control', 'treatment')
GROUP BY variant
ORDER BY variant
"""


def best_times(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Best wall time of each run; runs alternate, so a busy moment on the machine hits both alike."""
    results = {name: run() for name, run in runs.items()}  # warm-up: caches, plans
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            results[name] = run()
            timings[name].append(time.perf_counter() - started)
    return {name: (min(timings[name]), results[name]) for name in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if services_missing("percentile_cont is PostgreSQL's"):
        return 2
    with scratch_database("results_bench", redis=True):
        return measure(args, setup(args.outcomes))


def measure(args: argparse.Namespace, experiment: Experiment) -> int:
    from django.db import connection

    from experiments.results import experiment_results
    from experiments.selectors import get_experiment

    stage = experiment.current_stage
    assert stage is not None  # setup() started the experiment

    def bare() -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(BARE_SQL, {"exp": experiment.pk, "stage": stage.started_at})
            return cursor.fetchall()

    def selector() -> dict[str, Any]:
        return experiment_results(experiment=get_experiment(key=experiment.key))

    measured = best_times({"bare": bare, "selector": selector}, args.repeats)
    (bare_seconds, rows), (selector_seconds, results) = measured["bare"], measured["selector"]
    n = sum(row[1] for row in rows)
    # The selector's numbers are the bare aggregate's.
    assert results["variants"]["control"]["n"] + results["variants"]["treatment"]["n"] == n
    assert abs(results["variants"]["control"]["latency_p95_ms"] - rows[0][14]) < 1e-6
    ratio = selector_seconds / bare_seconds
    print(f"{n:,} outcomes in experiment {experiment.key}")
    print(f"bare SQL aggregate: {bare_seconds * 1000:.0f} ms; experiment_results: {selector_seconds * 1000:.0f} ms "
          f"(best of {args.repeats})")
    met = meets_target("ratio selector / bare SQL", ratio, at_most=TARGET_RATIO)
    print(f"lift {results['relative_lift']:+.4f} (95 % {results['ci95'][0]:+.4f} to {results['ci95'][1]:+.4f}), "
          f"p = {results['p_value']:.3g}, srm_p = {results['srm_p']}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
