"""genesis_jobs_stalled{kind} and genesis_jobs_queued_seconds{kind} at /metrics, from real rows: an
audit run, a dataset copy (scrub / rebalance) or a WaltzRL build is stalled exactly when its sweep
would send it again — queued past the sweep's resend time, or running a minute after it started with
no worker holding its lock (genesis/locks.py) — so the gauge and the sweep cannot disagree. Chaos
review: an audit whose worker died showed "running" for 30 minutes and nothing said so."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audits import selectors as audit_selectors
from audits import services as audit_services
from audits.models import AuditRun, AuditStatus, Dataset
from genesis.locks import WORKER_GONE_AFTER_SECONDS
from genesis.metrics import exposition
from models_app.registry.models import Agent
from safety import selectors as safety_selectors
from safety.models import WaltzBuild
from safety.services import waltz_build_create, waltz_builds_resend_stranded
from tests.audits.samples import chat_line, write_lines

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a live worker's hold is a PostgreSQL advisory lock"),
]

KINDS = ("audit", "dataset_copy", "waltz_build")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def gauge(name: str) -> dict[str, float]:
    return {sample.labels["kind"]: sample.value for family in text_string_to_metric_families(exposition().decode())
            for sample in family.samples if sample.name == name}


@contextmanager
def live_worker_on(namespace: int, pk: int) -> Iterator[None]:
    """Another connection holding the row's advisory lock, as a live worker does."""
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
                            autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (namespace, pk))
        yield
    finally:
        other.close()


def dataset(tmp_path: Path, name: str) -> Dataset:
    path = write_lines(tmp_path / f"{name}.jsonl", [chat_line(name)])
    with open(path, "rb") as stream:
        return audit_services.dataset_upload(content=stream, original_name=path.name)


def test_nothing_stalled_reads_zero_for_every_kind_and_nothing_queued_has_no_age() -> None:
    assert gauge("genesis_jobs_stalled") == dict.fromkeys(KINDS, 0.0)
    assert gauge("genesis_jobs_queued_seconds") == {}


def test_the_gauge_counts_what_each_sweep_sends_again(tmp_path, seeded_demo, django_capture_on_commit_callbacks) -> None:
    now = timezone.now()
    past_resend = now - timedelta(seconds=audit_selectors.STRANDED_AFTER_SECONDS + 60)
    before_resend = now - timedelta(seconds=audit_selectors.STRANDED_AFTER_SECONDS - 120)
    worker_gone = now - timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 30)
    just_started = now - timedelta(seconds=5)

    # Audit runs: lost (queued past the resend time), waiting (queued, not yet), dead (running, lock
    # free), held (running, a live worker on it), starting (running for 5 s), done.
    runs = {name: dataset(tmp_path, name).latest_audit_id for name in ("lost", "waiting", "dead", "held", "starting", "done")}
    AuditRun.objects.filter(pk=runs["lost"]).update(created_at=past_resend)
    AuditRun.objects.filter(pk=runs["waiting"]).update(created_at=before_resend)
    AuditRun.objects.filter(pk__in=[runs["dead"], runs["held"]]).update(status=AuditStatus.RUNNING, started_at=worker_gone)
    AuditRun.objects.filter(pk=runs["starting"]).update(status=AuditStatus.RUNNING, started_at=just_started)
    audit_services.audit_run_execute(run_id=runs["done"])
    AuditRun.objects.filter(pk=runs["done"]).update(created_at=past_resend)
    # Dataset copies: lost (pending, never started, past the resend time), dead (started, lock free),
    # held (started, a live worker on it), fresh (just asked for).
    source = dataset(tmp_path, "source")
    copies = {name: audit_services.dataset_scrub(dataset=source).pk for name in ("lost", "dead", "held", "fresh")}
    Dataset.objects.filter(pk=copies["lost"]).update(created_at=past_resend)
    Dataset.objects.filter(pk__in=[copies["dead"], copies["held"]]).update(started_at=worker_gone)
    # WaltzRL builds (resent after 5 minutes, not 10): lost, waiting, dead, held.
    agent = Agent.objects.get(slug="qa_agent")
    builds = {name: waltz_build_create(agent=agent, target=30, seed=seed, enqueue=False).pk
              for seed, name in enumerate(("lost", "waiting", "dead", "held"))}
    build_resend = safety_selectors.STRANDED_AFTER_SECONDS
    WaltzBuild.objects.filter(pk=builds["lost"]).update(created_at=now - timedelta(seconds=build_resend + 60))
    WaltzBuild.objects.filter(pk=builds["waiting"]).update(created_at=now - timedelta(seconds=build_resend - 60))
    WaltzBuild.objects.filter(pk__in=[builds["dead"], builds["held"]]).update(
        status="running", started_at=worker_gone, created_at=now - timedelta(hours=1))

    with (live_worker_on(audit_selectors.LOCK_NAMESPACE_RUN, runs["held"]),
          live_worker_on(audit_selectors.LOCK_NAMESPACE_DATASET, copies["held"]),
          live_worker_on(safety_selectors.LOCK_NAMESPACE, builds["held"])):
        stalled = gauge("genesis_jobs_stalled")
        queued = gauge("genesis_jobs_queued_seconds")
        with django_capture_on_commit_callbacks() as sent:
            swept = audit_services.audits_sweep_stranded()
            resent_builds = waltz_builds_resend_stranded()

    assert stalled == {"audit": 2, "dataset_copy": 2, "waltz_build": 2}
    # One rule: the sweeps send again exactly the jobs the gauge counts.
    assert swept == {"audit_runs": 2, "datasets": 2} and sorted(resent_builds) == sorted([builds["lost"], builds["dead"]])
    assert sorted(callback.args[:2] for callback in sent) == sorted([
        ("audits.run_audit", runs["lost"]), ("audits.run_audit", runs["dead"]),
        ("audits.derive_dataset", copies["lost"]), ("audits.derive_dataset", copies["dead"]),
        ("safety.run_waltz_build", builds["lost"]), ("safety.run_waltz_build", builds["dead"]),
    ])
    # The oldest job still waiting to be started, of each kind (a finished or started one is not waiting).
    assert set(queued) == set(KINDS)
    assert queued["audit"] == pytest.approx((timezone.now() - past_resend).total_seconds(), abs=30)
    assert queued["dataset_copy"] == pytest.approx((timezone.now() - past_resend).total_seconds(), abs=30)
    assert queued["waltz_build"] == pytest.approx(build_resend + 60, abs=30)


def test_a_taken_over_job_is_no_longer_stalled(tmp_path, seeded_demo) -> None:
    # The sweep's message reaches a worker: it takes the dead run over (running again, its lock held
    # while it works, a new start), and the gauge goes back to 0 without anyone touching it.
    run_id = dataset(tmp_path, "dead").latest_audit_id
    AuditRun.objects.filter(pk=run_id).update(
        status=AuditStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 30))
    assert gauge("genesis_jobs_stalled")["audit"] == 1
    run = audit_services.audit_run_execute(run_id=run_id)
    assert run.status == AuditStatus.SUCCEEDED
    assert gauge("genesis_jobs_stalled")["audit"] == 0
