"""`DecimalTotal` sums a decimal column exactly to its places on SQLite too (the embedded `make run`):
SQLite adds decimals as floats, and a plain `Sum` came back as 109.551809000000 or 0.690789000000001
and was shown so on the WaltzRL build page and in command output."""

from __future__ import annotations

from tests.conftest import on_migrated_sqlite

SCRIPT = """
import json, random
from decimal import Decimal
from django.db.models import Q, Sum
from costs.models import CostEntry
from costs.services import cost_record
from genesis.aggregates import DecimalTotal
from models_app.registry.models import Agent

agent = Agent.objects.create(slug="qa_agent", name="qa")
random.seed(1)
amounts = [Decimal(random.randint(1, 999_999)).scaleb(-6) for _ in range(200)]
for n, amount in enumerate(amounts):
    cost_record(agent=agent, operation="manual", amount_usd=amount, idempotency_key=f"k{n}")
entries = CostEntry.objects.all()
print(json.dumps({
    "exact": str(sum(amounts)),
    "plain": str(entries.aggregate(t=Sum("amount_usd"))["t"]),
    "total": str(entries.aggregate(t=DecimalTotal("amount_usd"))["t"]),
    "filtered": str(entries.aggregate(t=DecimalTotal("amount_usd", filter=Q(amount_usd__gt=Decimal("0.5"))))["t"]),
    "exact_filtered": str(sum(a for a in amounts if a > Decimal("0.5"))),
    "none": str(entries.filter(pk=-1).aggregate(t=DecimalTotal("amount_usd"))["t"]),
}))
"""


def test_a_decimal_total_on_sqlite_is_exact_to_the_columns_places(tmp_path):
    sums = on_migrated_sqlite(tmp_path, SCRIPT, timeout=60)

    assert sums["plain"] != sums["exact"]  # what SQLite does to a plain Sum: why DecimalTotal exists
    assert sums["total"] == sums["exact"] and sums["filtered"] == sums["exact_filtered"]
    assert sums["none"] == "0.000000"
