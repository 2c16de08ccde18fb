"""A background job is a row (GUIDE): its `status` moves only along the transition table kept beside
its choices in the row's models.py — {status: the statuses it may become next}. Every service and
task that changes a job row's status goes through `advance` (or `check_move` where the write is a
conditional UPDATE that must stay one statement for its race guarantee), so a refused move reads the
same for every kind of job. (NetBox's core/models/jobs.py keeps one job row; Genesis has several
kinds, each with its own table, and this one check.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models, transaction

from genesis.errors import Conflict

Transitions = Mapping[str, frozenset[str]]


class WorkerJobStatus(models.TextChoices):
    """A job one worker does at a time, under a lock, and another worker takes over when the first
    dies: an audit run, a WaltzRL build."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# running → running: a worker taking over a job whose previous worker died (its message came back).
WORKER_JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkerJobStatus.QUEUED: frozenset({WorkerJobStatus.RUNNING, WorkerJobStatus.FAILED}),
    WorkerJobStatus.RUNNING: frozenset({WorkerJobStatus.RUNNING, WorkerJobStatus.SUCCEEDED, WorkerJobStatus.FAILED}),
    WorkerJobStatus.SUCCEEDED: frozenset(),
    WorkerJobStatus.FAILED: frozenset(),
}


def job_name(row: Any) -> str:
    """How a refusal names the row: its model's verbose name and primary key ("benchmark run #7")."""
    return f"{row._meta.verbose_name} #{row.pk}"


def check_move(transitions: Transitions, *, name: str, current: str, to: str) -> None:
    """Conflict unless `transitions` lets a row in `current` become `to`; the message names the row,
    its status and the moves it has left."""
    allowed = transitions[current]
    if to not in allowed:
        allowed_text = ", ".join(sorted(allowed)) or "none (finished)"
        raise Conflict(f"{name} is {current} and cannot become {to}; allowed next: {allowed_text}")


def advance(row: Any, to: str, *, transitions: Transitions) -> None:
    """Move `row.status` to `to` (not saved: the caller saves it with the fields that go with the
    move, inside the transaction that locked the row)."""
    check_move(transitions, name=job_name(row), current=row.status, to=to)
    row.status = to


@transaction.atomic
def advance_locked(model: type[models.Model], pk: int, to: str, *, transitions: Transitions, **fields: Any) -> Any:
    """Lock the row, move it to `to` and save it with `fields` (e.g. finished_at, error): the finish
    path of a worker that holds the job. A row something else already moved on is refused (Conflict),
    never overwritten."""
    row = model._default_manager.select_for_update().get(pk=pk)
    advance(row, to, transitions=transitions)
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=["status", *fields])
    return row
