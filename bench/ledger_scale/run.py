"""Ledger writes and budget reads as the ledger grows: `cost_record`, `cost_record_many`,
`budget_check`, the budget list (`with_spent`) and `spend_split` timed per call over a ledger of
--small entries (10 000) and of --big entries (1 000 000), under an all-agents `total` budget and an
all-agents `monthly` one, printing big/small.

Each write locks every budget covering its agent and evaluates that budget's thresholds under the
lock: the spend it reads there must not grow with the ledger, or every write slows down as the ledger
grows and all writers under a shared budget wait behind each other's reading. Target: each write and
read at the big ledger within 2× its time at the small one (noise allowance: a few ms either way).

The entries are written in SQL (INSERT … SELECT over generate_series), spread over the current month
up to now in local time, so both budgets' periods hold all of them — the monthly one's worst case.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/ledger_scale/run.py \
        [--small 10000] [--big 1000000] [--calls 30]

Never writes into the database DATABASE_URL names: it works in `<that name>_ledger_scale` beside it
(bench/scratch.py, dropped at the end). REDIS_URL, if set, must be an index no one else uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

AGENTS = 5
BATCH = 10  # cost_record_many: one charge per agent and model of a batch of outcome events (5 agents × 2 models)
TARGET_RATIO = 2.0
SLACK_SECONDS = 0.003  # timer noise below which a ratio means nothing

FILL = """
INSERT INTO costs_costentry (amount_usd, operation, model, tokens, input_tokens, output_tokens, source_id, source,
    occurred_at, recorded_at, idempotency_key, note, actor_id, agent_id, reverses_id, source_type_id, tokens_estimated)
SELECT (random() * 0.002)::numeric(12, 6), (ARRAY['inference', 'inference', 'inference', 'benchmark'])[g %% 4 + 1],
       'open-mistral-7b', 600, 400, 200, '', 'bench/ledger_scale', t, t, 'ledger-scale:' || g, '', NULL,
       (%(agents)s::bigint[])[g %% %(n_agents)s + 1], NULL, NULL, false
FROM generate_series(%(first)s, %(last)s) AS g,
     LATERAL (SELECT %(start)s::timestamptz + (%(now)s::timestamptz - %(start)s::timestamptz) * g / (%(last)s + 1) AS t) AS at
"""


def setup() -> list[Any]:
    """The agents and the two budgets, in the scratch database (refused anywhere else)."""
    require_scratch()
    from costs.services import budget_upsert
    from models_app.registry.models import Agent

    agents = [Agent.objects.create(slug=f"scale-agent-{n}", name=f"scale agent {n}") for n in range(AGENTS)]
    # Far above anything the bench spends: no alert fires (no broker needed), every threshold is evaluated.
    for name, period in (("bench-total", "total"), ("bench-month", "monthly")):
        budget_upsert(name=name, amount_usd="1000000000", period=period, agent=None, actor=None)
    return agents


def fill_to(entries: int, agents: list[Any]) -> None:
    """Ledger entries up to `entries` rows (those already there kept), then ANALYZE."""
    from django.db import connection
    from django.utils import timezone

    from costs.models import CostEntry

    have = CostEntry.objects.count()
    if have >= entries:
        return
    now = timezone.localtime()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL, {"agents": [agent.pk for agent in agents], "n_agents": len(agents), "first": have + 1,
                              "last": entries, "start": start, "now": now - (now - start) / 100})
        cursor.execute("ANALYZE costs_costentry")
    print(f"filled the ledger to {entries:,} entries in {time.perf_counter() - started:.1f} s")


def per_call(run: Callable[[int], Any], calls: int) -> float:
    """Median wall time of `calls` calls of `run(i)`, after two warm-up calls."""
    timings = []
    for i in range(calls + 2):
        started = time.perf_counter()
        run(i)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings[2:])


def measure(label: str, agents: list[Any], calls: int) -> dict[str, float]:
    from decimal import Decimal

    from costs import selectors
    from costs.models import Budget
    from costs.services import Charge, budget_check, cost_record, cost_record_many

    def record(i: int) -> None:
        cost_record(agent=agents[i % AGENTS], operation="inference", idempotency_key=f"bench:{label}:one:{i}",
                    amount_usd=Decimal("0.000123"), source="bench/ledger_scale")

    def record_many(i: int) -> None:
        cost_record_many(charges=[
            Charge(agent=agents[n % AGENTS], operation="inference", idempotency_key=f"bench:{label}:many:{i}:{n}",
                   amount_usd=Decimal("0.000045"), model=("open-mistral-7b", "mistral-small-latest")[n // AGENTS],
                   source="bench/ledger_scale")
            for n in range(BATCH)
        ])

    def check(i: int) -> None:
        budget_check(agent=agents[i % AGENTS], estimate_usd="0.01", actor=None)

    def budget_list(i: int) -> None:
        [budget.spent_usd for budget in selectors.with_spent(Budget.objects.all())]  # type: ignore[attr-defined]  # annotated

    def split(i: int) -> None:
        selectors.spend_split()

    runs = {"cost_record": record, f"cost_record_many ({BATCH})": record_many, "budget_check": check,
            "budget list (with_spent)": budget_list, "spend_split": split}
    return {name: per_call(run, calls) for name, run in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    if services_missing("the ledger's time is PostgreSQL's"):
        return 2
    with scratch_database("ledger_scale", redis=True):
        agents = setup()
        fill_to(args.small, agents)
        small = measure("small", agents, args.calls)
        fill_to(args.big, agents)
        big = measure("big", agents, args.calls)
    met = True
    print(f"{'per call (median of ' + str(args.calls) + ')':<30} {args.small:>12,} {args.big:>12,}")
    for name in small:
        print(f"{name:<30} {small[name] * 1000:>10.1f}ms {big[name] * 1000:>10.1f}ms")
    for name in small:
        ratio = (big[name] + SLACK_SECONDS) / (small[name] + SLACK_SECONDS)
        met &= meets_target(f"{name}: big / small (+{SLACK_SECONDS * 1000:.0f} ms each)", ratio, at_most=TARGET_RATIO)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
