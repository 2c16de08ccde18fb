"""The job-state helper (genesis/jobs.py) and the transition tables of the job rows: the moves on
unsaved rows (no database), then the locked finish path on real rows."""

from __future__ import annotations

import pytest

from audits.models import AUDIT_TRANSITIONS, DATASET_TRANSITIONS, AuditRun, AuditStatus, DatasetStatus
from costs.models import REPORT_TRANSITIONS, CostReport
from genesis.errors import Conflict
from genesis.jobs import advance, advance_locked, check_move
from models_app.benchmarks.models import FINISHED_RUN_STATUSES, RUN_TRANSITIONS, BenchmarkRun, BenchmarkRunStatus
from models_app.finetuning import rules
from models_app.finetuning.models import FINE_TUNING_TRANSITIONS, FineTuningJob, FineTuningStatus
from safety.models import BUILD_TRANSITIONS, BuildStatus

TABLES = {
    "benchmark run": (RUN_TRANSITIONS, BenchmarkRunStatus.values),
    "audit run": (AUDIT_TRANSITIONS, AuditStatus.values),
    "dataset": (DATASET_TRANSITIONS, DatasetStatus.values),
    "waltz build": (BUILD_TRANSITIONS, BuildStatus.values),
    "cost report": (REPORT_TRANSITIONS, CostReport.Status.values),
    "fine-tuning job": (FINE_TUNING_TRANSITIONS, FineTuningStatus.values),
}


def test_advance_moves_an_allowed_step_without_saving() -> None:
    run = BenchmarkRun(pk=7, status=BenchmarkRunStatus.QUEUED)
    advance(run, BenchmarkRunStatus.RUNNING, transitions=RUN_TRANSITIONS)
    assert run.status == BenchmarkRunStatus.RUNNING


def test_advance_refuses_naming_the_row_its_state_and_the_allowed_moves() -> None:
    run = AuditRun(pk=12, status=AuditStatus.QUEUED)
    with pytest.raises(Conflict) as refused:
        advance(run, AuditStatus.SUCCEEDED, transitions=AUDIT_TRANSITIONS)
    assert refused.value.message == "audit run #12 is queued and cannot become succeeded; allowed next: failed, running"
    assert refused.value.code == "conflict"
    assert run.status == AuditStatus.QUEUED  # unchanged


def test_a_finished_row_has_no_move_left() -> None:
    job = FineTuningJob(pk=3, status=rules.SUCCESS)
    with pytest.raises(Conflict, match=r"fine-tuning job #3 is SUCCESS and cannot become RUNNING; allowed next: REFUSED, SUCCESS"):
        advance(job, rules.RUNNING, transitions=FINE_TUNING_TRANSITIONS)
    with pytest.raises(Conflict, match=r"cost report #4 is succeeded and cannot become running; allowed next: none \(finished\)"):
        check_move(REPORT_TRANSITIONS, name="cost report #4", current="succeeded", to="running")


@pytest.mark.parametrize("kind", TABLES)
def test_every_table_covers_exactly_its_choices(kind: str) -> None:
    transitions, statuses = TABLES[kind]
    assert set(transitions) == set(statuses)
    for status, targets in transitions.items():
        assert targets <= set(statuses), f"{kind}: {status} may become an unknown status"


def test_finished_benchmark_statuses_are_the_ones_without_a_move() -> None:
    assert {status for status, targets in RUN_TRANSITIONS.items() if not targets} == set(FINISHED_RUN_STATUSES)


def test_a_fine_tuning_job_mirrors_any_provider_status_until_it_is_terminal() -> None:
    for status in rules.MOVING_STATUSES | {rules.NOT_CREATED, rules.REFUSED}:
        assert set(rules.PROVIDER_STATUSES) <= FINE_TUNING_TRANSITIONS[status]
    for status in rules.TERMINAL_STATUSES:
        assert FINE_TUNING_TRANSITIONS[status] == {status, rules.REFUSED}


@pytest.mark.django_db
def test_advance_locked_saves_the_move_with_its_fields() -> None:
    report = CostReport.objects.create()
    moved = advance_locked(CostReport, report.pk, CostReport.Status.RUNNING, transitions=REPORT_TRANSITIONS, error="")
    report.refresh_from_db()
    assert moved.status == report.status == CostReport.Status.RUNNING


@pytest.mark.django_db
def test_advance_locked_refuses_to_overwrite_a_finished_row() -> None:
    # The finish path of a worker whose row something else already ended (it used to be a blind UPDATE).
    report = CostReport.objects.create(status=CostReport.Status.SUCCEEDED)
    with pytest.raises(Conflict, match=rf"cost report #{report.pk} is succeeded and cannot become failed"):
        advance_locked(CostReport, report.pk, CostReport.Status.FAILED, transitions=REPORT_TRANSITIONS, error="late")
    report.refresh_from_db()
    assert (report.status, report.error) == (CostReport.Status.SUCCEEDED, "")
