"""Retention on PostgreSQL: the batched prune and one end user's erasure, each against the plain SQL
it is built on, on the same rows.

Targets (README "Data retention"):
- the prune (`outcomes_prune`: 10 000 rows a DELETE, each its own transaction with its line on the
  DataDeletion trail, so nothing waits long on a lock) takes <= 10x one plain DELETE of the same rows —
  for a backlog (`--backlog`, a first run) and for the steady state (one day, `--daily`, past the
  retention). Not a speed goal: the price accepted for short transactions. Finding each batch's ids
  and deleting them one primary-key lookup at a time is slower than one statement sweeping the rows
  (measured ~8x on a backlog, ~3x in the steady state); the one statement holds every row it deletes,
  and its WAL, until it ends — minutes on a real backlog;
- the erasure of one user (`user_data_erase`: the active-experiment check, the deletes, the trail) takes
  <= 2x one SELECT of that user's outcomes — the scan of the whole table the erasure cannot avoid, as
  outcomes have no index on the user id.
Before each timed prune or plain DELETE the old rows are inserted again and the table vacuumed; the
runs alternate and the best of `--repeats` counts.

    DATABASE_URL=postgres://…/genesis .venv/bin/python bench/retention/run.py [--rows 900000] [--backlog 100000] [--daily 10000] [--repeats 3]

Never writes into the database DATABASE_URL names: it makes `<that name>_retention_bench` beside it
(bench/scratch.py, dropped at the end), one agent there, and fills it with `--rows` recent live outcomes
(generate_series). REDIS_URL, if set, must be an index no one else uses.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

PRUNE_TARGET_RATIO = 10.0
ERASURE_TARGET_RATIO = 2.0
AGENT = "bench_retention"
USERS = 100_000
INSERT = """
INSERT INTO experiments_outcomeevent (event_id, agent_id, experiment_id, variant, user_id, model, success, latency_ms,
    input_tokens, output_tokens, occurred_at, received_at)
SELECT %(prefix)s || g, %(agent)s, NULL, 'live', 'user-' || (g %% %(users)s), 'open-mistral-7b', random() < 0.9,
       200 + random() * 600, 100, 50, %(at)s - (g %% 86400 || ' seconds')::interval, now()
FROM generate_series(1, %(n)s) AS g
ON CONFLICT (agent_id, event_id) DO NOTHING
"""
_runs = itertools.count()


def setup(rows: int) -> int:
    """One agent with `rows` recent live outcomes, in the scratch database (refused anywhere else)."""
    require_scratch()
    from django.db import connection
    from django.utils import timezone

    from models_app.registry.models import Agent

    agent, _ = Agent.objects.get_or_create(slug=AGENT, defaults={"name": "bench/retention"})
    with connection.cursor() as cursor:
        started = time.perf_counter()
        # Recent: spread over the last 80 days, inside every retention the bench prunes with.
        cursor.execute(INSERT.replace("g %% 86400", "g %% (80 * 86400)"),
                       {"prefix": "recent-", "agent": agent.pk, "users": USERS, "at": timezone.now(), "n": rows})
        if cursor.rowcount:
            print(f"inserted {cursor.rowcount:,} recent outcomes in {time.perf_counter() - started:.1f} s")
    return agent.pk


def old_rows(agent_id: int, n: int) -> None:
    """`n` live outcomes 200 days old (a new batch each time), then VACUUM ANALYZE, untimed."""
    from django.db import connection
    from django.utils import timezone

    with connection.cursor() as cursor:
        cursor.execute(INSERT, {"prefix": f"old-{time.time_ns()}-{next(_runs)}-", "agent": agent_id, "users": USERS,
                                "at": timezone.now() - timedelta(days=200), "n": n})
        cursor.execute("VACUUM ANALYZE experiments_outcomeevent")


def best_pair(runs: dict[str, Callable[[], int]], prepare: Callable[[], None], repeats: int) -> dict[str, tuple[float, int]]:
    """Best wall time of each run, `prepare()` (untimed) before each; the runs alternate."""
    best: dict[str, tuple[float, int]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            prepare()
            started = time.perf_counter()
            deleted = run()
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, deleted)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=900_000, help="recent live outcomes kept in the table")
    parser.add_argument("--backlog", type=int, default=100_000, help="old outcomes of a first prune")
    parser.add_argument("--daily", type=int, default=10_000, help="old outcomes of a steady-state prune (one day's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if services_missing("the prune's batches are PostgreSQL's"):
        return 2
    with scratch_database("retention_bench", redis=True):
        return measure(args, setup(args.rows))


def measure(args: argparse.Namespace, agent_id: int) -> int:
    from django.db import connection, transaction
    from django.utils import timezone

    from experiments.retention import outcomes_prune, user_data_erase

    cutoff = timezone.now() - timedelta(days=90)

    batches: list[int] = []

    def prune() -> int:
        result = outcomes_prune(live_before=cutoff, actor=None)
        batches.append(result.batches)
        return result.outcomes

    def plain_delete() -> int:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM experiments_outcomeevent WHERE experiment_id IS NULL AND variant = 'live' "
                           "AND occurred_at < %s", [cutoff])
            return cursor.rowcount

    met = True
    for label, n in (("backlog", args.backlog), ("steady state", args.daily)):
        measured = best_pair({"prune": prune, "plain": plain_delete}, functools.partial(old_rows, agent_id, n), args.repeats)
        (prune_s, pruned), (plain_s, deleted) = measured["prune"], measured["plain"]
        assert pruned == deleted == n, (pruned, deleted, n)
        print(f"{label}: {n:,} of {args.rows + n:,} outcomes — prune {prune_s:.3f} s in {batches[-1]} batches "
              f"({prune_s / batches[-1] * 1000:.0f} ms a transaction), one plain DELETE {plain_s:.3f} s (best of {args.repeats})")
        met &= meets_target(f"ratio prune / plain DELETE ({label})", prune_s / plain_s, at_most=PRUNE_TARGET_RATIO)

    users = (f"user-{index}" for index in itertools.count(1))

    def erase() -> int:
        return user_data_erase(user_id=next(users), agent=None, actor=None).outcomes

    def scan() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM experiments_outcomeevent WHERE user_id = %s", [f"user-{USERS - 1}"])
            return len(cursor.fetchall())

    measured = best_pair({"erase": erase, "scan": scan}, lambda: None, args.repeats)
    (erase_s, erased), (scan_s, found) = measured["erase"], measured["scan"]
    print(f"erasure of one user ({erased} outcomes) over {args.rows:,} outcomes: {erase_s:.3f} s; "
          f"one SELECT of a user's outcomes ({found}): {scan_s:.3f} s (best of {args.repeats})")
    met &= meets_target("ratio erasure / SELECT", erase_s / scan_s, at_most=ERASURE_TARGET_RATIO)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
