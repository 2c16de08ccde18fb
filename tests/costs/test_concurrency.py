"""Done-when: fifty concurrent processes recording costs that together cross 25, 50 and 83 % of $30
leave exactly three alerts, the ledger sums to the exact Decimal total, and each alert is sent once."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal

import pytest
from django.db.models import Sum

from costs.models import BudgetAlert, CostEntry
from costs.services import budget_upsert
from tests.conftest import ROOT, child_environment
from tests.factories import AgentFactory

PROCESSES = 50
# Uneven micro-dollar amounts, so an exact total proves no entry was lost, doubled or rounded:
# 50 × $0.52 + $0.000117 × (0 + 1 + … + 49) = $26.143325 = 87.1 % of $30.
AMOUNTS = [Decimal("0.52") + Decimal("0.000117") * index for index in range(PROCESSES)]
EXPECTED_TOTAL = Decimal("26.143325")


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.worker
def test_fifty_processes_crossing_three_thresholds_leave_exactly_three_alerts(
    transactional_db, start_worker, webhook, monkeypatch, tmp_path
):
    assert sum(AMOUNTS) == EXPECTED_TOTAL
    agents = [AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")]
    budget = budget_upsert(name="default", amount_usd=Decimal("30"), thresholds=[25, 50, 83], hard_limit=True)
    # The worker delivers the alerts to the webhook (and the log); it reads the channel from its environment.
    monkeypatch.setenv("GENESIS_SLACK_WEBHOOK", webhook.url)
    monkeypatch.delenv("GENESIS_ALERT_EMAILS", raising=False)
    start_worker(queues="default", concurrency=2)

    launcher = subprocess.Popen(
        [sys.executable, "-m", "tests.costs.concurrent_recorder", str(tmp_path),
         *(f"{agents[index % 2].slug}:{amount}" for index, amount in enumerate(AMOUNTS))],
        cwd=ROOT, env=child_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == PROCESSES or launcher.poll() is not None,
                 timeout=120, what="fifty processes to connect")
        (tmp_path / "go").touch()
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, err.decode()[-2000:]
    assert len(out.split()) == PROCESSES  # fifty processes, each printed the id of its entry

    # The ledger: fifty entries, summing (in SQL) to the exact Decimal total.
    assert CostEntry.objects.count() == PROCESSES
    assert CostEntry.objects.aggregate(total=Sum("amount_usd"))["total"] == EXPECTED_TOTAL

    # Exactly three alerts, one per threshold.
    alerts = list(BudgetAlert.objects.filter(budget=budget).select_related("triggered_by").order_by("threshold_percent"))
    assert [(a.threshold_percent, a.severity) for a in alerts] == [(25, "warning"), (50, "critical"), (83, "emergency")]

    # Entries were added one at a time: ids follow the lock order, so the running total at each
    # alert's triggering entry is the spend the alert saw, the first to reach its threshold.
    running, totals_by_id = Decimal(0), {}
    for entry_id, amount in CostEntry.objects.order_by("id").values_list("id", "amount_usd"):
        running += amount
        totals_by_id[entry_id] = running
    for alert in alerts:
        line = Decimal(30) * alert.threshold_percent / 100
        assert alert.spent_usd == totals_by_id[alert.triggered_by_id]
        assert alert.spent_usd - alert.triggered_by.amount_usd < line <= alert.spent_usd

    # Each alert is delivered once, after commit, by the worker.
    wait_for(lambda: BudgetAlert.objects.filter(delivery="delivered").count() == 3, timeout=60, what="three deliveries")
    time.sleep(1.0)  # room for a duplicate to show up, if there were one
    texts = webhook.texts()
    assert len(texts) == 3, texts
    for threshold in (25, 50, 83):
        assert sum(f"budget 'default' at {threshold} %" in text for text in texts) == 1
