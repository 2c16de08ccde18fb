"""The admin: the ledger can be read, added to and reversed but never edited or deleted; budgets and
prices are edited through their services; reports download; the dashboard renders."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.forms import modelform_factory
from django.utils import timezone

from costs.admin import PriceTableForm, ServiceForm
from costs.models import Budget, CostEntry, CostReport, PriceTable
from costs.services import budget_upsert, cost_record, cost_report_run
from tests.accessibility import accessibility_problems, parse
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def staff_client(client, *codenames: str):
    """A client logged in as staff holding exactly the given costs permissions."""
    user = UserFactory(username="clerk")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="costs", codename__in=codenames))
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(client):
    user = UserFactory(username="root", is_superuser=True)
    client.force_login(user)
    client.user = user
    return client


def shown_submission(client) -> str:
    """The add form's hidden submission id, as the browser would send it back."""
    page = client.get("/admin/costs/costentry/add/").content.decode()
    return re.search(r'name="submission" value="([0-9a-f-]{36})"', page).group(1)


def test_admin_adds_a_manual_entry_through_the_service(admin_client, qa_agent, default_budget):
    submission = shown_submission(admin_client)
    response = admin_client.post("/admin/costs/costentry/add/", {
        "agent": qa_agent.pk, "operation": "manual", "amount_usd": "12.50", "model": "", "tokens": "", "note": "invoice 42",
        "submission": submission,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = CostEntry.objects.get()
    assert (entry.amount_usd, entry.actor, entry.source, entry.note) == (Decimal("12.5"), admin_client.user, "admin", "invoice 42")
    assert entry.idempotency_key == f"admin:{submission}"
    assert sorted(default_budget.alerts.values_list("threshold_percent", flat=True)) == [25]


def test_the_add_form_sent_twice_records_one_charge(admin_client, qa_agent, default_budget):
    """Race review, finding 3: a double click booked the same charge twice (and could cross thresholds)."""
    form = {"agent": qa_agent.pk, "operation": "manual", "amount_usd": "12.50", "model": "", "tokens": "",
            "note": "invoice 42", "submission": shown_submission(admin_client)}
    assert admin_client.post("/admin/costs/costentry/add/", form).status_code == 302
    assert admin_client.post("/admin/costs/costentry/add/", form).status_code == 302

    assert CostEntry.objects.count() == 1 and CostEntry.objects.get().amount_usd == Decimal("12.5")
    # The same form changed and sent again is refused, naming the entry it would be taken for.
    changed = admin_client.post("/admin/costs/costentry/add/", {**form, "amount_usd": "13"})
    assert changed.status_code == 200 and "already" in changed.content.decode()
    assert CostEntry.objects.count() == 1
    # A form shown anew is a new charge.
    assert admin_client.post("/admin/costs/costentry/add/", {**form, "submission": shown_submission(admin_client)}).status_code == 302
    assert CostEntry.objects.count() == 2


def test_ledger_entries_cannot_be_edited_or_deleted_only_reversed(admin_client, qa_agent):
    entry = cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("3"), idempotency_key="e")
    page = admin_client.get(f"/admin/costs/costentry/{entry.pk}/change/")
    assert page.status_code == 200 and "Reverse this entry" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/costs/costentry/{entry.pk}/change/", {"amount_usd": "0"}).status_code == 403
    assert admin_client.post(f"/admin/costs/costentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/costs/costentry/{entry.pk}/reverse/", {"reason": "charged twice"}).status_code == 302
    reversal = CostEntry.objects.get(reverses=entry)
    assert (reversal.amount_usd, reversal.actor, reversal.note) == (Decimal("-3"), admin_client.user, "charged twice")
    entry.refresh_from_db()
    assert entry.amount_usd == Decimal("3")


def test_budget_form_parses_thresholds_and_keeps_who_changed_it(admin_client):
    response = admin_client.post("/admin/costs/budget/add/", {
        "name": "experiments", "amount_usd": "100", "period": "monthly", "agent": "",
        "thresholds": "50 warning, 90 emergency", "hard_limit": "on", "active": "on", "reason": "Q4 plan",
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get(name="experiments")
    assert budget.thresholds == [{"percent": 50, "severity": "warning"}, {"percent": 90, "severity": "emergency"}]
    record = budget.history.get()
    assert (record.history_user, record.history_change_reason) == (admin_client.user, "Q4 plan")
    bad = admin_client.post(f"/admin/costs/budget/{budget.pk}/change/", {
        "amount_usd": "100", "period": "monthly", "agent": "", "thresholds": "50 loud", "active": "on"})
    assert bad.status_code == 200 and "&#x27;loud&#x27;: severity is one of warning, critical, emergency" in bad.content.decode()


def test_budget_history_and_form_show_thresholds_as_people_write_them(admin_client):
    budget = budget_upsert(name="team", amount_usd="10", thresholds="25, 50, 83")
    budget_upsert(name="team", amount_usd="10", thresholds="25, 50, 90")
    history = admin_client.get(f"/admin/costs/budget/{budget.pk}/history/").content.decode()
    assert "25 % warning, 50 % critical, 83 % emergency" in history and "25 % warning, 50 % critical, 90 % emergency" in history
    assert "&#x27;percent&#x27;" not in history and "'percent'" not in history
    form = admin_client.get(f"/admin/costs/budget/{budget.pk}/change/").content.decode()
    assert 'value="25 % warning, 50 % critical, 90 % emergency"' in form


def test_price_added_in_the_admin_names_its_author(admin_client):
    response = admin_client.post("/admin/costs/pricetable/add/", {
        "model": "mistral-small-latest", "effective_from": "2026-01-01", "input_usd_per_million": "0.1",
        "output_usd_per_million": "0.3", "training_usd_per_million": "", "fine_tuning_minimum_usd": "4",
        "storage_usd_per_month": "2", "source": "https://mistral.ai/pricing", "source_date": "2026-01-02", "note": "",
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    price = PriceTable.objects.get(model="mistral-small-latest")
    assert (price.effective_from, price.created_by, price.history.get().history_user) == (date(2026, 1, 1), admin_client.user, admin_client.user)


def test_reports_download_and_generate_now(admin_client, qa_agent):
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("2"), idempotency_key="x")
    report = cost_report_run(report_id=CostReport.objects.create().pk)
    listing = admin_client.get("/admin/costs/costreport/").content.decode()
    assert f"/admin/costs/costreport/{report.pk}/download/csv/" in listing and "Generate a report now" in listing
    download = admin_client.get(f"/admin/costs/costreport/{report.pk}/download/csv/")
    assert download["Content-Disposition"] == f'attachment; filename="genesis-costs-{report.as_of:%Y-%m-%d}-{report.pk}.csv"'
    assert download.content.decode() == report.csv
    assert admin_client.get(f"/admin/costs/costreport/{report.pk}/download/md/").content.decode() == report.markdown
    assert admin_client.get(f"/admin/costs/costreport/{report.pk}/download/pdf/").status_code == 404
    assert admin_client.get(f"/admin/costs/costreport/{report.pk + 99}/download/md/").status_code == 404
    assert admin_client.post("/admin/costs/costreport/generate/").status_code == 302
    queued = CostReport.objects.exclude(pk=report.pk).get()
    assert (queued.status, queued.requested_by) == ("pending", admin_client.user)


def test_dashboard_is_on_the_index_and_shows_gauge_projection_and_alerts(admin_client, qa_agent, default_budget):
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("16"), idempotency_key="x")
    index = admin_client.get("/admin/").content.decode()
    assert "/admin/costs/costdashboard/" in index and "Cost dashboard" in index
    page = admin_client.get("/admin/costs/costdashboard/").content.decode()
    assert re.findall(r'class="threshold-marker( reached)?" data-percent="(\d+)"', page) == [(" reached", "25"), (" reached", "50"), ("", "83")]
    assert '<div class="figure" data-testid="spent">$16.00</div>' in page
    assert 'data-testid="percent">53.3 %</div>' in page
    assert page.count('class="alert-row"') == 2
    assert 'class="bar"' in page and "qa_agent $16.00" in page


def test_money_in_the_costs_admin_is_written_by_the_one_formatter(admin_client, qa_agent, overrider):
    from costs.models import BudgetOverride
    from costs.services import budget_check

    budget_upsert(name="default", amount_usd="0.01", thresholds="25")
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("0.002832"), idempotency_key="small")
    budget_check(agent=qa_agent, estimate_usd="4", actor=overrider, override_reason="release check", hold_for=qa_agent,
                 operation="benchmark")
    assert BudgetOverride.objects.count() == 1
    dashboard = admin_client.get("/admin/costs/costdashboard/").content.decode()
    alerts = dashboard[dashboard.index('id="alerts"'):]
    assert "<td>$0.0028</td>" in alerts and "<td>$0.01</td>" in alerts and "0.00<" not in alerts
    assert "<td>$4.00</td>" in alerts  # the override's estimate
    ledger = admin_client.get("/admin/costs/costentry/").content.decode()
    assert "$0.0028" in ledger and "0.002832" not in ledger
    holds = admin_client.get("/admin/costs/costhold/").content.decode()
    assert "$4.00" in holds and "4.000000" not in holds


def test_dashboard_and_budget_list_count_money_held_by_running_work_as_not_left(admin_client, qa_agent, default_budget):
    from costs.services import budget_check

    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("1.05"), idempotency_key="spent")
    budget_check(agent=qa_agent, estimate_usd="8", actor=None, hold_for=qa_agent, operation="benchmark")
    page = admin_client.get("/admin/costs/costdashboard/").content.decode()
    assert 'data-testid="spent">$1.05</div>' in page and 'data-testid="held">$8.00</div>' in page
    assert 'data-testid="remaining">$20.95</div>' in page  # $30 − $1.05 − $8.00, what budget_check says is left
    budgets = admin_client.get("/admin/costs/budget/").content.decode()
    assert '<td class="field-held_usd">$8.00</td>' in budgets


def test_a_zero_dollar_budget_reads_as_the_api_reads_it(admin_client, qa_agent, client, api_key_for):
    budget_upsert(name="default", amount_usd="0")
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("0.50"), idempotency_key="any")
    budgets = admin_client.get("/admin/costs/budget/").content.decode()
    assert "$0.50 (100 %)" in budgets and "∞" not in budgets
    assert 'data-testid="percent">100 %</div>' in admin_client.get("/admin/costs/costdashboard/").content.decode()
    key = api_key_for("qa_agent")
    summary = client.get("/api/v1/costs/summary", headers={"Authorization": f"Bearer {key}"}).json()
    assert summary["percent"] == 100.0


def test_the_ledger_list_totals_the_entries_its_filters_select(admin_client, qa_agent, legal_agent):
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("0.15"), idempotency_key="a")
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("0.002832"), idempotency_key="b")
    cost_record(agent=legal_agent, operation="manual", amount_usd=Decimal("4"), idempotency_key="c")
    everything = admin_client.get("/admin/costs/costentry/").content.decode()
    assert 'Total of the 3 entries selected: <strong>$4.15</strong>' in everything
    filtered = admin_client.get(f"/admin/costs/costentry/?agent__id__exact={qa_agent.pk}").content.decode()
    assert 'Total of the 2 entries selected: <strong>$0.15</strong>' in filtered


def test_the_ledger_list_shows_and_filters_the_entries_charged_for_estimated_tokens(admin_client, qa_agent):
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("0.25"), idempotency_key="measured")
    estimated = cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("4"), idempotency_key="no-usage",
                            tokens_estimated=True)
    everything = admin_client.get("/admin/costs/costentry/").content.decode()
    assert "column-tokens_estimated" in everything and "By tokens estimated" in everything
    filtered = admin_client.get("/admin/costs/costentry/?tokens_estimated__exact=1").content.decode()
    assert 'Total of the 1 entry selected: <strong>$4.00</strong>' in filtered
    detail = admin_client.get(f"/admin/costs/costentry/{estimated.pk}/change/").content.decode()
    assert "the amount is an estimate" in detail  # the field's help text, beside its value


def test_a_hold_names_its_work_as_it_is_now(admin_client, qa_agent, default_budget):
    from costs.services import budget_check
    from tests.costs.factories import FineTuningJobFactory

    job = FineTuningJobFactory(agent=qa_agent, status="NOT_CREATED")
    budget_check(agent=qa_agent, estimate_usd="4", actor=None, hold_for=job, operation="fine_tuning")
    type(job).objects.filter(pk=job.pk).update(status="QUEUED")
    holds = admin_client.get("/admin/costs/costhold/").content.decode()
    assert "(QUEUED)" in holds and "NOT_CREATED" not in holds


def test_dashboard_needs_the_ledger_view_permission(client, db):
    client.force_login(UserFactory(username="nobody_special"))
    assert client.get("/admin/costs/costdashboard/").status_code == 403


def test_the_costs_pages_link_only_to_what_the_person_may_open(client, db):
    # UX review: the dashboard's Reports, Budgets and Prices links, and "Generate a report now", led a
    # reader of the ledger to "not allowed".
    reader = staff_client(client, "view_costentry", "view_costreport")
    links = reader.get("/admin/costs/costdashboard/").content.decode().split('class="dashboard-links"')[1].split("</p>")[0]
    assert "/admin/costs/costentry/" in links and "/admin/costs/costreport/" in links
    assert "/admin/costs/budget/" not in links and "/admin/costs/pricetable/" not in links
    assert "Generate a report now" not in reader.get("/admin/costs/costreport/").content.decode()
    User.objects.get(username="clerk").user_permissions.add(Permission.objects.get(content_type__app_label="costs",
                                                                               codename="add_costreport"))
    assert "Generate a report now" in reader.get("/admin/costs/costreport/").content.decode()


def test_dashboard_without_a_budget_says_how_to_make_one(admin_client):
    page = admin_client.get("/admin/costs/costdashboard/")
    assert page.status_code == 200
    assert 'id="no-budget"' in page.content.decode() and "/admin/costs/budget/add/" in page.content.decode()


def test_a_budget_the_service_refuses_is_a_form_error_not_a_500_or_a_false_success(client):
    """The clerk may open the add form (costs.add_budget) but budget_upsert needs costs.change_budget."""
    clerk = staff_client(client, "add_budget", "view_budget")
    response = clerk.post("/admin/costs/budget/add/", {
        "name": "experiments", "amount_usd": "100", "period": "monthly", "agent": "",
        "thresholds": "50 warning", "hard_limit": "on", "active": "on",
    })
    page = response.content.decode()
    assert response.status_code == 200, page[:2000]
    assert "user &#x27;clerk&#x27; may not edit budgets: it needs the permission &#x27;costs.change_budget&#x27;" in page
    assert "errornote" in page and "was added successfully" not in page
    assert not Budget.objects.exists() and not LogEntry.objects.exists()


def test_a_price_the_service_refuses_is_a_form_error_not_a_500(client):
    clerk = staff_client(client, "add_pricetable", "view_pricetable")
    response = clerk.post("/admin/costs/pricetable/add/", {
        "model": "mistral-small-latest", "effective_from": "2026-01-01", "input_usd_per_million": "0.1",
        "output_usd_per_million": "0.3", "training_usd_per_million": "", "fine_tuning_minimum_usd": "4",
        "storage_usd_per_month": "2", "source": "https://mistral.ai/pricing", "source_date": "2026-01-02", "note": "",
    })
    assert response.status_code == 200
    assert "may not edit prices: it needs the permission &#x27;costs.change_pricetable&#x27;" in response.content.decode()
    assert not PriceTable.objects.exists() and not LogEntry.objects.exists()


def test_a_service_form_without_its_service_call_is_refused_at_definition():
    with pytest.raises(TypeError, match="^NoServiceForm is a ServiceForm without save_through_service$"):
        class NoServiceForm(ServiceForm):
            class Meta:
                model = PriceTable
                fields = ("model",)

    # The admin builds a subclass of the form it is given (modelform_factory); it keeps the call.
    assert callable(modelform_factory(PriceTable, form=PriceTableForm, fields=("model",)).save_through_service)


def test_a_rearmed_alert_is_marked_on_the_dashboard_and_in_the_report(admin_client, qa_agent, default_budget):
    # UX review: after a budget change two alerts of one threshold showed with nothing to say why.
    from costs.reports import render
    from costs.selectors import cost_report_data
    from costs.services import cost_entry_reverse

    mistake = cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("8"), idempotency_key="typo")  # 25 % fires
    cost_entry_reverse(entry=mistake, actor=None, reason="typed 8 for 0.8")  # spend falls back: re-armed

    dashboard = admin_client.get("/admin/costs/costdashboard/").content.decode()
    assert "— re-armed " in dashboard[dashboard.index('id="alerts"'):]
    data = cost_report_data()
    assert "(re-armed " in render(data, fmt="md")
    assert '"rearmed_at": "' in render(data, fmt="json")


def test_the_dashboard_of_a_budget_barely_spent_says_exhaustion_is_not_in_sight(admin_client, qa_agent, default_budget):
    """Money review: a $0.00001 charge made the projection overflow and the dashboard answered 500."""
    cost_record(agent=qa_agent, operation="inference", amount_usd=Decimal("0.00001"), idempotency_key="tiny")
    response = admin_client.get("/admin/costs/costdashboard/")
    assert response.status_code == 200
    projection = response.content.decode().split('id="projection"')[1].split("</section>")[0]
    assert "not in sight" in projection and "more than 100 years away at the current burn rate" in projection


def test_the_dashboard_charts_have_text_alternatives_and_its_colours_follow_the_theme(admin_client, qa_agent, legal_agent, default_budget):
    """The gauge and both bar charts are images named by their <title>, with their numbers in a <desc>
    or a table; the severities are words, in the theme's colours (tests/accessibility.py)."""
    now = timezone.now()
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("6.20"), idempotency_key="a", occurred_at=now - timedelta(days=2))
    cost_record(agent=legal_agent, operation="fine_tuning", amount_usd=Decimal("10.00"), idempotency_key="b", occurred_at=now)
    html = admin_client.get("/admin/costs/costdashboard/").content.decode()

    assert accessibility_problems(html) == []
    table = next(node for node in parse(html).iter() if node.attrs.get("id") == "spend-per-day-by-agent-table")
    rows = [[cell.all_text() for cell in row.children] for row in table.iter() if row.tag == "tr"]
    assert rows[0] == ["day", "legal_agent", "qa_agent", "total"]
    assert rows[1][1:] == ["$0.00", "$6.20", "$6.20"] and rows[2][1:] == ["$10.00", "$0.00", "$10.00"]
    gauge = next(node for node in parse(html).iter() if node.attrs.get("id") == "budget-gauge-desc").all_text()
    assert gauge == "Alert thresholds: 25 % warning (reached), 50 % critical (reached), 83 % emergency (not reached)."
