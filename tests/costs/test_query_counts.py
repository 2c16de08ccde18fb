"""The costs admin lists cost a fixed number of queries however many rows they show: each budget's
spend comes with the list, and each hold's work is read with the rows its name follows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import count

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from costs import selectors
from costs.budgeting import period_containing
from costs.models import Budget, CostHold
from costs.services import budget_upsert, cost_record
from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite
from tests.costs.factories import FineTuningJobFactory
from tests.factories import AgentFactory, ModelVersionFactory, UserFactory
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db

_numbers = count()


@pytest.fixture
def root(client):
    client.force_login(UserFactory(username="root", is_superuser=True))


def listed(client, url: str):
    def read():
        response = client.get(url)
        assert response.status_code == 200
        return response
    return read


def add_budget(period: str) -> Budget:
    n = next(_numbers)
    agent = AgentFactory(slug=f"spender_{n}")
    cost_record(agent=agent, operation="inference", amount_usd=Decimal("0.300001"), idempotency_key=f"spend-{n}")
    cost_record(agent=agent, operation="inference", amount_usd=Decimal("2"), idempotency_key=f"old-{n}",
                occurred_at=timezone.now() - timedelta(days=40))
    return budget_upsert(name=f"budget-{n}", amount_usd=Decimal("10"), period=period, agent=agent)


def test_the_budget_list_reads_each_budgets_spend_with_the_list(client, root):
    add_budget("monthly")
    page = assert_same_queries_with_more_rows(
        listed(client, "/admin/costs/budget/"), lambda: [add_budget(period) for period in ("total", "monthly", "daily")],
    )
    html = page.content.decode()
    assert html.count("$0.30 (3 %)") == 3 and html.count("$2.30 (23 %)") == 1  # the total one counts the old entry too


def test_each_budgets_spend_read_with_the_list_is_what_budget_spent_gives(db):
    budgets = [add_budget(period) for period in ("total", "monthly", "daily")]
    everyone = budget_upsert(name="everyone", amount_usd=Decimal("10"), period="monthly")
    now = timezone.localtime()
    for budget in selectors.with_spent(Budget.objects.filter(pk__in=[b.pk for b in [*budgets, everyone]])):
        assert budget.spent_usd == selectors.budget_spent(budget=budget, period=period_containing(budget.period, now))
    assert selectors.with_spent(Budget.objects.filter(pk=everyone.pk)).get().spent_usd == Decimal("0.900003")


def add_holds() -> None:
    n = next(_numbers)
    agent = AgentFactory(slug=f"holder_{n}")
    candidate, baseline = ModelVersionFactory(agent=agent), ModelVersionFactory(agent=agent, model_id=f"base-{n}")
    suite = BenchmarkSuite.objects.create(agent=agent, slug="s", version=1, fingerprint=f"f{n}")
    run = BenchmarkRun.objects.create(agent=agent, suite=suite, suite_version=1, candidate=candidate, baseline=baseline)
    job = FineTuningJobFactory(agent=agent)
    for source in (run, job):
        CostHold.objects.create(agent=agent, operation="benchmark", amount_usd=Decimal("1"), source="as placed",
                                source_type=ContentType.objects.get_for_model(source), source_id=str(source.pk),
                                expires_at=timezone.now() + timedelta(hours=1))


def test_the_hold_list_reads_each_holds_work_with_the_list(client, root):
    add_holds()
    page = assert_same_queries_with_more_rows(listed(client, "/admin/costs/costhold/"), lambda: [add_holds() for _ in range(3)])
    html = page.content.decode()
    assert html.count(" vs base-") == 4 and "as placed" not in html  # the work as it is now, named in full
