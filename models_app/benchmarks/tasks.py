"""Celery entry points of benchmarks: ids in, one service call, safe to run twice.

Chunks go to the `benchmarks` queue (scale it out with `celery -A genesis worker -Q benchmarks`).
A chunk task that still has transiently failing pairs after the per-call retries is retried with
a countdown (honouring the provider's Retry-After); database connection blips are retried with
backoff. Nothing else is retried: a permanent provider error fails the run with its message. A
retry the broker cannot take (Redis away) leaves the chunk to the resume sweep's next pass.

A worker notes on a chunk that it received its message the moment the message arrives (the
`task_received` hook below), before it waits for a pool process or a retry's countdown: killed
before claiming the chunk, it would otherwise strand the message in Redis until the visibility
timeout, and the resume sweep could not tell.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, current_app, shared_task
from celery.exceptions import Reject
from celery.signals import task_received
from django.db import close_old_connections
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from genesis.errors import ServiceUnavailable
from genesis.tasks import RETRY_ON_DATABASE_ERRORS, SWEEP_OPTIONS
from models_app.benchmarks.ledger import benchmark_run_post_all_costs
from models_app.benchmarks.runner import (
    MAX_CHUNK_ATTEMPTS,
    benchmark_chunk_execute,
    benchmark_chunk_received,
    benchmark_chunk_retry_not_sent,
    worker_identity,
)
from models_app.benchmarks.sweep import benchmark_runs_resume_stalled

logger = logging.getLogger(__name__)

BENCHMARKS_QUEUE = "benchmarks"


class ChunkRetry(Exception):
    """A chunk sent again later because some of its pairs failed transiently (429, 5xx, timeouts)."""


# Sent to the `benchmarks` queue (settings.CELERY_TASK_ROUTES).
@shared_task(bind=True, name="models_app.benchmark_chunk_run", max_retries=MAX_CHUNK_ATTEMPTS, **RETRY_ON_DATABASE_ERRORS)
def benchmark_chunk_run(self: Task, chunk_id: int) -> str:
    outcome = benchmark_chunk_execute(chunk_id=chunk_id, worker=worker_identity(node=self.request.hostname or "unknown-worker"))
    if outcome.retry_in is not None:
        # The service released the chunk and will fail the run itself once MAX_CHUNK_ATTEMPTS is reached.
        # The exception is what Celery's retry line prints: which run and chunk, why, and what comes next.
        why = ChunkRetry(
            f"benchmark run #{outcome.run_id} chunk {chunk_id}: {outcome.error}; retried in {outcome.retry_in:.0f} s "
            f"(the run fails after {MAX_CHUNK_ATTEMPTS} rounds)"
        )
        try:
            retry = self.retry(countdown=outcome.retry_in, max_retries=None, throw=False, exc=why)
        except Reject:
            # The broker could not take the retry (Redis away) and Celery drops this message.
            benchmark_chunk_retry_not_sent(chunk_id=chunk_id)
            raise
        raise retry
    if outcome.skipped_reason:
        return f"chunk {chunk_id}: skipped ({outcome.skipped_reason})"
    return f"chunk {chunk_id}: {outcome.scored} pair(s) scored" + (f"; {outcome.error}" if outcome.error else "")


@task_received.connect
def benchmark_chunk_message_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """In the worker's main process, as a chunk's message arrives: note this worker on the chunk.

    Here rather than in the task, because a message is held unacknowledged from its arrival, not
    only once a pool process runs it: it may wait for a free process, or for a retry's countdown. If
    the whole worker is killed meanwhile, the resume sweep sees the chunk's receiver gone and sends
    the chunk again at once. Best effort and never raises into the consumer: without the note, the
    sweep still re-sends the chunk after QUEUED_CHUNK_RESEND_AFTER_SECONDS."""
    if request is None or request.task_name != benchmark_chunk_run.name:
        return
    try:
        chunk_id = int(request.args[0] if request.args else request.kwargs["chunk_id"])
        # This process serves no request or task whose end would recycle a broken or aged connection.
        close_old_connections()
        benchmark_chunk_received(chunk_id=chunk_id, worker=request.hostname or "unknown-worker")
    except Exception as exc:  # noqa: BLE001 - the chunk still runs; only a faster re-send is lost
        logger.warning("benchmark chunk message %s: could not note its receipt (%s)", request.id, exc)


@shared_task(name="models_app.benchmark_costs_post", max_retries=8, **RETRY_ON_DATABASE_ERRORS)
def benchmark_costs_post(run_id: int) -> int:
    """Put a run's new results on the ledger (idempotent: each under its own key)."""
    return benchmark_run_post_all_costs(run_id=run_id)


# A worker busy starting or scoring can take a while to answer; an empty reply means "judge by heartbeats".
PING_TIMEOUT_SECONDS = 3.0


@shared_task(name="models_app.benchmark_runs_resume", **SWEEP_OPTIONS)
def benchmark_runs_resume() -> list[int]:
    """Beat, every minute: hand the chunks of dead workers, held or only received, to live ones."""
    try:
        replies = current_app.control.ping(timeout=PING_TIMEOUT_SECONDS)
        live = {name for reply in replies for name in reply} or None
    except Exception as exc:  # noqa: BLE001 - without a ping, only stale heartbeats say a worker is gone
        logger.warning("benchmark resume: ping failed (%s); judging workers by their heartbeats only", exc)
        live = None
    return benchmark_runs_resume_stalled(live_workers=live)


def benchmark_workers(*, timeout: float = 3.0) -> list[str]:
    """Names of the running workers that consume the `benchmarks` queue (empty when none answers);
    ServiceUnavailable when the broker itself cannot be reached — "start a worker" would send the
    operator after a worker that is running."""
    try:
        replies = current_app.control.ping(timeout=min(timeout, 2.0))
    # Redis refused the connection (kombu wraps it), Redis went away during the ping (redis-py's own
    # error, not wrapped), or the file broker's folder.
    except (OperationalError, RedisConnectionError, OSError) as exc:
        raise ServiceUnavailable(
            f"the Celery broker cannot be reached ({exc}); check REDIS_URL and that Redis answers there"
        ) from None
    if not replies:
        return []
    try:
        queues = current_app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001
        queues = {}
    if not queues:
        # Workers answered the ping but not the inspection in time: trust the ping.
        return [name for reply in replies for name in reply]
    return sorted(name for name, consumed in queues.items() if any(q.get("name") == BENCHMARKS_QUEUE for q in consumed or []))
