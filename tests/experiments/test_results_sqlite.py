"""The capped comparisons of latency and cost on SQLite (the embedded `make run`): the results
selector's one SQL statement — the pooled 99th-percentile caps counted from the top with a sub-query
OFFSET, each request capped in a CASE, the per-user sums — runs there too, and CI's PostgreSQL never
runs it. A few users with two requests each and one outlier far above the cap, on a migrated SQLite
database in a child process; the numbers must be stats.pooled_cap's and stats.compare's on the same
requests, as tests/experiments/test_results.py holds PostgreSQL to. The guardrails judge the real,
uncapped requests: their estimates must be stats.compare's on those."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from experiments import stats
from tests.conftest import on_migrated_sqlite

SCRIPT = """
import json
from decimal import Decimal
import numpy as np
from experiments.models import OutcomeEvent
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from experiments.services import experiment_start
from tests.experiments.factories import draft_experiment, outcome_events, rollout_team

team = rollout_team()
draft = draft_experiment(actor=team["starter"], stage_plan=[10, 100])
experiment = experiment_start(experiment=draft, actor=team["starter"])
rng = np.random.default_rng(8)
events = []
for arm, users, seed in (("control", 55, 1), ("treatment", 20, 2)):
    for event in outcome_events(experiment, arm=arm, n=users, success_rate=0.9, seed=seed):
        events += [{**event, "event_id": f"{event['event_id']}-{visit}", "latency_ms": float(np.exp(rng.normal(6.5, 1.0)))}
                   for visit in range(2)]
events[-1]["latency_ms"] = 3_000_000.0  # one stuck request, far above the cap
assert outcomes_ingest(principal=None, events=events).accepted == len(events) == 150
stored = list(OutcomeEvent.objects.filter(experiment=experiment).order_by("event_id"))
for row in stored:
    row.cost_usd = Decimal(f"{float(np.exp(rng.normal(-8, 1.0))):.8f}")
stored[-1].cost_usd = Decimal("4.00000000")
OutcomeEvent.objects.bulk_update(stored, ["cost_usd"])
results = experiment_results(experiment=get_experiment(key=experiment.key))
print(json.dumps({
    "rows": [[row.variant, row.user_id, row.latency_ms, str(row.cost_usd)] for row in stored],
    "comparisons": {metric: results["comparisons"][metric] for metric in ("latency_ms", "cost_per_request")},
    "guardrails": {g["metric"]: g["estimate"] for g in results["guardrails"]},
}))
"""


def _compared(rows: list[list], column: int, cap: float = math.inf) -> stats.Comparison | None:
    """stats.compare of the per-user sums of requests capped at ``cap`` (none by default)."""
    per_user: dict[str, dict[str, list[float]]] = {"control": defaultdict(lambda: [0.0, 0.0]), "treatment": defaultdict(lambda: [0.0, 0.0])}
    for row in rows:
        sums = per_user[row[0]][row[1]]
        sums[0] += min(float(row[column]), cap)
        sums[1] += 1
    arms = [stats.RatioSummary.from_users(per_user[arm].values()) for arm in ("control", "treatment")]
    return stats.compare([stats.Stratum(*arms)])


def test_latency_and_cost_are_capped_on_sqlite_as_stats_computes_it(tmp_path):
    found = on_migrated_sqlite(tmp_path, SCRIPT)
    rows = found["rows"]
    assert len(rows) == 150 and len({row[1] for row in rows}) == 75  # two requests per user

    for metric, column in (("latency_ms", 2), ("cost_per_request", 3)):
        cap = stats.pooled_cap([float(row[column]) for row in rows])
        expected, real = _compared(rows, column, cap), _compared(rows, column)
        values = sorted(float(row[column]) for row in rows)
        # 150 requests: the cap is the 149th smallest (nearest rank), not the outlier nor the 148th.
        assert cap == values[-2] and values[-1] > 100 * cap and values[-3] < cap
        got = found["comparisons"][metric]
        assert got["capped_at"] == pytest.approx(cap, rel=1e-12)
        assert expected is not None and expected.absolute_interval and expected.relative_interval
        assert (got["control"], got["treatment"]) == pytest.approx((expected.control_mean, expected.treatment_mean), rel=1e-9)
        assert got["p_value"] == pytest.approx(expected.p_value, rel=1e-9)
        assert got["absolute_ci95"] == pytest.approx([expected.absolute_interval.low, expected.absolute_interval.high], rel=1e-9)
        assert got["ci95"] == pytest.approx([expected.relative_interval.low, expected.relative_interval.high], rel=1e-9)
        # The guardrails judge the real requests, uncapped: the outlier is in their estimate.
        assert real is not None and abs(real.absolute_lift) > 10 * abs(expected.absolute_lift)
        assert found["guardrails"][metric] == pytest.approx(real.absolute_lift, rel=1e-9)
    uncapped = np.mean([float(row[2]) for row in rows if row[0] == "treatment"])
    assert found["comparisons"]["latency_ms"]["treatment"] < uncapped / 10  # the outlier did not enter the mean
