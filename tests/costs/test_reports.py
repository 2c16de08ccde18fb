"""Done-when: `track_costs --report --format csv` and the beat-made report agree to the cent with the
ledger. The report task is sent the way beat sends it, and run by a real worker."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from costs import reports
from costs.budgeting import format_usd
from costs.models import CostEntry, CostReport
from costs.selectors import ReportData, SpendRow, cost_report_data
from costs.services import budget_upsert, cost_entry_reverse, cost_record, cost_report_run
from genesis.schedules import install_default_schedules
from tests.costs.factories import FineTuningJobFactory
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

    # Spend from before the report's month: in the ledger's report, not in the daily one.
    cost_record(agent=qa, operation="manual", amount_usd=Decimal("5"), idempotency_key="old", occurred_at=now - timedelta(days=40))

    install_default_schedules()
    schedule = PeriodicTask.objects.get(name="costs: daily cost report")
    assert (schedule.task, schedule.crontab.minute, schedule.crontab.hour) == ("costs.daily_cost_report", "5", "0")
    app.send_task(schedule.task, kwargs=json.loads(schedule.kwargs))  # what beat does at 00:05
    report = wait_for_report(f"daily:{timezone.localdate().isoformat()}")
    assert report.status == CostReport.Status.SUCCEEDED, report.error
    # The month of yesterday, from its first day: the report of the 1st is the whole past month.
    since = (timezone.localdate() - timedelta(days=1)).replace(day=1)
    period = CostEntry.objects.filter(occurred_at__gte=timezone.make_aware(datetime.combine(since, datetime.min.time())))
    in_period = period.aggregate(total=Sum("amount_usd"))["total"]
    assert report.spend_since == since
    assert report.total_usd == in_period and report.entry_count == period.count()
    assert report.deliveries == {"log": "ok"}
    assert report.started_at <= report.finished_at

    out = io.StringIO()
    call_command("track_costs", "--report", "--format", "csv", stdout=out)
    cli_csv = out.getvalue()
    rows_sum, total_row = csv_total(cli_csv)
    assert rows_sum == total_row == ledger + Decimal("5")  # track_costs --report: the whole ledger, as ever
    rows_sum, total_row = csv_total(report.csv)
    assert rows_sum == total_row == in_period
    # The same rows, amount for amount, for the days the report covers.
    cli_rows = [row for row in cli_csv.splitlines()[1:-1] if row[:10] >= since.isoformat()]
    assert report.csv.splitlines()[1:-1] == cli_rows
    assert f"Spend since {since.isoformat()}: **{format_usd(in_period)}**" in report.markdown

    # Beat firing again the same day does not make a second report.
    finished_at = report.finished_at
    app.send_task("costs.daily_cost_report")
    time.sleep(2)
    assert CostReport.objects.count() == 1
    report.refresh_from_db()
    assert report.finished_at == finished_at


class Clock:
    """timezone.now() at a chosen local time: entries are recorded, and reports made, when the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = timezone.now()
        # In UTC, as timezone.now() answers: a local time here hid a report named by its UTC day.
        monkeypatch.setattr(timezone, "now", lambda: self.now.astimezone(UTC))

    def at(self, *args: int) -> datetime:
        self.now = local(*args)
        return self.now


def local(*args: int) -> datetime:
    return timezone.make_aware(datetime(*args))


@pytest.mark.django_db
def test_daily_report_covers_yesterdays_month_up_to_when_it_is_made_and_old_reports_are_deleted(qa_agent, settings, monkeypatch):
    """Second review: the test put "one entry on the 2nd of each of the last four months" 31 days apart
    (skipping a month after one of 30 days), and the report of the 1st passed only by counting this
    month's entry — the spend had no upper bound. The report of day D lists what occurred from the
    first of D - 1's month up to the moment it is made, and nothing the ledger records later."""
    from costs.services import cost_report_daily

    clock = Clock(monkeypatch)

    def charge(amount: int, *, recorded: tuple[int, ...], occurred: tuple[int, ...] | None = None) -> None:
        clock.at(*recorded)
        cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal(amount), idempotency_key=f"m{amount}",
                    occurred_at=local(*(occurred or recorded)))

    charge(1, recorded=(2027, 1, 31, 23, 30))  # January: before the month the 1st of March reports
    charge(2, recorded=(2027, 2, 1, 0, 0))  # February, first moment
    charge(4, recorded=(2027, 2, 28, 23, 59))  # February, last minute (28 days)
    charge(8, recorded=(2027, 3, 1, 0, 1))  # March, before the report is made at 00:05
    charge(16, recorded=(2027, 3, 1, 0, 2), occurred=(2027, 3, 1, 6, 0))  # dated after the report's moment
    charge(32, recorded=(2027, 3, 1, 0, 10))  # recorded after the report was made

    clock.at(2027, 3, 1, 0, 5)  # beat's run on the 1st
    report = cost_report_daily()
    assert report.schedule_key == "daily:2027-03-01"
    assert (report.spend_since, report.as_of, report.total_usd, report.entry_count) == (
        date(2027, 2, 1), local(2027, 3, 1, 0, 5), Decimal("14"), 3)  # 2 + 4 + 8
    assert [line.split(",")[0] for line in report.csv.splitlines()] == ["day", "2027-02-01", "2027-02-28", "2027-03-01", "TOTAL"]
    assert "Spend since 2027-02-01: **$14.00**" in report.markdown

    clock.at(2027, 3, 3, 0, 5)
    report = cost_report_daily()
    assert (report.spend_since, report.total_usd, report.entry_count) == (date(2027, 3, 1), Decimal("56"), 3)  # 8 + 16 + 32

    settings.GENESIS_RETAIN_COST_REPORTS_DAYS = 30
    old = CostReport.objects.create(schedule_key="daily:2020-01-01")
    CostReport.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    kept = CostReport.objects.create(schedule_key="daily:2020-01-02")
    CostReport.objects.filter(pk=kept.pk).update(created_at=timezone.now() - timedelta(days=29))
    clock.at(2027, 3, 4, 0, 5)
    cost_report_daily()
    assert not CostReport.objects.filter(pk=old.pk).exists() and CostReport.objects.filter(pk=kept.pk).exists()
    assert CostEntry.objects.count() == 6  # the ledger is never pruned


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
def test_report_says_how_much_of_the_spend_rests_on_estimated_token_counts(qa_agent, alert_channels, mailoutbox):
    admin = UserFactory(is_superuser=True)
    cost_record(agent=qa_agent, operation="inference", amount_usd=Decimal("1.58"), idempotency_key="measured")
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("0.40"), idempotency_key="no-usage-1",
                input_tokens=900, output_tokens=100, tokens_estimated=True)
    cost_record(agent=qa_agent, operation="data_prep", amount_usd=Decimal("0.02"), idempotency_key="no-usage-2",
                input_tokens=40, output_tokens=10, tokens_estimated=True)
    wrong = cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("0.30"), idempotency_key="no-usage-3",
                        tokens_estimated=True)
    reversal = cost_entry_reverse(entry=wrong, actor=admin, reason="charged twice")
    assert reversal.tokens_estimated  # it takes back an estimate

    report = cost_report_run(report_id=CostReport.objects.create().pk)

    assert report.status == CostReport.Status.SUCCEEDED and report.total_usd == Decimal("2.00")
    assert ("Ledger total: **$2.00** (2.00 USD exact) over 5 entries. $0.42 of it from estimated token counts "
            "(the provider reported no usage).") in report.markdown
    assert "$0.42 of it from estimated token counts" in alert_channels.texts()[0]
    assert json.loads(reports.render_json(cost_report_data()))["estimated_usd"] == "0.42"

    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="no-usage-1"), actor=admin, reason="refunded")
    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="no-usage-2"), actor=admin, reason="refunded")
    markdown = reports.render_markdown(cost_report_data())
    assert "Ledger total: **$1.58** (1.58 USD exact) over 7 entries.\n" in markdown  # nothing estimated left: as before
    assert "estimated" not in markdown.split("## Budgets")[0]


@pytest.mark.django_db
def test_report_shares_round_half_up_a_small_share_is_not_nothing_and_a_spent_budget_reads_exhausted(
    qa_agent, legal_agent, default_budget
):
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("40.9906"), idempotency_key="a")  # 99.785 %
    cost_record(agent=legal_agent, operation="manual", amount_usd=Decimal("0.0023"), idempotency_key="b")
    cost_record(agent=legal_agent, operation="benchmark", amount_usd=Decimal("0.0860"), idempotency_key="c")
    markdown = reports.render_markdown(cost_report_data())
    assert "| qa_agent | $40.99 | 99.8 % |" in markdown  # 40.9906 / 41.0789 = 99.785 %
    assert "| benchmark | $0.09 | 0.2 % |" in markdown
    assert "| manual | $40.99 | 99.8 % |" in markdown
    assert "| legal_agent | $0.09 | 0.2 % |" in markdown
    cost_record(agent=legal_agent, operation="inference", amount_usd=Decimal("0.0023"), idempotency_key="d")
    markdown = reports.render_markdown(cost_report_data())
    assert "| inference | $0.0023 | <0.1 % |" in markdown
    budget_line = next(line for line in markdown.splitlines() if line.startswith("| default |"))
    assert budget_line.endswith("| exhausted |")  # 137 % of $30, as the dashboard says
    assert json.loads(reports.render_json(cost_report_data()))["budgets"][0]["exhausted"] is True


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
    def check(charges):
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


@pytest.mark.django_db
def test_a_report_another_worker_is_making_is_left_to_it(qa_agent, settings, alert_channels, mailoutbox):
    """A second run (task redelivered, beat again) must not make and send the report a second time."""
    started = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT - 60)
    report = CostReport.objects.create(status=CostReport.Status.RUNNING, started_at=started)
    again = cost_report_run(report_id=report.pk)
    assert (again.status, again.started_at, again.markdown, again.deliveries) == ("running", started, "", {})
    assert mailoutbox == [] and alert_channels.texts() == []


@pytest.mark.django_db
def test_a_report_left_running_past_the_task_time_limit_is_made_and_sent_once(qa_agent, settings, alert_channels, mailoutbox):
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("2"), idempotency_key="x")
    abandoned = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    report = CostReport.objects.create(status=CostReport.Status.RUNNING, started_at=abandoned)
    made = cost_report_run(report_id=report.pk)
    assert made.status == CostReport.Status.SUCCEEDED and made.started_at > abandoned and made.total_usd == Decimal("2")
    assert cost_report_run(report_id=report.pk).finished_at == made.finished_at
    assert len(mailoutbox) == 1 and len(alert_channels.texts()) == 1


@pytest.mark.django_db
def test_a_run_that_lost_its_claim_while_building_neither_stores_nor_sends(qa_agent, settings, alert_channels, mailoutbox, monkeypatch):
    """The first run takes longer than the time limit; a second run claims the report again and makes
    and sends it; when the first finishes building, its claim is gone and it drops its result."""
    report = CostReport.objects.create()
    render_csv = reports.render_csv
    runs: list[CostReport] = []
    builds = 0

    def slow_render_csv(data):
        nonlocal builds
        builds += 1
        if builds == 1:  # the first run, mid-build: the time limit passes and another run takes over
            past = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1)
            CostReport.objects.filter(pk=report.pk).update(started_at=past)
            runs.append(cost_report_run(report_id=report.pk))
        return render_csv(data)

    monkeypatch.setattr(reports, "render_csv", slow_render_csv)
    first = cost_report_run(report_id=report.pk)
    (second,) = runs
    assert builds == 2 and second.status == CostReport.Status.SUCCEEDED
    assert (first.pk, first.status, first.started_at, first.finished_at) == (second.pk, second.status, second.started_at, second.finished_at)
    assert len(mailoutbox) == 1 and len(alert_channels.texts()) == 1


@pytest.mark.django_db
def test_report_lists_fine_tuning_jobs_with_what_the_ledger_charged_by_then(qa_agent):
    succeeded = FineTuningJobFactory(agent=qa_agent, provider_job_id="ftjob-1", status="SUCCESS",
                                     fine_tuned_model="ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b")
    not_created = FineTuningJobFactory(agent=qa_agent)
    cost_record(agent=qa_agent, operation="fine_tuning", amount_usd=Decimal("4.50"), idempotency_key="ft-1", source_object=succeeded)
    as_of = timezone.now()
    cost_record(agent=qa_agent, operation="fine_tuning", amount_usd=Decimal("1"), idempotency_key="ft-1b", source_object=succeeded)
    lines = {line.job: line for line in cost_report_data(as_of=as_of).fine_tuning_jobs}
    assert set(lines) == {"ftjob-1", f"#{not_created.pk}"}
    assert (lines["ftjob-1"].agent, lines["ftjob-1"].model, lines["ftjob-1"].status, lines["ftjob-1"].cost) == (
        "qa_agent", succeeded.fine_tuned_model, "SUCCESS", Decimal("4.50"))
    assert (lines[f"#{not_created.pk}"].model, lines[f"#{not_created.pk}"].cost) == ("open-mistral-7b", Decimal(0))
    markdown = reports.render_markdown(cost_report_data())
    assert f"| ftjob-1 | qa_agent | {succeeded.fine_tuned_model} | SUCCESS |" in markdown and "| $5.50 |" in markdown


def test_report_csv_writes_negative_amounts_and_tokens_as_numbers():
    # A day's row can be negative (a reversal whose charge the report's window left out, a credit):
    # the formula guard must not turn "-0.01" into the text "'-0.01", which no spreadsheet sums.
    as_of = timezone.now()
    rows = [SpendRow(day=as_of.date(), agent="qa_agent", operation="inference", model="=1+1", entries=1, tokens=-120,
                     amount=Decimal("-0.01"))]
    written = list(csv.reader(io.StringIO(reports.render_csv(ReportData(as_of=as_of, rows=rows)))))
    assert written[1][3:] == ["'=1+1", "1", "-120", "-0.01"]
    assert written[2] == ["TOTAL", "", "", "", "1", "-120", "-0.01"]


@pytest.mark.django_db
def test_a_tiny_charge_does_not_fail_the_daily_report(qa_agent, default_budget, alert_channels, mailoutbox):
    """Money review: the budget's projection overflowed on one $0.00001 charge and the daily report
    ended `failed`."""
    from costs.services import cost_report_daily

    cost_record(agent=qa_agent, operation="inference", amount_usd=Decimal("0.00001"), idempotency_key="tiny")
    report = cost_report_daily()
    assert report.status == CostReport.Status.SUCCEEDED, report.error
    assert "| not in sight (more than 100 years at the current burn rate) |" in report.markdown
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_a_budgets_percent_in_the_json_report_is_rounded_down_as_everywhere(qa_agent, default_budget):
    """Money review: $7.4985 of $30 (24.995 %) read 25.0 in the JSON report, beside no threshold crossed."""
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("7.4985"), idempotency_key="just-under")
    budget = reports.report_as_dict(cost_report_data())["budgets"][0]
    assert (budget["percent"], budget["thresholds_crossed"]) == (24.99, [])
    assert "| 24.9 % | none |" in reports.render_markdown(cost_report_data())


@pytest.mark.django_db
def test_the_daily_report_is_named_by_its_local_day(qa_agent, settings, monkeypatch, alert_channels, mailoutbox, admin_client):
    """Money review: with TIME_ZONE=Europe/Paris the report keyed daily:2027-04-01 (made at 00:05 Paris,
    22:05 UTC the day before) was titled "cost report 2027-03-31", with attachments
    genesis-costs-2027-03-31.*: named by its moment in UTC."""
    from costs.services import cost_report_daily

    settings.TIME_ZONE = "Europe/Paris"
    clock = Clock(monkeypatch)
    today = clock.now
    clock.at(2027, 3, 31, 12, 0)
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("1"), idempotency_key="march")
    clock.at(2027, 4, 1, 0, 5)
    report = cost_report_daily()
    assert report.schedule_key == "daily:2027-04-01" and report.status == CostReport.Status.SUCCEEDED
    assert report.markdown.startswith("# Genesis cost report — 2027-04-01 00:05 CEST\n")
    assert mailoutbox[0].subject == "[Genesis] cost report 2027-04-01: $1.00"
    assert [a[0] for a in mailoutbox[0].attachments] == ["genesis-costs-2027-04-01.md", "genesis-costs-2027-04-01.csv"]
    assert mailoutbox[0].body.startswith("Genesis cost report 2027-04-01: $1.00 over 1 entries.")
    clock.now = today  # the admin's session was opened today
    download = admin_client.get(f"/admin/costs/costreport/{report.pk}/download/csv/")
    assert download["Content-Disposition"] == f'attachment; filename="genesis-costs-2027-04-01-{report.pk}.csv"'
