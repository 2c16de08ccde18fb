"""Every write of the audits app: storing datasets, starting and advancing audit runs, and writing
scrubbed and rebalanced copies. The admin, the API, the `audit_dataset` command and the Celery tasks
all come here, so they cannot disagree.

Files are streamed (1 MB at a time), never read whole: a 1 GB upload costs a buffer, not a gigabyte.
The copy into MEDIA_ROOT happens *before* the database transaction that records it, so a slow upload
never holds a transaction (and its locks) open; a failure afterwards removes the copy again.

The pure cores (audits/report.py, scrub.py, rebalance.py) read and write files by path, so datasets
live on a file-system storage (MEDIA_ROOT/datasets/). Workers on other machines need MEDIA_ROOT on a
shared file system.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from audits import rebalance as rebalance_core
from audits import scrub as scrub_core
from audits.dedupe import DEFAULT_THRESHOLD, check_threshold
from audits.difficulty import LEVELS
from audits.models import (
    AUDIT_TRANSITIONS,
    DATASET_TRANSITIONS,
    AuditRun,
    AuditStatus,
    Dataset,
    DatasetOrigin,
    DatasetPurpose,
    DatasetStatus,
)
from audits.pii import PII_TYPES
from audits.report import AuditReport, UnreadableDataset, audit_file
from audits.selectors import (
    LOCK_NAMESPACE_DATASET,
    LOCK_NAMESPACE_RUN,
    STRANDED_AFTER_SECONDS,
    audit_runs_stranded,
    dataset_copies_stranded,
)
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from genesis.jobs import advance, advance_locked
from genesis.locks import worker_lock
from genesis.permissions import Actor, require_permission
from genesis.tasks import send_on_commit
from genesis.uploads import size_text
from models_app.registry.models import Agent
from models_app.registry.services import ApiPrincipal

logger = logging.getLogger(__name__)

DATASET_DIR = "datasets"
COPY_CHUNK_BYTES = 1024 * 1024
# Progress is written to the row at most every 2 % (and at most every half second), so a fast audit
# does not spend its time writing progress and a slow one still moves visibly.
PROGRESS_STEP = 0.02
PROGRESS_MIN_SECONDS = 0.5
MAX_ERROR_CHARS = 4000
# A worker killed mid-job (out of memory, a hard time limit) gets its message back and tries again;
# a job that kills its worker every time must stop somewhere, with a reason, not loop forever.
MAX_ATTEMPTS = 3


def _gave_up(attempts: int) -> str:
    return (
        f"a worker started this {attempts} times and never finished: it was killed each time (out of memory, or "
        "past the task time limit?). Give the workers more memory or time, or split the file, then try again."
    )


# --- files ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    name: str  # the storage name, relative to MEDIA_ROOT
    size_bytes: int
    line_count: int
    sha256: str


def dataset_file_path(*, dataset: Dataset) -> Path:
    """The dataset's file on disk (the cores read by path)."""
    return Path(default_storage.path(_storage_name(dataset)))


def dataset_file_open(*, dataset: Dataset) -> IO[bytes]:
    """The dataset's file, open for reading; Conflict naming the dataset when it cannot be read — the row
    outlived its file (MEDIA_ROOT restored from an older backup than the database, or not shared with
    this machine), which a person fixes, not a retry."""
    path = dataset_file_path(dataset=dataset)
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise Conflict(
            f"the file of dataset #{dataset.pk} ({dataset.original_name}) cannot be read from MEDIA_ROOT ({path}: "
            f"{exc.strerror or exc}): restore it from the file backup taken with the database "
            "(docs/runbooks/backup-restore.md), or upload the file again as a new dataset"
        ) from None


def _storage_name(dataset: Dataset) -> str:
    """The storage name of the dataset's file: every dataset is created with its file."""
    if not dataset.file.name:
        raise NotFound(f"dataset #{dataset.pk} has no file")
    return dataset.file.name


def _new_storage_name(original_name: str) -> str:
    safe = default_storage.get_valid_name(Path(original_name).name) or "dataset.jsonl"
    # A random prefix, not get_available_name: two uploads of "train.jsonl" at the same moment
    # must not race for one name.
    return f"{DATASET_DIR}/{timezone.now():%Y/%m}/{uuid.uuid4().hex[:12]}-{safe[:150]}"


def _chunks_of(content: Any) -> Iterator[bytes]:
    if hasattr(content, "chunks"):  # a Django File / UploadedFile
        yield from content.chunks(COPY_CHUNK_BYTES)
        return
    while True:
        chunk = content.read(COPY_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _store_stream(content: IO[bytes] | Any, name: str, *, max_bytes: int | None = None) -> StoredFile:
    """Copy `content` to storage `name` a chunk at a time, hashing and counting lines on the way.
    Past `max_bytes` the copy stops and is removed (checked while copying: a stream's size is not
    known before it is read)."""
    path = Path(default_storage.path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: two processes writing the same name (the demo seed, run by parallel test
    # suites) must not write into one another's half-written file.
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "wb") as out:
            stored = _tally(_chunks_of(content), name, out=out, max_bytes=max_bytes)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return stored


def _measure(name: str) -> StoredFile:
    """Size, lines and hash of a file already in storage (a copy a core wrote there)."""
    with open(default_storage.path(name), "rb") as stream:
        return _tally(_chunks_of(stream), name)


def _tally(
    chunks: Iterable[bytes], name: str, *, out: IO[bytes] | None = None, max_bytes: int | None = None
) -> StoredFile:
    """Hash, size and count the lines of `chunks` in one pass, writing each to `out` when given.
    Past `max_bytes` it stops with an error (checked while reading: a stream's size is not known
    before it is read)."""
    digest = hashlib.sha256()
    size = newlines = 0
    last = b""
    for chunk in chunks:
        if isinstance(chunk, str):
            raise InvalidInput("file: send the dataset as bytes (open it in binary mode)")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise InvalidInput(
                f"file: the dataset is larger than the upload limit of {size_text(max_bytes)} "
                "(AUDIT_MAX_UPLOAD_BYTES); split it, or ask an operator to raise the limit"
            )
        if out is not None:
            out.write(chunk)
        digest.update(chunk)
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    # The cores count a last line without a newline as a line; so do we.
    lines = newlines + (1 if size and last != b"\n" else 0)
    return StoredFile(name=name, size_bytes=size, line_count=lines, sha256=digest.hexdigest())


def _delete_quietly(name: str) -> None:
    try:
        default_storage.delete(name)
    except OSError:
        logger.warning("could not remove %s after a failed dataset write", name, exc_info=True)


# --- locks and progress -------------------------------------------------------------------------------


_worker_lock = worker_lock  # genesis/locks.py; the safety app's builds use the same lock


class _ProgressWriter:
    """The cores' progress callback (bytes done, bytes in total) → the row's progress column,
    scaled into [start, end] and throttled. Below 1.0 until the row is finished, because the work
    after the last byte (grouping duplicates, hashing the copy) still takes a moment."""

    def __init__(self, *, model: type[AuditRun] | type[Dataset], pk: int, start: float = 0.0, end: float = 0.99) -> None:
        self.model, self.pk, self.start, self.end = model, pk, start, end
        self.written = start
        self.written_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        fraction = self.start + (self.end - self.start) * (min(done, total) / total if total else 1.0)
        now = time.monotonic()
        if fraction <= self.written:
            return
        if fraction < self.end and (fraction - self.written < PROGRESS_STEP or now - self.written_at < PROGRESS_MIN_SECONDS):
            return
        # Progress is a courtesy: a failed write (a lock timeout, a dropped connection) must not kill
        # an audit that has done most of its work. The savepoint keeps an outer transaction usable;
        # the next update tries again, and the final write of the row reports a lasting failure.
        try:
            with transaction.atomic():
                self.model.objects.filter(pk=self.pk).update(progress=round(fraction, 4))
        except DatabaseError:
            logger.warning("could not write the progress of %s #%s; skipped", self.model.__name__, self.pk, exc_info=True)
            return
        self.written, self.written_at = fraction, now


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


# --- datasets ---------------------------------------------------------------------------------------------


def _check_purpose(purpose: str) -> None:
    if purpose not in DatasetPurpose.values:
        raise InvalidInput(f"purpose: '{purpose}' is not one of {', '.join(DatasetPurpose.values)}")


def _check_threshold(near_threshold: float) -> None:
    try:
        check_threshold(near_threshold)
    except ValueError as exc:
        raise InvalidInput(f"near_threshold: {exc}") from None


def _check_key_may_upload(principal: ApiPrincipal, agent: Agent | None) -> None:
    """An API key acts for agents, not as a person: it may store datasets of its agents, and
    datasets of no agent only when it acts for all of them."""
    if agent is not None and not principal.may_act_for(agent.slug):
        raise PermissionDenied(f"API key '{principal.label}' may not act for agent '{agent.slug}'")
    if agent is None and not principal.all_agents:
        raise PermissionDenied(
            f"API key '{principal.label}' acts for {', '.join(sorted(principal.agent_slugs)) or 'no agent'}: "
            "name the dataset's agent in the form field 'agent'"
        )


def dataset_upload(
    *,
    content: IO[bytes] | Any,
    original_name: str,
    purpose: str = DatasetPurpose.TRAINING,
    agent: Agent | None = None,
    actor: Actor = None,
    principal: ApiPrincipal | None = None,
    via: str = "",
    audit: bool = True,
    near_threshold: float = DEFAULT_THRESHOLD,
) -> Dataset:
    """Store an uploaded JSONL file as a dataset and (by default) queue its audit.

    `content` is a binary stream or a Django `File`/`UploadedFile`; it is copied a chunk at a time
    while its sha256, size and line count are computed, up to settings.AUDIT_MAX_UPLOAD_BYTES (an HTTP
    upload over it never gets here: genesis/uploads.py stops it while Django reads it). The copy is
    made before the transaction (see the module doc) and removed if recording it fails.
    The uploader is a person (`actor`, checked for permissions) or an API key (`principal`, checked
    for the agent); neither means the system itself.
    """
    if principal is not None:
        if actor is not None:
            raise ValueError("an upload comes from a person (actor) or an API key (principal), not both")
        _check_key_may_upload(principal, agent)
    require_permission(actor=actor, permission="audits.add_dataset", action="upload datasets")
    if audit:
        require_permission(actor=actor, permission="audits.add_auditrun", action="start audits")
    _check_purpose(purpose)
    _check_threshold(near_threshold)
    original_name = Path(original_name or "").name.strip()
    if not original_name:
        raise InvalidInput("file: the upload has no file name")
    stored = _store_stream(content, _new_storage_name(original_name), max_bytes=settings.AUDIT_MAX_UPLOAD_BYTES)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                agent=agent, purpose=purpose, origin=DatasetOrigin.UPLOAD, status=DatasetStatus.READY,
                file=stored.name, original_name=original_name[:255], size_bytes=stored.size_bytes,
                line_count=stored.line_count, sha256=stored.sha256, uploaded_by=actor, via=via[:200],
                progress=1.0, finished_at=timezone.now(),
            )
            if audit:
                _audit_create(dataset=dataset, requested_by=actor, via=via, near_threshold=near_threshold)
    except BaseException:
        _delete_quietly(stored.name)
        raise
    return dataset


# --- audit runs ---------------------------------------------------------------------------------------------


def _audit_create(
    *, dataset: Dataset, requested_by: Any, via: str, near_threshold: float = DEFAULT_THRESHOLD,
    find_near_duplicates: bool = True,
) -> AuditRun:
    run = AuditRun.objects.create(
        dataset=dataset, near_threshold=near_threshold, find_near_duplicates=find_near_duplicates,
        requested_by=requested_by, via=via[:200],
    )
    Dataset.objects.filter(pk=dataset.pk).update(latest_audit=run)
    dataset.latest_audit = run
    send_on_commit("audits.run_audit", run.pk, what=f"audit run #{run.pk}")
    return run


@transaction.atomic
def audit_start(
    *,
    dataset: Dataset,
    actor: Actor = None,
    via: str = "",
    near_threshold: float = DEFAULT_THRESHOLD,
    find_near_duplicates: bool = True,
) -> AuditRun:
    """Queue an audit of `dataset` (the admin's "Audit again"); a worker does it."""
    require_permission(actor=actor, permission="audits.add_auditrun", action="start audits")
    _check_threshold(near_threshold)
    # Locking the dataset makes two clicks at once start one run, not two.
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if dataset.status != DatasetStatus.READY:
        raise Conflict(
            f"dataset #{dataset.pk} is {dataset.get_status_display().lower()}; "
            + ("its audit starts by itself once it is written" if dataset.status == DatasetStatus.PENDING
               else "it has no file to audit")
        )
    active = dataset.audit_runs.filter(status__in=[AuditStatus.QUEUED, AuditStatus.RUNNING]).first()
    if active is not None:
        raise Conflict(
            f"audit #{active.pk} of dataset #{dataset.pk} is still {active.status} ({active.progress:.0%}); "
            "wait for it to finish before starting another"
        )
    return _audit_create(
        dataset=dataset, requested_by=actor, via=via, near_threshold=near_threshold,
        find_near_duplicates=find_near_duplicates,
    )


def _report_json(report: AuditReport, *, storage_name: str) -> dict[str, Any]:
    """The stored report: the contract object and its extras, with the file named as stored
    (the worker's absolute path says nothing to a person and leaks the server layout)."""
    data = report.to_contract_dict()
    data["file"] = {"name": storage_name, "bytes": report.size_bytes}
    return data


def _summary_columns(report: AuditReport) -> dict[str, Any]:
    difficulty = report.difficulty
    return {
        "lines": report.lines,
        "valid": report.valid,
        "format_error_total": report.format_error_total,
        "pii_total": sum(report.pii_counts.values()),
        "duplicates_exact": report.duplicates.exact,
        "duplicates_near": report.duplicates.near,
        "easy": difficulty["easy"],
        "medium": difficulty["medium"],
        "hard": difficulty["hard"],
        "has_findings": report.has_findings,
        "seconds": round(report.seconds, 3),
        "processes": report.workers,
    }


def audit_run_execute(*, run_id: int, workers: int = 1) -> AuditRun:
    """Do a queued audit run (the `audits.run_audit` task): queued → running → succeeded | failed.

    Safe to call twice: a finished run is returned as it is, and a run another live worker holds
    is left to it. A run whose worker died (running, lock free) is taken over and redone — the audit
    only reads the file, so redoing it is harmless. Not one transaction: the row's progress must be
    visible while the audit runs.
    """
    with _worker_lock(LOCK_NAMESPACE_RUN, run_id) as mine:
        if not mine:
            run = AuditRun.objects.filter(pk=run_id).first()
            if run is None:
                raise NotFound(f"audit run #{run_id} does not exist")
            return run
        with transaction.atomic():
            run = AuditRun.objects.select_for_update().select_related("dataset").filter(pk=run_id).first()
            if run is None:
                raise NotFound(f"audit run #{run_id} does not exist")
            if run.status in (AuditStatus.SUCCEEDED, AuditStatus.FAILED):
                return run
            if run.attempts >= MAX_ATTEMPTS:
                advance(run, AuditStatus.FAILED, transitions=AUDIT_TRANSITIONS)
                run.finished_at, run.error = timezone.now(), _gave_up(run.attempts)
                run.save(update_fields=["status", "finished_at", "error"])
                return run
            advance(run, AuditStatus.RUNNING, transitions=AUDIT_TRANSITIONS)
            run.started_at, run.progress, run.error = timezone.now(), 0.0, ""
            run.attempts += 1
            run.save(update_fields=["status", "started_at", "progress", "error", "attempts"])
        dataset = run.dataset
        try:
            report = audit_file(
                dataset_file_path(dataset=dataset),
                workers=workers,
                near_threshold=run.near_threshold,
                find_near_duplicates=run.find_near_duplicates,
                progress=_ProgressWriter(model=AuditRun, pk=run.pk),
            )
        except UnreadableDataset as exc:
            return _audit_fail(
                run, f"the file of dataset #{dataset.pk} ({dataset.file.name}) cannot be read: {exc}. "
                "Was it moved or deleted from MEDIA_ROOT, or is MEDIA_ROOT not shared with this worker?"
            )
        except Exception as exc:  # noqa: BLE001 - anything the audit raises ends the run, with the reason
            logger.exception("audit run %s failed", run.pk)
            return _audit_fail(run, _error_text(exc))
        return advance_locked(
            AuditRun, run.pk, AuditStatus.SUCCEEDED, transitions=AUDIT_TRANSITIONS, progress=1.0,
            finished_at=timezone.now(), report=_report_json(report, storage_name=_storage_name(dataset)),
            **_summary_columns(report),
        )


def _audit_fail(run: AuditRun, message: str) -> AuditRun:
    return advance_locked(
        AuditRun, run.pk, AuditStatus.FAILED, transitions=AUDIT_TRANSITIONS, finished_at=timezone.now(), error=message
    )


def dataset_record_audit(
    *,
    path: str | os.PathLike[str],
    report: AuditReport,
    purpose: str = DatasetPurpose.TRAINING,
    agent: Agent | None = None,
    actor: Actor = None,
    via: str = "command: audit_dataset --record",
    original_name: str | None = None,
    storage_name: str | None = None,
) -> AuditRun:
    """Keep a file audited outside the workers (the command's `--record`, the demo seed): the file
    is stored as a dataset and `report` as its succeeded audit run. `storage_name` fixes where the
    copy goes (the demo uses one name, so seeding again rewrites one file instead of adding copies)."""
    require_permission(actor=actor, permission="audits.add_dataset", action="record datasets")
    require_permission(actor=actor, permission="audits.add_auditrun", action="record audits")
    _check_purpose(purpose)
    source = Path(path)
    original_name = Path(original_name or source.name).name
    try:
        with open(source, "rb") as stream:
            stored = _store_stream(stream, storage_name or _new_storage_name(original_name))
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        if stored.size_bytes != report.size_bytes:
            raise Conflict(
                f"{source} changed while it was audited ({report.size_bytes} bytes audited, "
                f"{stored.size_bytes} bytes now); audit it again"
            )
        with transaction.atomic():
            now = timezone.now()
            dataset = Dataset.objects.create(
                agent=agent, purpose=purpose, origin=DatasetOrigin.UPLOAD, status=DatasetStatus.READY,
                file=stored.name, original_name=original_name[:255], size_bytes=stored.size_bytes,
                line_count=stored.line_count, sha256=stored.sha256, uploaded_by=actor, via=via[:200],
                progress=1.0, finished_at=now,
            )
            run = AuditRun.objects.create(
                dataset=dataset, status=AuditStatus.SUCCEEDED, progress=1.0,
                near_threshold=report.duplicates.threshold, requested_by=actor, via=via[:200],
                started_at=now, finished_at=now, attempts=1,
                report=_report_json(report, storage_name=stored.name), **_summary_columns(report),
            )
            Dataset.objects.filter(pk=dataset.pk).update(latest_audit=run)
    except BaseException:
        _delete_quietly(stored.name)
        raise
    return run


# --- derived datasets: scrub and rebalance ----------------------------------------------------------------


def _derive_create(
    *, parent: Dataset, origin: str, suffix: str, parameters: dict[str, Any], actor: Actor, via: str
) -> Dataset:
    parent = Dataset.objects.select_for_update().get(pk=parent.pk)
    if parent.status != DatasetStatus.READY:
        raise Conflict(
            f"dataset #{parent.pk} is {parent.get_status_display().lower()}; only a ready dataset can be "
            f"{'scrubbed' if origin == DatasetOrigin.SCRUB else 'rebalanced'}"
        )
    stem = Path(parent.original_name).stem or f"dataset-{parent.pk}"
    original_name = f"{stem}.{suffix}.jsonl"
    dataset = Dataset.objects.create(
        agent=parent.agent, purpose=parent.purpose, origin=origin, parent=parent,
        status=DatasetStatus.PENDING, progress=0.0, file=_new_storage_name(original_name),
        original_name=original_name[:255], uploaded_by=actor, via=via[:200], parameters=parameters,
    )
    send_on_commit("audits.derive_dataset", dataset.pk, what=f"the copy of dataset #{dataset.pk}")
    return dataset


@transaction.atomic
def dataset_scrub(
    *,
    dataset: Dataset,
    mode: str = "placeholder",
    types: Iterable[str] | None = None,
    actor: Actor = None,
    via: str = "",
) -> Dataset:
    """Queue a copy of `dataset` with its PII replaced: typed placeholders (`[EMAIL]`) or consistent
    pseudonyms (`<EMAIL_1>`, the same value → the same stand-in). Returns the new dataset, pending;
    a worker writes it, then audits it (that audit finds none of the scrubbed types)."""
    require_permission(actor=actor, permission="audits.add_dataset", action="scrub datasets")
    if mode not in scrub_core.SCRUB_MODES:
        raise InvalidInput(f"mode: '{mode}' is not one of {', '.join(scrub_core.SCRUB_MODES)}")
    if isinstance(types, str):
        types = [types]
    chosen = list(PII_TYPES) if types is None else [t for t in PII_TYPES if t in set(types)]
    unknown = sorted(set(types or ()) - set(PII_TYPES))
    if unknown or not chosen:
        raise InvalidInput(
            f"types: {'unknown ' + ', '.join(unknown) if unknown else 'choose at least one'}; "
            f"known: {', '.join(PII_TYPES)}"
        )
    suffix = f"scrubbed-{'placeholders' if mode == 'placeholder' else 'pseudonyms'}"
    return _derive_create(
        parent=dataset, origin=DatasetOrigin.SCRUB, suffix=suffix,
        parameters={"mode": mode, "types": chosen}, actor=actor, via=via,
    )


@transaction.atomic
def dataset_rebalance(
    *,
    dataset: Dataset,
    mix: str | Mapping[str, float] = "30,45,25",
    seed: int = 0,
    target_size: int | None = None,
    actor: Actor = None,
    via: str = "",
) -> Dataset:
    """Queue a copy of `dataset` moved toward an easy / medium / hard `mix` ("30,45,25"): duplicates
    and invalid lines dropped, levels down-sampled to the mix (audits/rebalance.py), never repeated or
    invented. The worker stores the mix achieved and the shortfall ("1 hard example: 24 more needed")."""
    require_permission(actor=actor, permission="audits.add_dataset", action="rebalance datasets")
    if isinstance(mix, str):
        try:
            shares = rebalance_core.parse_mix(mix)
        except ValueError as exc:
            raise InvalidInput(f"mix: {exc}") from None
    else:
        shares = dict(mix)
        if set(shares) != set(LEVELS) or abs(sum(shares.values()) - 1) > 1e-6 or min(shares.values()) < 0:
            raise InvalidInput(f"mix: give shares for easy, medium and hard that add up to 1, got {shares}")
    if target_size is not None and target_size < 0:
        raise InvalidInput(f"target_size: {target_size} is negative; leave it empty to keep the usable size")
    latest = dataset.audit_runs.filter(status=AuditStatus.SUCCEEDED).order_by("-finished_at").first()
    near_threshold = latest.near_threshold if latest is not None else DEFAULT_THRESHOLD
    percent = "-".join(f"{round(shares[level] * 100):g}" for level in LEVELS)
    return _derive_create(
        parent=dataset, origin=DatasetOrigin.REBALANCE, suffix=f"rebalanced-{percent}",
        parameters={
            "mix": {level: round(shares[level], 6) for level in LEVELS},
            "seed": seed, "target_size": target_size, "near_threshold": near_threshold,
        },
        actor=actor, via=via,
    )


def dataset_derive_execute(*, dataset_id: int, workers: int = 1) -> Dataset:
    """Write a pending scrubbed / rebalanced dataset (the `audits.derive_dataset` task), then queue
    its audit: pending → ready | failed. Safe to call twice, like `audit_run_execute`: the copy is
    written beside its final name and moved into place, so a redo replaces, never appends."""
    with _worker_lock(LOCK_NAMESPACE_DATASET, dataset_id) as mine:
        dataset = Dataset.objects.select_related("parent").filter(pk=dataset_id).first()
        if dataset is None:
            raise NotFound(f"dataset #{dataset_id} does not exist")
        if not mine or dataset.status != DatasetStatus.PENDING:
            return dataset
        if dataset.attempts >= MAX_ATTEMPTS:
            return _derive_fail(dataset, _gave_up(dataset.attempts))
        if dataset.parent is None:
            return _derive_fail(dataset, "a derived dataset needs the dataset it is derived from")
        Dataset.objects.filter(pk=dataset.pk).update(
            started_at=timezone.now(), progress=0.0, error="", attempts=F("attempts") + 1
        )
        source = dataset_file_path(dataset=dataset.parent)
        destination = dataset_file_path(dataset=dataset)
        destination.parent.mkdir(parents=True, exist_ok=True)
        params = dataset.parameters
        achieved_mix: dict[str, float] | None = None
        shortfall = ""
        try:
            if dataset.origin == DatasetOrigin.SCRUB:
                scrubbed = scrub_core.scrub_file(
                    source=source, destination=destination, mode=params["mode"], types=params["types"],
                    progress=_ProgressWriter(model=Dataset, pk=dataset.pk, end=0.95),
                )
                result = {key: value for key, value in scrubbed.to_dict().items() if key not in ("source", "destination")}
            else:
                # The plan needs every line's level, which only a fresh audit of the parent holds.
                report = audit_file(
                    source, workers=workers, near_threshold=params.get("near_threshold", DEFAULT_THRESHOLD),
                    progress=_ProgressWriter(model=Dataset, pk=dataset.pk, end=0.9),
                )
                rebalanced = rebalance_core.rebalance_file(
                    source=source, destination=destination, report=report, mix=params["mix"],
                    seed=params.get("seed", 0), target_size=params.get("target_size"),
                )
                result = {key: value for key, value in rebalanced.to_dict().items() if key not in ("source", "destination")}
                achieved_mix = rebalanced.plan.achieved_mix
                shortfall = "\n".join(rebalanced.plan.shortfalls)
            stored = _measure(_storage_name(dataset))
        except UnreadableDataset as exc:
            return _derive_fail(dataset, f"the file of dataset #{dataset.parent_id} cannot be read: {exc}")
        except Exception as exc:  # noqa: BLE001 - the reason goes on the row for a person to read
            logger.exception("writing dataset %s failed", dataset.pk)
            return _derive_fail(dataset, _error_text(exc))
        with transaction.atomic():
            dataset = advance_locked(
                Dataset, dataset.pk, DatasetStatus.READY, transitions=DATASET_TRANSITIONS, progress=1.0,
                finished_at=timezone.now(), size_bytes=stored.size_bytes, line_count=stored.line_count,
                sha256=stored.sha256, result=result, achieved_mix=achieved_mix, shortfall=shortfall,
            )
            _audit_create(dataset=dataset, requested_by=dataset.uploaded_by, via=f"after {dataset.origin} of #{dataset.parent_id}")
        return dataset


def _derive_fail(dataset: Dataset, message: str) -> Dataset:
    return advance_locked(
        Dataset, dataset.pk, DatasetStatus.FAILED, transitions=DATASET_TRANSITIONS, finished_at=timezone.now(), error=message
    )


# --- beat's sweep ----------------------------------------------------------------------------------------


def audits_sweep_stranded(*, older_than_seconds: int = STRANDED_AFTER_SECONDS) -> dict[str, int]:
    """Beat, every 5 minutes: the backstop for work whose message is gone.

    * an audit still queued, or a copy still pending and never started, after `older_than_seconds`
      lost its message (the broker was down when it was sent): its task is sent again;
    * an audit or copy running with no worker holding its lock lost its worker (killed, out of
      memory; genesis/locks.py `running_without_worker`: a minute after it started): it is sent again
      too — its message would otherwise wait out Redis' visibility timeout, or never come back after a
      hard time limit — and the attempts cap turns a job that always dies into a failure with a reason.

    A duplicate message is harmless: the tasks skip work that is finished or held by a live worker.
    The rule is audits/selectors.py's (`audit_runs_stranded`, `dataset_copies_stranded`), which
    /metrics counts as stalled jobs.
    """
    runs = audit_runs_stranded(older_than_seconds=older_than_seconds)
    copies = dataset_copies_stranded(older_than_seconds=older_than_seconds)
    for pk in runs:
        send_on_commit("audits.run_audit", pk, what=f"audit run #{pk}")
    for pk in copies:
        send_on_commit("audits.derive_dataset", pk, what=f"the copy of dataset #{pk}")
    if runs or copies:
        logger.warning("audits sweep: sent again audit runs %s and dataset copies %s", runs, copies)
    return {"audit_runs": len(runs), "datasets": len(copies)}
