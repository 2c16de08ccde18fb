"""The launch board over running rollouts with many outcomes: how long `/admin/` takes to render, and
how many queries it makes, against one rollout's outcome aggregate (`experiments.outcome_aggregate.
experiment_metrics`, what each running row read before the board showed the guardrail task's snapshot).

Target: the whole board renders in at most half the time of ONE rollout's aggregate (TARGET_RATIO), so
its time does not grow with the outcomes of its rollouts. Reading each running rollout's outcomes on every
page view, it took about as many aggregates as there are running rollouts (5 here).

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/launch/board.py \
        [--outcomes 200000] [--repeats 5]

Never writes into the database DATABASE_URL names: it makes `<that name>_launch_board` beside it
(bench/scratch.py, dropped at the end), seeds it, starts each demo agent's draft rollout (five), fills each
with `--outcomes` synthetic outcomes (bench/synthetic_outcomes.py), and runs one guardrail evaluation of
each, as beat does every minute. REDIS_URL must be an index no one else uses (bench/scratch.py refuses
one holding keys no bench made). Each side is timed
`--repeats` times after a warm-up, alternating; the best time counts.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.synthetic_outcomes import fill_outcomes  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

TARGET_RATIO = 0.5


def setup(outcomes: int) -> list[Any]:
    """The five demo agents' running rollouts, each with `outcomes` outcomes and a guardrail evaluation,
    in the scratch database (refused anywhere else: it starts every draft rollout)."""
    require_scratch()
    from django.core.management import call_command

    from experiments.guardrail_check import guardrails_check
    from experiments.models import Experiment
    from experiments.services import experiment_start

    call_command("seed_demo", stdout=io.StringIO())
    for draft in Experiment.objects.filter(status="draft").exclude(agent__experiments__status="running"):
        experiment_start(experiment=draft, actor=None, override_reason="bench/launch/board: synthetic data")
    running = list(Experiment.objects.filter(status="running").select_related("control", "treatment", "current_stage"))
    for experiment in running:
        started = time.perf_counter()
        inserted = fill_outcomes(experiment, outcomes=outcomes, prefix="bench-board-")
        if inserted:
            print(f"{experiment.key}: inserted {inserted:,} synthetic outcomes in {time.perf_counter() - started:.1f} s")
    for experiment in running:
        guardrails_check(experiment_id=experiment.pk)  # what beat does every minute
    still = list(Experiment.objects.filter(pk__in=[e.pk for e in running], status="running").select_related(
        "agent", "control", "treatment", "current_stage"))
    if len(still) != len(running):
        raise SystemExit("a guardrail evaluation paused or rolled back a rollout: the data above should be healthy")
    return still


def best_times(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each run; runs alternate, so a busy moment on the machine hits both alike."""
    for run in runs.values():
        run()  # warm-up: caches, plans
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    return {name: min(times) for name, times in timings.items()}


def world_from_command_line(doc: str, *, why: str, suffix: str, measure: Callable[[argparse.Namespace, list[Any]], int]) -> int:
    """A bench over this world: its options (--outcomes, --repeats; `doc` is its --help), then
    `measure(options, running rollouts)` over the world `setup` builds in the scratch database
    `<DATABASE_URL's name>_<suffix>`; 2, with `why` said on stderr, without PostgreSQL and Redis."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", type=int, default=200_000, help="outcomes per running rollout")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if services_missing(why, redis=True):
        return 2
    with scratch_database(suffix, redis=True):
        return measure(args, setup(args.outcomes))


def main() -> int:
    return world_from_command_line(__doc__, why="the board's aggregates are PostgreSQL's", suffix="launch_board", measure=measure)


def measure(args: argparse.Namespace, running: list[Any]) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from experiments.outcome_aggregate import experiment_metrics

    setup_test_environment()  # the test client's host, "testserver", is allowed
    user, _ = get_user_model().objects.get_or_create(username="bench-board", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)

    def board() -> None:
        response = client.get("/admin/")
        assert response.status_code == 200 and b'id="launch-board"' in response.content

    def aggregate() -> None:
        experiment_metrics(experiment=running[0])

    times = best_times({"board": board, "aggregate": aggregate}, args.repeats)
    with CaptureQueriesContext(connection) as queries:
        board()
    print(f"{len(running)} running rollouts of {args.outcomes:,} outcomes each")
    print(f"board: {times['board'] * 1000:.0f} ms, {len(queries)} queries; one rollout's experiment_metrics: "
          f"{times['aggregate'] * 1000:.0f} ms (best of {args.repeats})")
    met = meets_target("ratio board / one rollout's aggregate", times["board"] / times["aggregate"], at_most=TARGET_RATIO)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
