"""The audits services on the real database: datasets streamed into MEDIA_ROOT with their sha256 and
line count, audit runs advanced by the service the task calls (idempotent, locked, failing with a
reason), reports that hold no raw PII, scrubbed and rebalanced copies whose own audits agree with
what was asked, and the permission checks."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from faker import Faker

from audits import selectors, services
from audits.difficulty import LEVELS
from audits.models import AuditRun, AuditStatus, Dataset, DatasetOrigin, DatasetStatus
from audits.pii import PII_TYPES
from audits.report import audit_file
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


def planted_lines() -> list[str]:
    """Every PII type in every form the cores know, one value a line, plus a duplicated pair."""
    lines = [chat_line(sentence_with(value)) for values in PLANTED.values() for value in values]
    return lines + [chat_line("How are you today?", "Fine, thanks.")] * 2


def mixed_lines(*, easy: int, medium: int, hard: int, seed: int = 11) -> list[str]:
    """Distinct examples of each difficulty level (checked against the core in the tests that use them)."""
    fake = Faker()
    fake.seed_instance(seed)
    lines = [chat_line(f"What is {fake.word()}?", fake.sentence(nb_words=6)) for _ in range(easy)]
    lines += [
        chat_line(f"Explain why {fake.sentence(nb_words=8)} Compare it step by step.",
                  "Because " + fake.paragraph(nb_sentences=6) + " Therefore " + fake.paragraph(nb_sentences=4))
        for _ in range(medium)
    ]
    lines += [
        chat_line(
            f"Write a function that must return {fake.sentence(nb_words=8)} You must use at most 3 loops and never "
            "sort; answer in JSON format.",
            "First, because " + fake.paragraph(nb_sentences=5) + "\n```python\ndef solve(xs):\n    return [x for x in xs if x]\n```\n"
            "Therefore " + " ".join(fake.paragraph(nb_sentences=8) for _ in range(4)) + " We compare the trade-off and prove it.",
        )
        for _ in range(hard)
    ]
    return lines


def upload(path: Path, **kwargs) -> Dataset:
    with open(path, "rb") as stream:
        return services.dataset_upload(content=stream, original_name=path.name, **kwargs)


def run_queued_audit(dataset: Dataset) -> AuditRun:
    dataset.refresh_from_db()
    return services.audit_run_execute(run_id=dataset.latest_audit_id)


def auditor(*codenames: str):
    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="audits", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # fresh: permissions are cached per instance


# --- datasets ----------------------------------------------------------------------------------------


def test_upload_streams_the_file_with_its_sha256_size_and_line_count(tmp_path, media_root, django_capture_on_commit_callbacks):
    source = write_lines(tmp_path / "train.jsonl", mixed_lines(easy=3, medium=1, hard=1))
    agent, user = AgentFactory(slug="qa_agent"), auditor("add_dataset", "add_auditrun")
    with django_capture_on_commit_callbacks() as callbacks:
        dataset = upload(source, purpose="validation", agent=agent, actor=user, via="test")
    data = source.read_bytes()
    assert (dataset.size_bytes, dataset.line_count, dataset.sha256) == (len(data), 5, hashlib.sha256(data).hexdigest())
    assert (dataset.agent, dataset.purpose, dataset.origin, dataset.status, dataset.uploaded_by, dataset.via) == (
        agent, "validation", DatasetOrigin.UPLOAD, DatasetStatus.READY, user, "test")
    stored = media_root / dataset.file.name
    assert dataset.file.name.startswith("datasets/") and dataset.file.name.endswith("-train.jsonl")
    assert stored.read_bytes() == data
    assert not list(media_root.rglob("*.partial"))
    run = dataset.latest_audit
    assert (run.status, run.requested_by, run.progress, run.report) == (AuditStatus.QUEUED, user, 0.0, None)
    assert len(callbacks) == 1  # the audit task, sent only once the rows are committed


def test_line_count_matches_the_cores_lines_for_a_missing_final_newline_and_an_empty_file(tmp_path):
    unterminated = write_lines(tmp_path / "a.jsonl", [chat_line("a"), chat_line("b")], final_newline=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert upload(unterminated, audit=False).line_count == audit_file(unterminated).lines == 2
    assert upload(empty, audit=False).line_count == audit_file(empty).lines == 0


def test_upload_accepts_a_django_file_in_chunks_larger_than_one_chunk(tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = (chat_line("x" * 1000) + "\n").encode() * 3000  # ~3 MB: several 1 MB chunks
    dataset = services.dataset_upload(content=SimpleUploadedFile("big.jsonl", body), original_name="big.jsonl", audit=False)
    assert (dataset.size_bytes, dataset.line_count, dataset.sha256) == (len(body), 3000, hashlib.sha256(body).hexdigest())


def test_upload_refuses_without_permission_and_leaves_no_file(tmp_path, media_root):
    source = write_lines(tmp_path / "t.jsonl", [chat_line("hi")])
    with pytest.raises(PermissionDenied, match="may not upload datasets: it needs the permission 'audits.add_dataset'"):
        upload(source, actor=auditor())
    with pytest.raises(PermissionDenied, match="audits.add_auditrun"):
        upload(source, actor=auditor("add_dataset"))  # may store, may not start the audit it asks for
    assert upload(source, actor=auditor("add_dataset"), audit=False).latest_audit is None
    with pytest.raises(InvalidInput, match="purpose: 'exam' is not one of training, validation, benchmark"):
        upload(source, purpose="exam")
    assert Dataset.objects.count() == 1
    assert len([p for p in media_root.rglob("*") if p.is_file()]) == 1


def test_a_failed_record_removes_the_copy(tmp_path, media_root):
    source = write_lines(tmp_path / "t.jsonl", [chat_line("hi")])
    with pytest.raises(ValueError, match="unsaved related object"):  # recording refused after the copy was made
        upload(source, agent=AgentFactory.build(slug="nobody"))
    assert not [p for p in media_root.rglob("*") if p.is_file()]


# --- audit runs -----------------------------------------------------------------------------------------


def test_audit_run_stores_the_report_and_summary_and_no_raw_pii(tmp_path):
    dataset = upload(write_lines(tmp_path / "pii.jsonl", planted_lines()))
    run = run_queued_audit(dataset)
    assert (run.status, run.progress, run.attempts, run.error) == (AuditStatus.SUCCEEDED, 1.0, 1, "")
    assert run.started_at <= run.finished_at
    planted = sum(len(values) for values in PLANTED.values())
    assert (run.lines, run.valid, run.format_error_total) == (planted + 2, planted + 2, 0)
    assert run.pii_total == planted and run.report["pii"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    assert (run.duplicates_exact, run.duplicates_near, run.has_findings) == (1, 0, True)
    assert run.easy + run.medium + run.hard == pytest.approx(1.0, abs=1e-3)
    assert {"lines", "valid", "format_errors", "pii", "duplicates", "difficulty"} <= set(run.report)
    assert run.report["file"] == {"name": dataset.file.name, "bytes": dataset.size_bytes}  # no server path
    assert run.report["pii_samples"]["email"][0] == {"line": 1, "masked": "j***@e***.com"}
    stored = AuditRun.objects.get(pk=run.pk)
    with connection.cursor() as cursor:  # the JSON as Postgres holds it, not as Python rebuilt it
        column = "report::text" if connection.vendor == "postgresql" else "report"  # SQLite stores JSON as text
        cursor.execute(f"SELECT {column} FROM audits_auditrun WHERE id = %s", [run.pk])
        raw_json = cursor.fetchone()[0]
    for values in PLANTED.values():
        for value in values:
            for text in (raw_json, json.dumps(stored.report, ensure_ascii=False)):
                assert value not in text and json.dumps(value)[1:-1] not in text, value


def test_running_a_finished_audit_again_changes_nothing(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    first = run_queued_audit(dataset)
    again = services.audit_run_execute(run_id=first.pk)
    assert (again.status, again.attempts, again.finished_at, again.report) == (
        AuditStatus.SUCCEEDED, 1, first.finished_at, first.report)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a live worker's hold is a PostgreSQL advisory lock")
def test_a_run_another_live_worker_holds_is_left_alone(tmp_path):
    """The advisory lock a live worker holds (here: another database session) makes a second
    delivery of the same message leave; once it is released the run is done."""
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    run_id = dataset.latest_audit_id
    settings_dict = connection.settings_dict
    other = psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432, user=settings_dict["USER"],
        password=settings_dict["PASSWORD"] or None, dbname=settings_dict["NAME"], autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (selectors.LOCK_NAMESPACE_RUN, run_id))
        skipped = services.audit_run_execute(run_id=run_id)
        assert (skipped.status, skipped.attempts) == (AuditStatus.QUEUED, 0)
        other.execute("SELECT pg_advisory_unlock(%s, %s)", (selectors.LOCK_NAMESPACE_RUN, run_id))
    finally:
        other.close()
    assert services.audit_run_execute(run_id=run_id).status == AuditStatus.SUCCEEDED


def test_a_run_whose_worker_died_is_taken_over(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    AuditRun.objects.filter(pk=dataset.latest_audit_id).update(status=AuditStatus.RUNNING, attempts=1, progress=0.4)
    run = services.audit_run_execute(run_id=dataset.latest_audit_id)
    assert (run.status, run.attempts, run.progress) == (AuditStatus.SUCCEEDED, 2, 1.0)


def test_an_audit_of_a_vanished_file_fails_with_a_reason(tmp_path, media_root):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    (media_root / dataset.file.name).unlink()
    run = run_queued_audit(dataset)
    assert run.status == AuditStatus.FAILED and run.report is None and run.finished_at is not None
    assert f"the file of dataset #{dataset.pk} ({dataset.file.name}) cannot be read" in run.error
    assert "MEDIA_ROOT" in run.error
    assert services.audit_run_execute(run_id=run.pk).status == AuditStatus.FAILED  # failed stays failed
    with pytest.raises(NotFound, match="audit run #987654 does not exist"):
        services.audit_run_execute(run_id=987654)


def test_audit_again_is_refused_while_one_is_active_and_for_a_pending_dataset(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    with pytest.raises(Conflict, match=r"audit #\d+ of dataset #\d+ is still queued \(0%\); wait for it"):
        services.audit_start(dataset=dataset)
    run_queued_audit(dataset)
    again = services.audit_start(dataset=dataset, near_threshold=0.6, find_near_duplicates=False, actor=auditor("add_auditrun"))
    dataset.refresh_from_db()
    assert dataset.latest_audit == again and (again.near_threshold, again.find_near_duplicates) == (0.6, False)
    with pytest.raises(PermissionDenied, match="audits.add_auditrun"):
        services.audit_start(dataset=dataset, actor=auditor("add_dataset"))
    with pytest.raises(InvalidInput, match=r"near_threshold: near-duplicate threshold must be between 0.3 and 1, got 1.5"):
        services.audit_start(dataset=dataset, near_threshold=1.5)
    scrubbed = services.dataset_scrub(dataset=dataset)
    with pytest.raises(Conflict, match="is being written; its audit starts by itself once it is written"):
        services.audit_start(dataset=scrubbed)


def test_progress_is_written_in_steps_and_never_reaches_one_before_the_end(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    run_id = dataset.latest_audit_id
    writer = services._ProgressWriter(model=AuditRun, pk=run_id)
    writer.written_at = -1e9  # as if the last write were long ago: only the step throttles here
    seen = []
    for done in range(0, 1001, 5):  # 0.5 % at a time
        writer(done, 1000)
        seen.append(AuditRun.objects.get(pk=run_id).progress)
        writer.written_at = -1e9
    distinct = sorted(set(seen))
    assert distinct[-1] == 0.99  # the end of the range; 1.0 only when the run succeeds
    assert all(b - a >= services.PROGRESS_STEP - 1e-9 for a, b in zip(distinct[1:], distinct[2:]))
    assert len(distinct) <= 52


def test_record_keeps_a_file_audited_outside_the_workers(tmp_path):
    source = write_lines(tmp_path / "rec.jsonl", planted_lines())
    report = audit_file(source)
    agent = AgentFactory(slug="legal_agent")
    run = services.dataset_record_audit(path=source, report=report, purpose="benchmark", agent=agent)
    assert (run.status, run.progress, run.pii_total, run.lines) == (AuditStatus.SUCCEEDED, 1.0, sum(report.pii_counts.values()), report.lines)
    dataset = run.dataset
    dataset.refresh_from_db()
    assert (dataset.latest_audit, dataset.agent, dataset.purpose, dataset.sha256) == (
        run, agent, "benchmark", hashlib.sha256(source.read_bytes()).hexdigest())
    source.write_text(source.read_text() + chat_line("one more") + "\n")
    with pytest.raises(Conflict, match="changed while it was audited"):
        services.dataset_record_audit(path=source, report=report)
    assert Dataset.objects.count() == 1


# --- scrub and rebalance --------------------------------------------------------------------------------


def test_scrub_with_placeholders_makes_a_copy_whose_audit_finds_no_pii(tmp_path, media_root):
    parent = upload(write_lines(tmp_path / "pii.jsonl", planted_lines()), agent=AgentFactory(slug="qa_agent"))
    user = auditor("add_dataset")
    scrubbed = services.dataset_scrub(dataset=parent, actor=user, via="test")
    assert (scrubbed.status, scrubbed.origin, scrubbed.parent, scrubbed.agent, scrubbed.uploaded_by, scrubbed.progress) == (
        DatasetStatus.PENDING, DatasetOrigin.SCRUB, parent, parent.agent, user, 0.0)
    assert scrubbed.original_name == "pii.scrubbed-placeholders.jsonl"
    assert scrubbed.parameters == {"mode": "placeholder", "types": list(PII_TYPES)}

    written = services.dataset_derive_execute(dataset_id=scrubbed.pk)
    data = (media_root / written.file.name).read_bytes()
    assert (written.status, written.progress, written.size_bytes, written.sha256) == (
        DatasetStatus.READY, 1.0, len(data), hashlib.sha256(data).hexdigest())
    assert written.line_count == parent.line_count
    assert written.result["replaced"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    assert b"[EMAIL]" in data and b"john.doe@example.com" not in data
    run = run_queued_audit(written)
    assert run.status == AuditStatus.SUCCEEDED and run.requested_by == user
    assert run.report["pii"] == dict.fromkeys(PII_TYPES, 0) and run.pii_total == 0
    assert run.valid == run.lines  # still valid JSONL
    again = services.dataset_derive_execute(dataset_id=scrubbed.pk)  # a redelivered message
    assert again.sha256 == written.sha256 and again.audit_runs.count() == 1


def test_scrub_with_pseudonyms_of_some_types_leaves_the_others(tmp_path, media_root):
    lines = [chat_line("Mail john.doe@example.com or call (415) 555-2671."), chat_line("Again: JOHN.DOE@example.com, IP 8.8.8.8")]
    parent = upload(write_lines(tmp_path / "p.jsonl", lines))
    scrubbed = services.dataset_derive_execute(
        dataset_id=services.dataset_scrub(dataset=parent, mode="pseudonym", types=["email", "phone"]).pk)
    text = (media_root / scrubbed.file.name).read_text()
    assert text.count("<EMAIL_1>") == 2 and "<PHONE_1>" in text and "8.8.8.8" in text
    assert scrubbed.original_name == "p.scrubbed-pseudonyms.jsonl"
    run = run_queued_audit(scrubbed)
    assert (run.report["pii"]["email"], run.report["pii"]["phone"], run.report["pii"]["ip_address"]) == (0, 0, 1)
    with pytest.raises(InvalidInput, match="types: unknown passport; known: email, phone"):
        services.dataset_scrub(dataset=parent, types=["passport"])
    with pytest.raises(InvalidInput, match="mode: 'blur' is not one of placeholder, pseudonym"):
        services.dataset_scrub(dataset=parent, mode="blur")
    with pytest.raises(PermissionDenied, match="may not scrub datasets"):
        services.dataset_scrub(dataset=parent, actor=auditor("add_auditrun"))


def test_rebalance_writes_the_reported_mix_and_the_shortfall(tmp_path, media_root):
    lines = mixed_lines(easy=20, medium=12, hard=6)
    lines.append(lines[0])  # a duplicate, which the copy drops
    lines.append('{"messages": []}')  # an invalid line, dropped too
    source = write_lines(tmp_path / "mix.jsonl", lines)
    assert audit_file(source).difficulty_counts == {"easy": 21, "medium": 12, "hard": 6}  # the levels the test relies on
    parent = upload(source)
    pending = services.dataset_rebalance(dataset=parent, mix="30,45,25", seed=3, target_size=20)
    assert pending.original_name == "mix.rebalanced-30-45-25.jsonl"
    assert pending.parameters == {"mix": {"easy": 0.3, "medium": 0.45, "hard": 0.25}, "seed": 3, "target_size": 20, "near_threshold": 0.8}
    rebalanced = services.dataset_derive_execute(dataset_id=pending.pk)
    assert rebalanced.status == DatasetStatus.READY
    # 20 wanted: 6 easy, 9 medium, 5 hard — every level has them.
    assert {level: rebalanced.result["levels"][level]["taken"] for level in LEVELS} == {"easy": 6, "medium": 9, "hard": 5}
    assert rebalanced.result["dropped_duplicates"] == 1 and rebalanced.result["dropped_invalid"] == 1
    assert rebalanced.achieved_mix == {"easy": 0.3, "medium": 0.45, "hard": 0.25}
    assert rebalanced.shortfall == ""
    assert rebalanced.line_count == 20
    run = run_queued_audit(rebalanced)
    assert run.report["difficulty"] == rebalanced.achieved_mix  # the copy's own audit agrees
    assert (run.format_error_total, run.lines, run.has_findings) == (0, 20, False)

    # 80 % hard with 6 hard examples: the copy shrinks to 7 (1 · 1 · 5) rather than repeat or skew.
    short = services.dataset_derive_execute(dataset_id=services.dataset_rebalance(dataset=parent, mix="10,10,80").pk)
    assert short.line_count == 7 and short.result["levels"]["hard"]["taken"] == 5
    assert short.shortfall.splitlines()[0] == "6 hard examples: 24 more needed (target 80% of 38)"
    assert short.shortfall.splitlines()[1].startswith("achievable: 7 examples at easy 14.3% · medium 14.3% · hard 71.4%")
    short_run = run_queued_audit(short)
    assert short_run.report["difficulty"] == short.achieved_mix and not short_run.has_findings


def test_rebalance_refuses_a_bad_mix_with_the_usage(tmp_path):
    parent = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    with pytest.raises(InvalidInput, match=r"mix: the mix needs three numbers for easy,medium,hard that add up to 100, e\.g\. 30,45,25; got '50,50'"):
        services.dataset_rebalance(dataset=parent, mix="50,50")
    with pytest.raises(InvalidInput, match="target_size: -1 is negative"):
        services.dataset_rebalance(dataset=parent, target_size=-1)
    assert Dataset.objects.count() == 1


def test_a_copy_whose_parent_file_vanished_fails_and_is_not_audited(tmp_path, media_root):
    parent = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    pending = services.dataset_scrub(dataset=parent)
    (media_root / parent.file.name).unlink()
    failed = services.dataset_derive_execute(dataset_id=pending.pk)
    assert failed.status == DatasetStatus.FAILED and "FileNotFoundError" in failed.error
    assert failed.latest_audit is None and not failed.audit_runs.exists()
    with pytest.raises(Conflict, match=f"dataset #{failed.pk} is failed; only a ready dataset can be scrubbed"):
        services.dataset_scrub(dataset=failed)


def test_a_derived_dataset_must_name_its_parent_and_an_upload_must_not(tmp_path):
    from django.db import IntegrityError, transaction

    parent = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]), audit=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        Dataset.objects.create(origin=DatasetOrigin.SCRUB, file="x", original_name="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Dataset.objects.create(origin=DatasetOrigin.UPLOAD, parent=parent, file="x", original_name="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditRun.objects.create(dataset=parent, status=AuditStatus.SUCCEEDED)  # succeeded needs a report


def test_upload_reads_a_plain_binary_stream(tmp_path):
    body = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    dataset = services.dataset_upload(content=io.BytesIO(body), original_name="../../etc/passwd.jsonl", audit=False)
    assert dataset.original_name == "passwd.jsonl" and ".." not in dataset.file.name
    assert dataset.sha256 == hashlib.sha256(body).hexdigest()
    with pytest.raises(InvalidInput, match="bytes"):
        services.dataset_upload(content=io.StringIO("text"), original_name="t.jsonl", audit=False)


def test_the_demo_seed_makes_one_audited_dataset_with_something_in_every_section(media_root):
    from django.core.management.base import OutputWrapper

    from audits.demo import DEMO_STORAGE_NAME, seed_audits

    AgentFactory(slug="support_agent")
    buffer = io.StringIO()
    out = OutputWrapper(buffer)  # what seed_demo hands each step
    seed_audits(out=out)
    seed_audits(out=out)
    dataset = Dataset.objects.select_related("latest_audit", "agent").get()
    run = dataset.latest_audit
    assert (dataset.agent.slug, dataset.file.name, dataset.via) == ("support_agent", DEMO_STORAGE_NAME, "seed_demo")
    assert run.status == AuditStatus.SUCCEEDED and run.pii_total >= 5 and run.format_error_total == 1
    assert run.duplicates_exact >= 1 and run.duplicates_near >= 1 and run.medium > 0 and run.hard > 0
    assert (media_root / DEMO_STORAGE_NAME).stat().st_size == dataset.size_bytes
    first, second = buffer.getvalue().splitlines()
    assert first.startswith(f"audits: demo dataset #{dataset.pk} (support_tickets_demo.jsonl) audited: {run.pii_total} PII")
    assert second == "audits: demo dataset already there"


def test_a_job_that_kills_its_worker_every_time_fails_with_a_reason_instead_of_looping(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    # As after three deliveries whose worker was killed mid-audit.
    AuditRun.objects.filter(pk=dataset.latest_audit_id).update(status=AuditStatus.RUNNING, attempts=services.MAX_ATTEMPTS)
    run = services.audit_run_execute(run_id=dataset.latest_audit_id)
    assert (run.status, run.attempts, run.report) == (AuditStatus.FAILED, 3, None)
    assert "a worker started this 3 times and never finished" in run.error and "out of memory" in run.error
    copy = services.dataset_scrub(dataset=dataset)
    Dataset.objects.filter(pk=copy.pk).update(attempts=services.MAX_ATTEMPTS)
    failed = services.dataset_derive_execute(dataset_id=copy.pk)
    assert failed.status == DatasetStatus.FAILED and "started this 3 times" in failed.error
    fresh = services.dataset_derive_execute(dataset_id=services.dataset_scrub(dataset=dataset).pk)
    assert (fresh.status, fresh.attempts) == (DatasetStatus.READY, 1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a live worker's hold is a PostgreSQL advisory lock")
def test_the_sweep_resends_only_stranded_work(tmp_path, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(seconds=selectors.STRANDED_AFTER_SECONDS + 5)
    long_ago = timezone.now() - timedelta(hours=2)
    lost = upload(write_lines(tmp_path / "a.jsonl", [chat_line("a")]))
    fresh = upload(write_lines(tmp_path / "b.jsonl", [chat_line("b")]))
    killed = upload(write_lines(tmp_path / "c.jsonl", [chat_line("c")]))
    held = upload(write_lines(tmp_path / "d.jsonl", [chat_line("d")]))
    AuditRun.objects.filter(pk=lost.latest_audit_id).update(created_at=old)
    AuditRun.objects.filter(pk__in=[killed.latest_audit_id, held.latest_audit_id]).update(
        status=AuditStatus.RUNNING, started_at=long_ago, created_at=long_ago)
    lost_copy = services.dataset_scrub(dataset=fresh)
    Dataset.objects.filter(pk=lost_copy.pk).update(created_at=old)
    services.dataset_scrub(dataset=killed)  # pending, but just made
    done = upload(write_lines(tmp_path / "e.jsonl", [chat_line("e")]))
    run_queued_audit(done)
    AuditRun.objects.filter(pk=done.latest_audit_id).update(created_at=old)

    settings_dict = connection.settings_dict
    other = psycopg.connect(host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432,
                            user=settings_dict["USER"], dbname=settings_dict["NAME"], autocommit=True)
    try:  # a live worker still holds `held`
        other.execute("SELECT pg_advisory_lock(%s, %s)", (selectors.LOCK_NAMESPACE_RUN, held.latest_audit_id))
        with django_capture_on_commit_callbacks() as callbacks:
            counts = services.audits_sweep_stranded()
    finally:
        other.close()
    assert counts == {"audit_runs": 2, "datasets": 1}  # lost + killed; the lost copy
    assert len(callbacks) == 3
    # fresh's own audit (just queued), held's (locked), done's (finished) and the new copy are left alone.


def _hold_lock(namespace: int, pk: int) -> psycopg.Connection:
    """Another connection holding a row's advisory lock: a live worker on it."""
    settings_dict = connection.settings_dict
    other = psycopg.connect(host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432,
                            user=settings_dict["USER"], dbname=settings_dict["NAME"], autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s, %s)", (namespace, pk))
    return other


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a live worker's hold is a PostgreSQL advisory lock")
def test_an_audit_or_copy_whose_worker_was_killed_is_sent_again_a_minute_after_it_started(tmp_path, django_capture_on_commit_callbacks):
    """Chaos review: an audit whose worker was SIGKILLed showed "running" for 32 minutes — the sweep
    waited out the task's hard time limit although the free lock already proved no worker held it."""
    from datetime import timedelta

    from django.utils import timezone

    from genesis.locks import WORKER_GONE_AFTER_SECONDS

    a_minute_ago = timezone.now() - timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 30)
    just_now = timezone.now() - timedelta(seconds=5)
    killed, held, starting = (upload(write_lines(tmp_path / f"{name}.jsonl", [chat_line(name)])) for name in "abc")
    run_ids = {"killed": killed.latest_audit_id, "held": held.latest_audit_id, "starting": starting.latest_audit_id}
    AuditRun.objects.filter(pk__in=[run_ids["killed"], run_ids["held"]]).update(status=AuditStatus.RUNNING, started_at=a_minute_ago)
    AuditRun.objects.filter(pk=run_ids["starting"]).update(status=AuditStatus.RUNNING, started_at=just_now)
    killed_copy, held_copy = services.dataset_scrub(dataset=killed), services.dataset_scrub(dataset=held)
    Dataset.objects.filter(pk__in=[killed_copy.pk, held_copy.pk]).update(started_at=a_minute_ago)

    locks = [_hold_lock(selectors.LOCK_NAMESPACE_RUN, run_ids["held"]), _hold_lock(selectors.LOCK_NAMESPACE_DATASET, held_copy.pk)]
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            counts = services.audits_sweep_stranded()
    finally:
        for other in locks:
            other.close()
    assert counts == {"audit_runs": 1, "datasets": 1}
    sent = sorted(callback.args[:2] for callback in callbacks)
    assert sent == sorted([("audits.run_audit", run_ids["killed"]), ("audits.derive_dataset", killed_copy.pk)])
    # The resend takes the killed run over and finishes it; the attempts cap still counts it.
    run = services.audit_run_execute(run_id=run_ids["killed"])
    assert (run.status, run.attempts) == (AuditStatus.SUCCEEDED, 1)


def test_off_postgresql_only_the_hard_time_limit_proves_a_running_job_dead(tmp_path, monkeypatch, settings):
    """Embedded SQLite has no lock to tell a live worker from a dead one (`worker_lock` always says
    free): a minute-old running job there may well have a live worker, and a second one would work
    under it."""
    from datetime import timedelta

    from django.utils import timezone

    from genesis.locks import running_without_worker

    live, dead = (upload(write_lines(tmp_path / f"{name}.jsonl", [chat_line(name)])) for name in "ab")
    now = timezone.now()
    AuditRun.objects.filter(pk=live.latest_audit_id).update(status=AuditStatus.RUNNING, started_at=now - timedelta(minutes=5))
    AuditRun.objects.filter(pk=dead.latest_audit_id).update(
        status=AuditStatus.RUNNING, started_at=now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 61))
    running = AuditRun.objects.filter(status=AuditStatus.RUNNING)
    monkeypatch.setattr(connection, "vendor", "sqlite")
    assert running_without_worker(running, selectors.LOCK_NAMESPACE_RUN) == [dead.latest_audit_id]


# --- review fixes ---------------------------------------------------------------------------------------


def test_an_unpaired_surrogate_fails_one_line_not_the_run_and_the_report_is_stored(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(chat_line("fine") + "\n" + '{"messages":[{"role":"user","content":"hi \\ud800 there"},{"role":"assistant","content":"ok"}]}\n')
    run = run_queued_audit(upload(path))
    assert run.status == AuditStatus.SUCCEEDED, run.error
    run.refresh_from_db()  # read back from Postgres jsonb, which refuses a lone surrogate
    assert run.report["format_errors"][0]["detail"].startswith("line 2: messages[0].content contains an unpaired UTF-16 surrogate")
    scrubbed = services.dataset_derive_execute(dataset_id=services.dataset_scrub(dataset=run.dataset).pk)
    rebalanced = services.dataset_derive_execute(dataset_id=services.dataset_rebalance(dataset=run.dataset).pk)
    assert (scrubbed.status, rebalanced.status) == (DatasetStatus.READY, DatasetStatus.READY), (scrubbed.error, rebalanced.error)


def test_an_upload_over_the_limit_is_refused_naming_it_and_leaves_no_file(tmp_path, media_root, settings):
    settings.AUDIT_MAX_UPLOAD_BYTES = 2048
    path = write_lines(tmp_path / "big.jsonl", [chat_line(f"question {i}") for i in range(100)])
    with pytest.raises(InvalidInput, match=r"larger than the upload limit of 2 KiB \(AUDIT_MAX_UPLOAD_BYTES\)"):
        upload(path)
    assert not Dataset.objects.exists()
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    settings.AUDIT_MAX_UPLOAD_BYTES = path.stat().st_size  # exactly at the limit is fine
    assert upload(path).size_bytes == path.stat().st_size


def test_an_api_key_is_checked_by_the_upload_service(tmp_path):
    from models_app.registry.services import ApiPrincipal

    qa, legal = AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")
    path = write_lines(tmp_path / "t.jsonl", [chat_line("hi")])
    key = ApiPrincipal(key_id=1, label="qa key", all_agents=False, agent_slugs=frozenset({"qa_agent"}))
    with pytest.raises(PermissionDenied, match="API key 'qa key' may not act for agent 'legal_agent'"):
        upload(path, agent=legal, principal=key)
    with pytest.raises(PermissionDenied, match="name the dataset's agent"):
        upload(path, principal=key)
    assert upload(path, agent=qa, principal=key).agent == qa


def test_the_threshold_is_checked_in_one_place_with_its_reason(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [chat_line("hi")])
    with pytest.raises(InvalidInput, match=r"near_threshold: near-duplicate threshold must be between 0.3 and 1, got 0.2"):
        upload(path, near_threshold=0.2)


def test_a_failed_progress_write_is_skipped_and_the_connection_stays_usable(tmp_path):
    dataset = upload(write_lines(tmp_path / "t.jsonl", [chat_line("hi")]))
    run_id = dataset.latest_audit_id
    # A range past 1.0 makes Postgres refuse the write (the progress check constraint): a real failure.
    writer = services._ProgressWriter(model=AuditRun, pk=run_id, start=0.0, end=2.0)
    writer(900, 1000)
    assert AuditRun.objects.get(pk=run_id).progress == 0.0  # skipped, and the next query works
    assert writer.written == 0.0
