"""The benchmark runs' sweep (beat, every minute): hands the chunks of dead workers to live ones, sends
again the chunk messages that were lost, posts results the ledger missed and finishes runs whose
worker died at the last step. The runner (runner.py) leaves all of it possible: a chunk is claimed by
one worker at a time under a lease, and scored pairs are skipped."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from models_app.benchmarks.ledger import post_costs_on_commit
from models_app.benchmarks.models import (
    BenchmarkChunk,
    BenchmarkChunkStatus,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunStatus,
)
from models_app.benchmarks.runner import CHUNK_STALLED_AFTER_SECONDS, QUEUED_CHUNK_RESEND_AFTER_SECONDS, worker_node
from models_app.benchmarks.services import benchmark_run_finish_if_complete, send_chunks_on_commit

logger = logging.getLogger(__name__)

# QUEUED_CHUNK_RESEND_AFTER_SECONDS (runner.py, where a chunk's retry wait is kept below it): how long a
# queued chunk waits before the sweep sends it again.


@transaction.atomic
def benchmark_runs_resume_stalled(
    *,
    live_workers: Collection[str] | None,
    now: datetime | None = None,
    stalled_after_seconds: float = CHUNK_STALLED_AFTER_SECONDS,
    resend_queued_after_seconds: float = QUEUED_CHUNK_RESEND_AFTER_SECONDS,
) -> list[int]:
    """Hand the chunks of dead workers to live ones; returns the chunk ids sent again.

    A running chunk is taken back when its worker is not among `live_workers` (the names that
    answered a Celery ping; None when the ping could not be made) or its heartbeat is older than
    `stalled_after_seconds`. A queued chunk is sent again at once when the worker that received its
    message (`received_by`, see `benchmark_chunk_received`) is not among `live_workers`: killed
    before claiming the chunk, it left the message unacknowledged in Redis until the visibility
    timeout. When a worker named on a chunk no longer answers, every queued chunk that names no
    receiver is sent again too: the worker may have taken its message off the queue in the instant
    before noting the receipt. Any other queued chunk is sent again once it has waited longer than
    `resend_queued_after_seconds` (a message lost some other way, or no ping to judge by). A chunk
    sent again forgets its receiver until the new message's receiver notes itself. Duplicated
    messages are harmless: a chunk is claimed by one worker at a time and scored pairs are skipped.
    Results left off the ledger for as long get their posting sent again."""
    now = now or timezone.now()
    stalled_before = now - timedelta(seconds=stalled_after_seconds)
    resend_before = now - timedelta(seconds=resend_queued_after_seconds)
    chunks = list(
        BenchmarkChunk.objects.select_for_update(skip_locked=True).filter(
            run__status__in=[BenchmarkRunStatus.QUEUED, BenchmarkRunStatus.RUNNING],
            status__in=[BenchmarkChunkStatus.QUEUED, BenchmarkChunkStatus.RUNNING],
        )
    )
    resend = _to_send_again(chunks, live_workers=live_workers, stalled_before=stalled_before, resend_before=resend_before)
    for chunk in resend:
        chunk.enqueued_at, chunk.received_by = now, ""
        chunk.save(update_fields=["status", "lease_token", "error", "enqueued_at", "received_by"])
    if resend:
        send_chunks_on_commit([chunk.pk for chunk in resend])
    # The ledger's outbox: results whose posting message was lost (a worker killed before it ran).
    unposted = (
        BenchmarkResult.objects.filter(cost_posted_at__isnull=True, created_at__lt=stalled_before)
        .values_list("run_id", flat=True)
        .distinct()
    )
    for run_id in unposted:
        post_costs_on_commit(run_id)
    # A run whose chunks are all done but which is still running: its worker died (or its database
    # call failed) between releasing the last chunk and finishing the run. Finishing is safe twice.
    finished_chunks_only = BenchmarkRun.objects.filter(status=BenchmarkRunStatus.RUNNING).exclude(
        chunks__status__in=[BenchmarkChunkStatus.QUEUED, BenchmarkChunkStatus.RUNNING]
    )
    for run_id in finished_chunks_only.values_list("pk", flat=True):
        logger.warning("benchmark run #%s: every chunk is done but the run was not finished; finishing it", run_id)
        benchmark_run_finish_if_complete(run_id=run_id)
    return [chunk.pk for chunk in resend]


def _to_send_again(
    chunks: list[BenchmarkChunk], *, live_workers: Collection[str] | None, stalled_before: datetime, resend_before: datetime
) -> list[BenchmarkChunk]:
    """The chunks the sweep sends again, by the rules of `benchmark_runs_resume_stalled`; each with
    its reason on the row (not saved)."""
    # The workers named on a chunk, as holder or as receiver of its message, that no longer answer.
    named = {worker_node(chunk.worker) for chunk in chunks if chunk.status == BenchmarkChunkStatus.RUNNING}
    named |= {chunk.received_by for chunk in chunks if chunk.received_by}
    gone = named - set(live_workers) if live_workers is not None else set()
    resend = [chunk for chunk in chunks if _take_back(chunk, gone=gone, stalled_before=stalled_before)]
    taken = {chunk.pk for chunk in resend}
    for chunk in chunks:
        if chunk.status != BenchmarkChunkStatus.QUEUED or chunk.pk in taken:
            continue
        if gone and not chunk.received_by:
            why = f"worker {min(gone)} no longer answers and may have taken this chunk's message before noting it"
            logger.warning("benchmark run #%s chunk %s: %s; sending it again", chunk.run_id, chunk.index, why)
            chunk.error = f"{why}; sent again"
            resend.append(chunk)
        elif chunk.enqueued_at is None or chunk.enqueued_at < resend_before:
            # Said here like the other cases: the sweep's own "succeeded" line is DEBUG (genesis/logging.py).
            logger.warning("benchmark run #%s chunk %s: queued since %s and no worker took it; sending it again",
                           chunk.run_id, chunk.index, f"{chunk.enqueued_at:%Y-%m-%d %H:%M:%S}" if chunk.enqueued_at else "never sent")
            resend.append(chunk)
    return resend


def _take_back(chunk: BenchmarkChunk, *, gone: set[str], stalled_before: datetime) -> bool:
    """Whether the chunk's holder, or the worker that received its message, is among the `gone`
    workers or silent (see `benchmark_runs_resume_stalled`). A running chunk taken back is queued
    again here; either way the reason is on the row."""
    if chunk.status == BenchmarkChunkStatus.RUNNING:
        worker_gone = worker_node(chunk.worker) in gone
        silent = chunk.heartbeat_at is None or chunk.heartbeat_at < stalled_before
        if not (worker_gone or silent):
            return False
        why = f"worker {chunk.worker} " + ("no longer answers" if worker_gone else f"sent no heartbeat since {chunk.heartbeat_at:%H:%M:%S}")
        logger.warning("benchmark run #%s chunk %s: %s; handing it to another worker", chunk.run_id, chunk.index, why)
        chunk.status, chunk.lease_token, chunk.error = BenchmarkChunkStatus.QUEUED, None, f"{why}; handed on"
        return True
    if chunk.received_by in gone:
        why = f"worker {chunk.received_by} received its message and no longer answers"
        logger.warning("benchmark run #%s chunk %s: %s; sending it again", chunk.run_id, chunk.index, why)
        chunk.error = f"{why}; sent again"
        return True
    return False
