"""Audits through a real Celery worker process (prefork pool, the Redis broker, the test database):
an upload's audit reaches succeeded with progress 1.0 and its report stored, and scrubbed and
rebalanced copies are written and audited by the worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from django.core.files.storage import default_storage

from audits import services
from audits.models import AuditRun, AuditStatus, Dataset, DatasetStatus
from audits.pii import PII_TYPES
from audits.tasks import AUDIT_PROCESSES, audit_processes, derive_dataset, run_audit
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines
from tests.audits.test_models_services import mixed_lines

T = TypeVar("T")
WAIT_SECONDS = 60.0


@pytest.fixture
def dataset_files() -> Iterator[None]:
    """The worker is another process with its own settings, so both use the configured MEDIA_ROOT;
    the files these tests store there are removed afterwards."""
    yield
    for name in Dataset.objects.values_list("file", flat=True):
        default_storage.delete(name)


def wait_for(load: Callable[[], T], done: Callable[[T], bool], *, what: str) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = load()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not finish within {WAIT_SECONDS:.0f} s; last seen: {value!r}")


def finished_audit(dataset: Dataset) -> AuditRun:
    """Wait until the dataset is written (or failed) and its latest audit has finished."""
    fresh = wait_for(
        lambda: Dataset.objects.select_related("latest_audit").get(pk=dataset.pk),
        lambda d: d.status == DatasetStatus.FAILED or (d.latest_audit is not None and not d.latest_audit.is_active),
        what=f"dataset #{dataset.pk} and its audit",
    )
    assert fresh.status == DatasetStatus.READY, fresh.error
    return fresh.latest_audit


def upload(path: Path) -> Dataset:
    with open(path, "rb") as stream:
        return services.dataset_upload(content=stream, original_name=path.name, via="worker test")


@pytest.mark.worker
def test_a_real_worker_audits_scrubs_and_rebalances(celery_worker, dataset_files, tmp_path):
    # Over 8 MB, so the core would use two processes where it may: the prefork child may not, and
    # says so by using one without a note.
    planted = [chat_line(sentence_with(value)) for values in PLANTED.values() for value in values]
    filler = [chat_line(f"Question number {i} about the weather in town {i % 97}?", f"Answer {i}: sunny.") for i in range(80_000)]
    big = write_lines(tmp_path / "big.jsonl", planted + filler)
    assert big.stat().st_size > 8 * 1024 * 1024

    run = finished_audit(upload(big))
    assert (run.status, run.progress, run.error) == (AuditStatus.SUCCEEDED, 1.0, "")
    assert run.report["lines"] == run.lines == len(planted) + len(filler)
    assert run.report["pii"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    assert (run.report["workers"], run.report["notes"]) == (1, [])
    assert run.attempts == 1 and run.started_at <= run.finished_at

    small = upload(write_lines(tmp_path / "pii.jsonl", planted))
    assert finished_audit(small).pii_total == len(planted)
    scrubbed = services.dataset_scrub(dataset=small, mode="pseudonym")
    scrub_audit = finished_audit(scrubbed)
    scrubbed.refresh_from_db()
    assert scrubbed.status == DatasetStatus.READY and scrubbed.line_count == small.line_count
    assert (scrub_audit.status, scrub_audit.pii_total, scrub_audit.valid) == (AuditStatus.SUCCEEDED, 0, len(planted))

    mixed = upload(write_lines(tmp_path / "mix.jsonl", mixed_lines(easy=20, medium=12, hard=6)))
    finished_audit(mixed)
    rebalanced = services.dataset_rebalance(dataset=mixed, mix="30,45,25", target_size=20)  # 6 · 9 · 5: all at hand
    rebalance_audit = finished_audit(rebalanced)
    rebalanced.refresh_from_db()
    assert rebalanced.achieved_mix == rebalance_audit.report["difficulty"] == {"easy": 0.3, "medium": 0.45, "hard": 0.25}


@pytest.mark.django_db
def test_tasks_for_rows_that_are_gone_finish_quietly():
    assert run_audit(987654) == "gone"
    assert derive_dataset(987654) == "gone"


def test_an_ordinary_process_audits_with_two_processes_and_a_pool_child_with_one():
    from billiard.pool import Pool

    assert audit_processes() == AUDIT_PROCESSES == 2
    with Pool(1) as pool:
        assert pool.apply(audit_processes) == 1
