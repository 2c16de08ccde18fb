"""The ledger's admin list and the budget pages on a ledger of millions of entries (bench/admin_scale
measures them): every query they make reads an index or the entries selected, once — none reads the
whole ledger where it need not. Checked on the queries themselves, not on time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from costs.models import CostEntry
from costs.services import budget_upsert, cost_record
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def charge(agent, key: str, amount: str, *, at: datetime | None = None, model: str = "open-mistral-7b") -> CostEntry:
    return cost_record(agent=agent, operation="manual", amount_usd=Decimal(amount), idempotency_key=key, model=model,
                       occurred_at=at)


def ledger_queries(client, url: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in captured if "costs_costentry" in query["sql"]]


def indexes_leading_with() -> set[str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, CostEntry._meta.db_table)
    return {details["columns"][0] for details in constraints.values()
            if (details["index"] or details["primary_key"] or details["unique"]) and details["columns"]}


def test_the_ledger_list_counts_and_sums_its_selection_in_one_pass(admin_client, qa_agent, legal_agent):
    """Scale review: the list counted the whole ledger twice (its selection, and all entries beside it)
    and summed the selection a third time: three passes over a million entries (80 + 80 + 140 ms)."""
    charge(qa_agent, "a", "0.15")
    charge(legal_agent, "b", "4")
    page, queries = ledger_queries(admin_client, "/admin/costs/costentry/")
    assert "Total of the 2 entries selected: <strong>$4.15</strong>" in page
    passes = [sql for sql in queries if "COUNT(" in sql or "SUM(" in sql]
    assert len(passes) == 1 and "COUNT(" in passes[0] and "SUM(" in passes[0], passes
    assert admin.site._registry[CostEntry].show_full_result_count is False
    entry = CostEntry.objects.get(idempotency_key="a")
    # The history page pages the admin's log entries, not ledger entries: Django's own paginator.
    assert admin_client.get(f"/admin/costs/costentry/{entry.pk}/history/").status_code == 200


def test_the_ledger_lists_date_hierarchy_probes_periods_instead_of_truncating_every_entry(admin_client, qa_agent):
    """Scale review: the years it offered came from DATE_TRUNC over every entry (280 ms a page at a
    million); now an EXISTS per period, which the occurred_at index answers."""
    for key, at in (("old", datetime(2024, 11, 30, 12, tzinfo=UTC)), ("mid", datetime(2026, 3, 2, 12, tzinfo=UTC)),
                    ("new", datetime(2026, 3, 17, 12, tzinfo=UTC))):
        charge(qa_agent, key, "1", at=at)
    page, queries = ledger_queries(admin_client, "/admin/costs/costentry/")
    assert "?occurred_at__year=2024" in page and "?occurred_at__year=2026" in page and "occurred_at__year=2025" not in page
    page, more = ledger_queries(admin_client, "/admin/costs/costentry/?occurred_at__year=2026")
    assert "occurred_at__month=3" in page and "occurred_at__month=4" not in page
    page, most = ledger_queries(admin_client, "/admin/costs/costentry/?occurred_at__year=2026&occurred_at__month=3")
    assert "occurred_at__day=2" in page and "occurred_at__day=17" in page and "occurred_at__day=3&" not in page
    assert not [sql for sql in queries + more + most if "DATE_TRUNC" in sql.upper()]
    assert timezone.get_current_timezone_name() == "UTC"  # the periods above are UTC's


def test_a_ledger_search_matches_exactly_on_indexed_columns(admin_client, qa_agent, legal_agent):
    """Scale review: a search was a case-insensitive substring match on five columns, one of them the
    agent's slug through a join — a scan of the whole ledger (2.9 s at a million entries)."""
    charge(qa_agent, "run:42:answer", "1", model="ft:open-mistral-7b:abc")
    charge(legal_agent, "run:43:answer", "2")
    for term, total in (("qa_agent", "$1.00"), ("run:43:answer", "$2.00"), ("ft:open-mistral-7b:abc", "$1.00"),
                        ("open-mistral-7b", "$2.00")):
        page, queries = ledger_queries(admin_client, f"/admin/costs/costentry/?q={term}")
        assert f"Total of the 1 entry selected: <strong>{total}</strong>" in page, term
        assert not [sql for sql in queries if "LIKE" in sql or "UPPER(" in sql], queries
    page, _ = ledger_queries(admin_client, "/admin/costs/costentry/?q=qa_")
    assert "Total of the 0 entries selected" in page or "0 results" in page
    assert "Exact match" in page  # the search box says how it matches


def test_the_ledger_list_sorts_only_by_indexed_columns(admin_client):
    """Scale review: sorting a million entries by agent, model or amount took 1.2–1.7 s (no index)."""
    model_admin = admin.site._registry[CostEntry]
    sortable = {CostEntry._meta.get_field(name).column for name in model_admin.sortable_by}
    assert sortable and sortable <= indexes_leading_with()


def test_a_model_versions_ledger_entries_have_an_index(admin_client):
    """Scale review: a model version's lineage, the launch board and report sum its entries by model id
    (0.5 s a version at a million entries without it); migration costs 0012."""
    assert "model" in indexes_leading_with()


def test_the_budget_pages_do_not_sum_the_ledger(admin_client, qa_agent):
    """Scale review: the change and history pages of a budget summed its whole period's ledger for a
    column only the list shows (0.14 s each at a million entries); the list reads the spend from the
    rollup (costs 0013; 0.86 s at a million entries when it summed the ledger, bench/ledger_scale)."""
    budget = budget_upsert(name="default", amount_usd="30")
    charge(qa_agent, "a", "0.50")
    for url in (f"/admin/costs/budget/{budget.pk}/change/", f"/admin/costs/budget/{budget.pk}/history/"):
        _, queries = ledger_queries(admin_client, url)
        assert queries == [], url
    page, queries = ledger_queries(admin_client, "/admin/costs/budget/")
    assert "$0.50" in page and queries == []


def test_the_ledger_lists_later_pages_are_read_from_the_end(admin_client, qa_agent, monkeypatch):
    """Scale review: the last page of a million entries took 1.3 s — an OFFSET of 999 900 rows. Pages in
    the second half are now read from the end (the opposite order, a small OFFSET), same rows, same order."""
    monkeypatch.setattr(admin.site._registry[CostEntry], "list_per_page", 2)
    entries = [charge(qa_agent, f"k{n}", "1", at=datetime(2026, 3, n + 1, 12, tzinfo=UTC)) for n in range(5)]
    newest_first = [entry.pk for entry in reversed(entries)]
    for page, expected in ((1, newest_first[0:2]), (2, newest_first[2:4]), (3, newest_first[4:5])):
        html, queries = ledger_queries(admin_client, f"/admin/costs/costentry/?p={page}")
        shown = [int(pk) for pk in re.findall(r'class="field-id"><a href="/admin/costs/costentry/(\d+)/change/', html)]
        assert shown == expected, (page, shown)
        listing = [sql for sql in queries if "LIMIT" in sql]
        if page == 3:
            assert listing and not [sql for sql in listing if "OFFSET" in sql], listing


def test_the_dashboard_and_the_summary_split_the_spend_in_one_pass(admin_client, qa_agent, legal_agent, client, api_key_for):
    """Scale review: the spend by agent and the spend by operation were a pass each over the budget's
    period — for a total budget, the whole ledger (100–170 ms each at a million entries); now one pass
    grouped by both (selectors.spend_split)."""
    budget_upsert(name="default", amount_usd="30")
    charge(qa_agent, "a", "0.50")
    cost_record(agent=legal_agent, operation="benchmark", amount_usd=Decimal("2"), idempotency_key="b")
    page, queries = ledger_queries(admin_client, "/admin/costs/costdashboard/")
    splits = [sql for sql in queries if "GROUP BY" in sql and "::date" not in sql]  # not the daily charts
    assert len(splits) == 1, splits
    assert "legal_agent" in page and "qa_agent" in page
    with CaptureQueriesContext(connection) as captured:
        summary = client.get("/api/v1/costs/summary", headers={"Authorization": f"Bearer {api_key_for('qa_agent', 'legal_agent')}"}).json()
    assert summary["by_agent"] == {"legal_agent": "2.00", "qa_agent": "0.50"}, summary
    assert summary["by_operation"] == {"benchmark": "2.00", "manual": "0.50"}, summary
    assert len([q for q in captured if "costs_costentry" in q["sql"] and "GROUP BY" in q["sql"]]) == 1


@pytest.mark.parametrize("order", ["3", "4", "-4", "3.4"])  # operation, model (columns without a sort link)
def test_the_ledger_list_ignores_a_sort_by_a_column_outside_sortable_by(admin_client, qa_agent, order):
    """Review: sortable_by hid the other columns' sort links, but `?o=3` still sorted the whole ledger by
    operation (or model, amount …): a million rows sorted without an index. Such an `o` is ignored, and the
    default order (-occurred_at, -id) holds — not Django's fallback for an `o` it cleared, id alone: the
    entry that happened later is recorded first here, so the two orders differ."""
    newer = cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("2"), idempotency_key="newer", model="z-model")
    older = cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("1"), idempotency_key="older",
                        model="a-model", occurred_at=timezone.now() - timedelta(hours=1))

    response = admin_client.get(f"/admin/costs/costentry/?o={order}")

    assert response.status_code == 200
    assert [entry.pk for entry in response.context["cl"].result_list] == [newer.pk, older.pk]  # newest first, the default
    ordered_by = str(response.context["cl"].result_list.query).split("ORDER BY")[1]
    assert '"operation"' not in ordered_by and '"model"' not in ordered_by, ordered_by
