"""On SQLite (the embedded `make run`) there is no trigger to keep the rollup of spend: the budget
reads sum the ledger there, and must answer exactly what the ledger holds — never read the empty
rollup tables as "nothing spent"."""

from __future__ import annotations

from tests.conftest import on_migrated_sqlite

SCRIPT = """
import json
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from costs import budgeting, selectors
from costs.models import Budget, CostSpendBucket, CostSpendTotal
from costs.services import Charge, budget_upsert, cost_entry_reverse, cost_record, cost_record_many
from django.contrib.auth.models import User
from models_app.registry.models import Agent

qa, legal = (Agent.objects.create(slug=slug, name=slug) for slug in ("qa_agent", "legal_agent"))
total = budget_upsert(name="total", amount_usd="100", period="total")
month = budget_upsert(name="month", amount_usd="100", period="monthly", agent=qa)
now = timezone.now()
first = cost_record(agent=qa, operation="inference", amount_usd="1.000003", idempotency_key="a", occurred_at=now - timedelta(minutes=3))
cost_record_many(charges=[Charge(agent=agent, operation="benchmark", amount_usd="0.250001", idempotency_key=f"b{n}")
                          for n, agent in enumerate((qa, legal, qa))])
cost_entry_reverse(entry=first, actor=User.objects.create_superuser("root"), reason="test")
at = timezone.localtime()
print(json.dumps({
    "spent": {b.name: str(selectors.budget_spent(budget=b, period=budgeting.period_containing(b.period, at))) for b in (total, month)},
    "listed": {b.name: str(b.spent_usd) for b in selectors.with_spent(Budget.objects.all())},
    "status": str(selectors.budget_status(budget=month).spent),
    "split": {k: str(v) for k, v in selectors.spend_split().by_agent.items()},
    "rollup_rows": CostSpendBucket.objects.count() + CostSpendTotal.objects.count(),
}))
"""


def test_budget_reads_on_sqlite_sum_the_ledger(tmp_path):
    read = on_migrated_sqlite(tmp_path, SCRIPT, timeout=90)

    assert read["rollup_rows"] == 0  # nothing keeps it there: the reads must not use it
    assert read["spent"] == read["listed"] == {"total": "0.750003", "month": "0.500002"}
    assert read["status"] == "0.500002"
    assert read["split"] == {"legal_agent": "0.250001", "qa_agent": "0.500002"}
