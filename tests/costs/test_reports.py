"""Done-when: `track_costs --report --format csv` and the beat-made report agree to the cent with the
ledger. The report task is sent the way beat sends it, and run by a real worker."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from costs.models import CostEntry, CostReport
from costs.services import budget_upsert, cost_entry_reverse, cost_record, cost_report_run
from genesis.schedules import install_default_schedules
from tests.factories import AgentFactory, UserFactory


def csv_total(text: str) -> tuple[Decimal, Decimal]:
    """(sum of the spend rows, the TOTAL row) of a report CSV."""
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[-1]["day"] == "TOTAL"
    return sum(Decimal(row["amount_usd"]) for row in rows[:-1]), Decimal(rows[-1]["amount_usd"])


def wait_for_report(schedule_key: str, timeout: float = 60) -> CostReport:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = CostReport.objects.filter(schedule_key=schedule_key).first()
        if report and report.status in (CostReport.Status.SUCCEEDED, CostReport.Status.FAILED):
            return report
        time.sleep(0.3)
    raise AssertionError(f"no finished report {schedule_key} after {timeout:.0f} s")


@pytest.mark.worker
def test_beat_made_report_and_track_costs_csv_agree_with_the_ledger(celery_worker):
    from django_celery_beat.models import PeriodicTask

    from genesis.celery import app

    qa, legal = AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")
    budget_upsert(name="default", amount_usd="30")
    now = timezone.now()
    amounts = ["0.004999", "1.005", "2.333333", "0.000001", "7.10", "0.49"]
    for index, amount in enumerate(amounts):
        cost_record(agent=(qa, legal)[index % 2], operation=("benchmark", "inference", "manual")[index % 3],
                    amount_usd=Decimal(amount), idempotency_key=f"r{index}", model="open-mistral-7b" if index % 2 else "",
                    occurred_at=now - timedelta(days=index % 3))
    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="r4"), actor=UserFactory(is_superuser=True), reason="duplicate")
    ledger = CostEntry.objects.aggregate(total=Sum("amount_usd"))["total"]
    assert ledger == Decimal("3.833333")

    install_default_schedules()
    schedule = PeriodicTask.objects.get(name="costs: daily cost report")
    assert (schedule.task, schedule.crontab.minute, schedule.crontab.hour) == ("costs.daily_cost_report", "5", "0")
    app.send_task(schedule.task, kwargs=json.loads(schedule.kwargs))  # what beat does at 00:05
    report = wait_for_report(f"daily:{timezone.localdate().isoformat()}")
    assert report.status == CostReport.Status.SUCCEEDED, report.error
    assert report.total_usd == ledger and report.entry_count == 7
    assert report.deliveries == {"log": "ok"}
    assert report.started_at <= report.finished_at

    out = io.StringIO()
    call_command("track_costs", "--report", "--format", "csv", stdout=out)
    cli_csv = out.getvalue()
    assert cli_csv == report.csv  # the same rows, amount for amount
    for text in (cli_csv, report.csv):
        rows_sum, total_row = csv_total(text)
        assert rows_sum == total_row == ledger
        assert total_row.quantize(Decimal("0.01")) == ledger.quantize(Decimal("0.01")) == Decimal("3.83")
    assert "Ledger total: **$3.83**" in report.markdown

    # Beat firing again the same day does not make a second report.
    finished_at = report.finished_at
    app.send_task("costs.daily_cost_report")
    time.sleep(2)
    assert CostReport.objects.count() == 1
    report.refresh_from_db()
    assert report.finished_at == finished_at


@pytest.mark.django_db
def test_report_lists_budgets_alerts_and_fine_tuning_jobs_and_is_sent(qa_agent, default_budget, alert_channels, mailoutbox):
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("16"), idempotency_key="big")
    report = CostReport.objects.create()
    report = cost_report_run(report_id=report.pk)
    assert report.status == CostReport.Status.SUCCEEDED
    assert "| default | all agents | all time | $16.00 | $30.00 | 53.3 % | 25 %, 50 % | on |" in report.markdown
    assert "| default | total | 50 % | critical | $16.00 | $30.00 | pending |" in report.markdown
    assert "## Fine-tuning jobs" in report.markdown
    assert report.deliveries == {"log": "ok", "email": "ok", "slack": "ok"}
    assert [a[0] for a in mailoutbox[0].attachments] == [f"genesis-costs-{report.as_of:%Y-%m-%d}.md", f"genesis-costs-{report.as_of:%Y-%m-%d}.csv"]
    assert alert_channels.texts()[0].startswith(f"*[Genesis] cost report {report.as_of:%Y-%m-%d}: $16.00*")
    assert cost_report_run(report_id=report.pk).finished_at == report.finished_at  # done is done


@pytest.mark.django_db
def test_report_csv_sums_to_the_ledger_for_any_charges(qa_agent, legal_agent):
    from django.db import transaction
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from costs.reports import render_csv
    from costs.selectors import cost_report_data

    charges = st.lists(
        st.tuples(st.sampled_from(["qa", "legal"]), st.sampled_from(["benchmark", "inference", "manual"]),
                  st.decimals(min_value=0, max_value=10_000, places=6), st.integers(min_value=0, max_value=40)),
        min_size=1, max_size=12,
    )

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(charges=charges)
    def check(charges):  # type: ignore[no-untyped-def]
        with transaction.atomic():
            now = timezone.now()
            for index, (who, operation, amount, days_ago) in enumerate(charges):
                cost_record(agent=qa_agent if who == "qa" else legal_agent, operation=operation, amount_usd=amount,
                            idempotency_key=f"p{index}", occurred_at=now - timedelta(days=days_ago))
            ledger = CostEntry.objects.aggregate(total=Sum("amount_usd"))["total"]
            rows_sum, total_row = csv_total(render_csv(cost_report_data()))
            assert rows_sum == total_row == ledger == sum(amount for _, _, amount, _ in charges)
            transaction.set_rollback(True)

    check()
