"""Every write of fine-tuning: upload a training file, create / submit / start / cancel a job, adopt
the provider job a lost creation answer left untracked, and sync a job with its provider — which, on
SUCCESS, registers the fine-tuned model and puts the cost on the ledger exactly once.

Transactions and provider calls: a provider call can take seconds (or a timeout), so most services
call the provider first, outside any transaction, and then write the row under `select_for_update`
in a short transaction; a snapshot that arrives after a newer one is ignored
(rules.snapshot_is_stale). Submitting is the exception: creating a job is paid and cannot
be undone, so the row stays locked while the provider is asked, and a second submit of the same row
waits for the first and then finds it no longer NOT_CREATED.

Exactly once on SUCCESS: the job row is locked, `model_version` (a OneToOne) is set in the same
transaction as the registration and the ledger entry, `model_version_register` returns the existing
version for the same (agent, provider, model), and the ledger entry's idempotency key is
`finetune:<job pk>`. A sync killed half-way commits nothing; the next one does it all.

Adopting: a creation that timed out or met a 5xx is not asked again (it may have made a job), so its
row stays NOT_CREATED; `finetuning_job_adopt` links that row to the provider job a person found in the
provider's list, after the provider's retrieve call shows the job exists, is no other row's and is
what the row asked for. From then on the row is tracked, held and charged as if creation had answered.

Retries: the provider layer makes one attempt per call; the only retry layer is `call_with_retries`
(backoff with jitter, honouring Retry-After), used here. The Celery tasks do not retry provider
errors again: beat's next tick, a minute later, is the next attempt.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import IO, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits import formats
from audits.models import AuditStatus, Dataset, DatasetStatus
from audits.wording import counted
from costs.models import Operation
from costs.pricing import to_ledger_amount
from costs.selectors import fine_tuning_cost
from costs.services import budget_check, cost_hold_release, cost_record
from genesis.errors import Conflict, DomainError, InvalidInput, NotFound
from genesis.jobs import advance
from genesis.permissions import Actor, require_permission
from models_app.finetuning import rules
from models_app.finetuning.models import FINE_TUNING_TRANSITIONS, FineTuningJob, TrainingFile, TrainingFilePurpose
from models_app.finetuning.provider_calls import (
    INTERACTIVE_RETRY,
    SYNC_RETRY,
    call_provider,
    default_provider_account,
    domain_error,
    fine_tuning_provider,
)
from models_app.providers.base import FineTuningJobSnapshot, UploadedFile
from models_app.providers.errors import ProviderError, ProviderRefused, TransientProviderError
from models_app.providers.mistral import MistralProvider
from models_app.providers.retry import RetryPolicy
from models_app.registry.models import Agent, ModelKind, ModelVersion, ProviderAccount
from models_app.registry.selectors import baseline_version
from models_app.registry.services import model_version_register

logger = logging.getLogger(__name__)

# A job's estimate is held against the budgets until the job ends; a job lost without ending (its row
# deleted by hand, its provider gone for good) stops holding after this, longer than any training.
FINE_TUNING_HOLD_LASTS = timedelta(days=7)
MAX_REPORTED_PROBLEMS = 20
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # larger uploads spill to a temporary file while they are checked
COPY_CHUNK_BYTES = 1024 * 1024
LEDGER_KEY_PREFIX = "finetune:"


class TrainingFileInvalid(InvalidInput):
    """The file breaks the fine-tuning format; `problems` names each bad line (1-based). The message
    is `findings` plus `advice`: where every problem can be read depends on the surface, so a caller
    that knows better (the dataset path, the command) re-words the advice, never the findings."""

    def __init__(self, findings: str, *, advice: str, problems: list[tuple[int, str]], invalid_lines: int) -> None:
        super().__init__(f"{findings}. {advice}")
        self.findings = findings
        self.problems = problems
        self.invalid_lines = invalid_lines

    def advised(self, advice: str) -> TrainingFileInvalid:
        return TrainingFileInvalid(self.findings, advice=advice, problems=self.problems, invalid_lines=self.invalid_lines)


def _record_history(instance: Any, *, actor: Actor, reason: str) -> None:
    """simple-history reads these when the row is saved: who changed it and why."""
    instance._history_user = actor
    instance._change_reason = reason[:100] if reason else ""


def ledger_key(job: FineTuningJob) -> str:
    return f"{LEDGER_KEY_PREFIX}{job.pk}"


# --- training files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScannedFile:
    sha256: str
    size_bytes: int
    line_count: int
    estimated_tokens: int
    problems: list[tuple[int, str]]
    invalid_lines: int


def _scan_training_file(spool: IO[bytes]) -> _ScannedFile:
    """Check every line against Mistral's format (audits/formats.py), reading one line at a time."""
    spool.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := spool.read(COPY_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    spool.seek(0)
    problems: list[tuple[int, str]] = []
    invalid_lines = samples = characters = 0
    for raw in formats.iter_raw_lines(spool):
        checked = formats.check_line(raw)
        if checked.valid:
            samples += 1
            characters += len(checked.text.strip())
            continue
        invalid_lines += 1
        for error in checked.format_errors():
            if len(problems) < MAX_REPORTED_PROBLEMS:
                problems.append((error.line, error.detail))
    if samples == 0 and invalid_lines == 0:
        problems.append((0, "the file is empty; it needs one chat sample per line"))
        invalid_lines = 1
    return _ScannedFile(
        sha256=digest.hexdigest(),
        size_bytes=size,
        line_count=samples + invalid_lines,
        estimated_tokens=rules.estimate_file_tokens(characters=characters, samples=samples),
        problems=problems,
        invalid_lines=invalid_lines,
    )


def training_file_upload(
    *,
    agent: Agent,
    content: IO[bytes],
    filename: str,
    purpose: str = TrainingFilePurpose.TRAINING,
    provider: ProviderAccount | None = None,
    actor: Actor = None,
    dataset: Dataset | None = None,
) -> TrainingFile:
    """Check a chat JSONL file line by line, then upload it to the provider for `agent`.

    The file is linked to `dataset` (an audits.Dataset with the same bytes), or else to the newest
    ready dataset of the agent (or of no agent) with the same sha256, so a model's lineage reaches
    the audit of the data it was trained on.

    `content` is read in chunks into a spooled temporary file (memory up to 8 MiB, then disk), so the
    check never holds the whole file; the upload itself hands the bytes to the SDK. A file with any
    bad line is refused with every problem located (TrainingFileInvalid), before the provider sees
    it. The same bytes uploaded again for the same agent, provider and purpose return the earlier
    upload instead of a second copy."""
    require_permission(actor=actor, permission="models_app.add_trainingfile", action="upload training files")
    if purpose not in TrainingFilePurpose.values:
        raise InvalidInput(f"purpose: '{purpose}' is not one of {', '.join(TrainingFilePurpose.values)}")
    filename = (filename or "").strip() or "training.jsonl"
    account = provider or default_provider_account(agent=agent)
    client = fine_tuning_provider(account)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        while chunk := content.read(COPY_CHUNK_BYTES):
            spool.write(chunk)
        scanned = _scan_training_file(spool)
        _refuse_invalid_lines(scanned, filename=filename)
        if dataset is not None and dataset.sha256 and dataset.sha256 != scanned.sha256:
            raise InvalidInput(f"dataset: #{dataset.pk} holds other bytes than {filename} (sha256 differs)")
        dataset = dataset or _dataset_with_bytes(agent=agent, sha256=scanned.sha256)
        existing = _earlier_upload(agent=agent, account=account, sha256=scanned.sha256, purpose=purpose, dataset=dataset)
        if existing is not None:
            return existing
        spool.seek(0)
        payload = spool.read()
    uploaded = _upload(client, account=account, filename=filename, payload=payload)
    with transaction.atomic():
        training_file, _ = TrainingFile.objects.get_or_create(
            provider=account,
            provider_file_id=uploaded.id,
            defaults={
                "agent": agent,
                "filename": filename,
                "purpose": purpose,
                "line_count": scanned.line_count,
                "size_bytes": scanned.size_bytes,
                "sha256": scanned.sha256,
                "estimated_tokens": scanned.estimated_tokens,
                "uploaded_by": actor,
                "dataset": dataset,
            },
        )
    return training_file


def _earlier_upload(
    *, agent: Agent, account: ProviderAccount, sha256: str, purpose: str, dataset: Dataset | None
) -> TrainingFile | None:
    """The same bytes uploaded before for this agent, provider and purpose (linked to `dataset` now if
    it had none), so a second upload returns it instead of a copy."""
    existing = TrainingFile.objects.filter(agent=agent, provider=account, sha256=sha256, purpose=purpose).order_by(
        "-uploaded_at"
    ).first()
    if existing is not None and existing.dataset_id is None and dataset is not None:
        TrainingFile.objects.filter(pk=existing.pk, dataset__isnull=True).update(dataset=dataset)
        existing.dataset = dataset
    return existing


def _refuse_invalid_lines(scanned: _ScannedFile, *, filename: str) -> None:
    if scanned.problems:
        shown = "; ".join(detail for _, detail in scanned.problems[:5])
        more = f" (and {len(scanned.problems) - 5} more)" if len(scanned.problems) > 5 else ""
        raise TrainingFileInvalid(
            f"{filename}: {scanned.invalid_lines:,} of {counted(scanned.line_count, 'line')} "
            f"{'is not a valid fine-tuning sample' if scanned.invalid_lines == 1 else 'are not valid fine-tuning samples'}"
            f" — {shown}{more}",
            advice="Fix them and upload again",
            problems=scanned.problems,
            invalid_lines=scanned.invalid_lines,
        )


def _upload(client: MistralProvider, *, account: ProviderAccount, filename: str, payload: bytes) -> UploadedFile:
    try:
        return call_provider(lambda: client.upload_file(filename=filename, content=payload), policy=INTERACTIVE_RETRY)
    except ProviderRefused as error:
        # The provider's refusal, not a bad argument: a Conflict (HTTP 409, command exit 1).
        raise Conflict(
            f"{filename}: provider '{account.name}' refused the file"
            + (f": {error.provider_answer}" if error.provider_answer else f": {error.message}")
        ) from None
    except ProviderError as error:
        raise domain_error(error, action=f"upload {filename} to provider '{account.name}'") from None


def _dataset_with_bytes(*, agent: Agent, sha256: str) -> Dataset | None:
    return (
        Dataset.objects.filter(sha256=sha256, status=DatasetStatus.READY)
        .filter(Q(agent=agent) | Q(agent__isnull=True))
        .order_by("-created_at", "-pk")
        .first()
    )


def training_file_from_dataset(*, dataset: Dataset, actor: Actor = None, provider: ProviderAccount | None = None) -> TrainingFile:
    """Upload an audited dataset (audits.Dataset, purpose training or validation) as a training file
    for its agent — the fine-tuning job form's "…or an audited dataset". Refused while its audit has
    not finished: people choose audited data so that they have read the audit."""
    if dataset.status != DatasetStatus.READY:
        raise Conflict(f"dataset #{dataset.pk} is {dataset.get_status_display().lower()}; wait until it is ready")
    if dataset.purpose not in TrainingFilePurpose.values:
        raise InvalidInput(f"dataset: #{dataset.pk} is a {dataset.purpose} dataset, not training or validation data")
    agent = dataset.agent
    if agent is None:
        raise InvalidInput(f"dataset: #{dataset.pk} belongs to no agent; upload it for the agent the job trains")
    audit = dataset.latest_audit
    if audit is None or audit.status != AuditStatus.SUCCEEDED:
        state = "has no audit" if audit is None else f"audit #{audit.pk} is {audit.status}"
        raise Conflict(f"dataset #{dataset.pk} {state}; audit it first (Datasets › Audit again)")
    with dataset.file.open("rb") as content:
        try:
            return training_file_upload(
                agent=agent, content=content, filename=dataset.original_name, purpose=dataset.purpose,
                provider=provider, actor=actor, dataset=dataset,
            )
        except TrainingFileInvalid as exc:
            raise exc.advised(
                f"The audit of dataset #{dataset.pk} lists every problem; fix them and upload the file as a new dataset"
            ) from None


# --- creating a job -------------------------------------------------------------------------------


def estimate_job_cost(*, base_model: str, training_file: TrainingFile, hyperparameters: dict[str, Any]) -> tuple[int, Decimal]:
    """(training tokens, dollars) a job is expected to cost at the prices in force: file tokens ×
    epochs (or steps × tokens per step) at the base model's training price, at least the minimum fee."""
    tokens = rules.estimate_training_tokens(
        file_tokens=training_file.estimated_tokens,
        epochs=hyperparameters.get("epochs"),
        training_steps=hyperparameters.get("training_steps"),
    )
    try:
        return tokens, fine_tuning_cost(model=base_model, training_tokens=tokens)
    except NotFound as exc:
        raise Conflict(
            f"cannot estimate what fine-tuning {base_model} costs, so cannot check it against the budget: {exc.message}"
        ) from None


@transaction.atomic
def _job_insert(
    *,
    agent: Agent,
    training_file: TrainingFile,
    validation_file: TrainingFile | None,
    base_model: str | None,
    hyperparameters: dict[str, Any] | None,
    suffix: str,
    auto_start: bool,
    actor: Actor,
    override_reason: str | None,
) -> FineTuningJob:
    require_permission(actor=actor, permission="models_app.add_finetuningjob", action="create fine-tuning jobs")
    if training_file.agent_id != agent.pk:
        raise InvalidInput(f"training_file: {training_file.filename} was uploaded for agent '{training_file.agent.slug}', not '{agent.slug}'")
    if training_file.purpose != TrainingFilePurpose.TRAINING:
        raise InvalidInput(f"training_file: {training_file.filename} was uploaded for validation, not training")
    if validation_file is not None:
        if validation_file.purpose != TrainingFilePurpose.VALIDATION:
            raise InvalidInput(f"validation_file: {validation_file.filename} was uploaded for training, not validation")
        if validation_file.agent_id != agent.pk or validation_file.provider_id != training_file.provider_id:
            raise InvalidInput("validation_file: it must belong to the same agent and provider as the training file")
        if validation_file.sha256 == training_file.sha256:
            raise InvalidInput("validation_file: it is the same file as the training file; hold some samples out")
    hyperparameters = dict(hyperparameters or {})
    problems = rules.hyperparameter_problems(hyperparameters)
    if problems:
        raise InvalidInput("hyperparameters: " + "; ".join(problems))
    suffix = (suffix or "").strip()
    if len(suffix) > rules.MAX_SUFFIX_LENGTH or not all(c.isalnum() or c in "-_" for c in suffix):
        raise InvalidInput(f"suffix: at most {rules.MAX_SUFFIX_LENGTH} characters of letters, digits, - and _")
    if not base_model:
        version = baseline_version(agent=agent)
        if version is None:
            raise InvalidInput(f"base_model: agent '{agent.slug}' has no baseline to take it from; name one")
        base_model = version.base_model
    _, estimate = estimate_job_cost(base_model=base_model, training_file=training_file, hyperparameters=hyperparameters)
    job = FineTuningJob(
        agent=agent,
        provider=training_file.provider,
        base_model=base_model,
        training_file=training_file,
        validation_file=validation_file,
        hyperparameters=hyperparameters,
        suffix=suffix,
        auto_start=auto_start,
        estimated_cost_usd=estimate,
        created_by=actor,
    )
    # Saved first because the hold points at the row; its history row is written once, below, when
    # the check has said whether the budget was overridden. A refusal rolls the row back.
    job.save_without_historical_record()
    check = budget_check(agent=agent, estimate_usd=estimate, actor=actor, override_reason=override_reason,
                         hold_for=job, operation=Operation.FINE_TUNING, hold_lasts=FINE_TUNING_HOLD_LASTS)
    job.budget_override_reason = (override_reason or "").strip() if check.overridden else ""
    _record_history(job, actor=actor, reason=f"created; estimated ${estimate}" + (" (budget overridden)" if check.overridden else ""))
    job.save()
    return job


def finetuning_job_create(
    *,
    agent: Agent,
    training_file: TrainingFile,
    validation_file: TrainingFile | None = None,
    base_model: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    suffix: str = "",
    auto_start: bool = False,
    actor: Actor = None,
    override_reason: str | None = None,
    submit: bool = True,
) -> FineTuningJob:
    """Estimate the job's cost, check it against the agent's budgets (costs.budget_check: refused
    with Conflict unless a person with costs.override_budget gives `override_reason`), save the row,
    and — unless `submit=False` — create it at the provider.

    The row is committed before the provider is asked, so a job is never lost: the returned job is
    QUEUED/VALIDATED… when the provider accepted it, REFUSED with the provider's answer when it
    refused, or NOT_CREATED with `last_error` when the provider could not be reached (submit again)."""
    job = _job_insert(
        agent=agent, training_file=training_file, validation_file=validation_file, base_model=base_model,
        hyperparameters=hyperparameters, suffix=suffix, auto_start=auto_start, actor=actor,
        override_reason=override_reason,
    )
    if submit:
        job = _submit(job_id=job.pk, actor=actor)
    return job


def finetuning_job_submit(*, job: FineTuningJob, actor: Actor = None) -> FineTuningJob:
    """Create a saved job at its provider (again, after a failed attempt)."""
    require_permission(actor=actor, permission="models_app.change_finetuningjob", action="submit fine-tuning jobs")
    return _submit(job_id=job.pk, actor=actor)


def _check_budget_again(job: FineTuningJob, *, actor: Actor) -> None:
    """A refused job's hold was released when it was refused; asking again is paid work again."""
    if job.estimated_cost_usd is None:
        raise InvalidInput(f"fine-tuning job #{job.pk} has no cost estimate to check against the budgets; create it again")
    budget_check(agent=job.agent, estimate_usd=job.estimated_cost_usd, actor=actor, hold_for=job,
                 operation=Operation.FINE_TUNING, hold_lasts=FINE_TUNING_HOLD_LASTS)


@transaction.atomic
def _submit(*, job_id: int, actor: Actor) -> FineTuningJob:
    # The lock is held across the provider call on purpose (see the module docstring).
    job = FineTuningJob.objects.select_for_update(of=("self",)).select_related(
        "agent", "provider", "training_file", "validation_file"
    ).get(pk=job_id)
    if job.provider_job_id or job.status not in (rules.NOT_CREATED, rules.REFUSED):
        raise Conflict(
            f"fine-tuning job #{job.pk} is already at the provider as {job.provider_job_id or '—'} ({job.status})"
        )
    if job.status == rules.REFUSED:
        _check_budget_again(job, actor=actor)
    client = fine_tuning_provider(job.provider)
    now = timezone.now()

    def create() -> FineTuningJobSnapshot:
        try:
            return client.create_job(
                base_model=job.base_model,
                training_file_ids=[job.training_file.provider_file_id],
                validation_file_ids=[job.validation_file.provider_file_id] if job.validation_file else [],
                hyperparameters=job.hyperparameters,
                suffix=job.suffix or None,
                auto_start=job.auto_start,
            )
        except TransientProviderError as error:
            if error.status_code == 429:
                raise  # refused before it was looked at: asking again cannot make a second job
            # A timeout or a 5xx may come after the provider created the job: asking again could
            # create (and bill) a second one, so it is not retried.
            raise _CreationUnanswered(error) from None

    try:
        snapshot = call_provider(create, policy=INTERACTIVE_RETRY)
    except (ProviderError, _CreationUnanswered) as failure:
        # Permanent: the provider refused this job (bad model, deprecated route, bad key…); its answer is
        # kept and the row is REFUSED. Transient: it stays NOT_CREATED and can be submitted again.
        error = failure.error if isinstance(failure, _CreationUnanswered) else failure
        _note_error(job, error, now=now)
        if isinstance(failure, _CreationUnanswered):
            job.last_error += (
                " — the provider may have created the job anyway: look for it in the provider's job list "
                "(the job's \"Adopt a provider job\" page in the admin, or manage.py fine_tune status --provider "
                f"{job.provider.name}) and adopt it (fine_tune adopt {job.pk} <provider job id>) before submitting again"
            )
        if not isinstance(error, TransientProviderError):
            advance(job, rules.REFUSED, transitions=FINE_TUNING_TRANSITIONS)
        _record_history(job, actor=actor, reason=f"submit failed: {error.message}")
        job.save()
        _release_budget_when_ended(job)
        return job
    job.provider_job_id = snapshot.id
    job.submitted_at = now
    _apply_snapshot(job, snapshot, now=now)
    _clear_error(job)
    _record_history(job, actor=actor, reason=f"created at the provider as {snapshot.id} ({snapshot.status})")
    job.save()
    return job


# --- start, cancel, sync --------------------------------------------------------------------------


def job_reload(job: FineTuningJob) -> FineTuningJob:
    return FineTuningJob.objects.select_related("agent", "provider", "training_file").get(pk=job.pk)


def finetuning_job_start(*, job: FineTuningJob, actor: Actor = None) -> FineTuningJob:
    """Start training a validated job (Conflict in any other state, or when the provider refuses)."""
    require_permission(actor=actor, permission="models_app.change_finetuningjob", action="start fine-tuning jobs")
    job = job_reload(job)
    if job.status not in rules.STARTABLE_STATUSES:
        raise Conflict(f"fine-tuning job #{job.pk} is {job.status}; only a queued or validated job can be started")
    return _ask_provider(
        job, operation="start", ask=lambda client: client.start_job(job_id=job.provider_job_id), actor=actor,
        reason="started", started=True,
    )


def finetuning_job_cancel(*, job: FineTuningJob, actor: Actor = None, reason: str = "") -> FineTuningJob:
    """Cancel a job. One not yet created at the provider is cancelled here only."""
    require_permission(actor=actor, permission="models_app.change_finetuningjob", action="cancel fine-tuning jobs")
    job = job_reload(job)
    why = f"cancelled{': ' + reason.strip() if reason.strip() else ''}"
    if job.status == rules.NOT_CREATED:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
            if job.status != rules.NOT_CREATED:
                raise Conflict(f"fine-tuning job #{job.pk} became {job.status} meanwhile; cancel it again")
            advance(job, rules.CANCELLED, transitions=FINE_TUNING_TRANSITIONS)
            job.finished_at = timezone.now()
            _record_history(job, actor=actor, reason=f"{why} (before it reached the provider)")
            job.save()
            _release_budget_when_ended(job)
            return job
    if job.status not in rules.CANCELLABLE_STATUSES:
        raise Conflict(f"fine-tuning job #{job.pk} is {job.status} and cannot be cancelled")
    return _ask_provider(
        job, operation="cancel", ask=lambda client: client.cancel_job(job_id=job.provider_job_id), actor=actor, reason=why
    )


def _ask_provider(
    job: FineTuningJob,
    *,
    operation: str,
    ask: Callable[[MistralProvider], FineTuningJobSnapshot],
    actor: Actor,
    reason: str,
    started: bool = False,
) -> FineTuningJob:
    """Ask the provider to start or cancel the job and write its answer on the row. A refusal is noted
    on the row and raised as the domain error a person reads."""
    client = fine_tuning_provider(job.provider)
    try:
        snapshot = call_provider(lambda: ask(client), policy=INTERACTIVE_RETRY)
    except ProviderError as error:
        _record_provider_error(job_id=job.pk, error=error, actor=actor, operation=operation)
        raise domain_error(error, action=f"{operation} fine-tuning job #{job.pk}") from None
    return _settle(job_id=job.pk, snapshot=snapshot, actor=actor, reason=reason, started=started)


def finetuning_job_sync(*, job: FineTuningJob, actor: Actor = None, retry_policy: RetryPolicy = SYNC_RETRY) -> FineTuningJob:
    """Ask the provider where the job is and write it down. On SUCCESS, register the fine-tuned
    model (fine_tuned, registered) and record the training cost on the ledger — exactly once.

    Provider trouble does not raise: a refusal that says the job is gone (404/410, e.g. Mistral's
    deprecated routes) marks the job REFUSED with the provider's answer; any other failure is kept in
    `last_error` and the next sync tries again. The returned job says what happened."""
    require_permission(actor=actor, permission="models_app.change_finetuningjob", action="sync fine-tuning jobs")
    job = job_reload(job)
    if not job.provider_job_id:
        raise Conflict(f"fine-tuning job #{job.pk} is not at the provider ({job.status}); submit it first")
    if job.status in rules.TERMINAL_STATUSES and (job.status != rules.SUCCESS or job.model_version_id):
        return job  # final at the provider, and everything it implies is done
    client = fine_tuning_provider(job.provider)
    try:
        snapshot = call_provider(lambda: client.get_job(job_id=job.provider_job_id), policy=retry_policy)
    except ProviderError as error:
        return _record_provider_error(job_id=job.pk, error=error, actor=actor, operation="sync")
    return _settle(job_id=job.pk, snapshot=snapshot, actor=actor, reason="synced")


@dataclass(frozen=True)
class ProviderJobListing:
    snapshot: FineTuningJobSnapshot
    job: FineTuningJob | None  # None: the provider has a job Genesis does not track


def finetuning_provider_jobs(*, provider: ProviderAccount, actor: Actor = None, page_size: int = 100) -> list[ProviderJobListing]:
    """The provider's own list of jobs, each matched with the row tracking it. A job without a row
    is one created outside Genesis — or one whose creation answer was lost (the process died between
    the provider's answer and our commit): a person can see it here and cancel it at the provider."""
    require_permission(actor=actor, permission="models_app.view_finetuningjob", action="list fine-tuning jobs")
    client = fine_tuning_provider(provider)
    try:
        snapshots = call_provider(lambda: client.list_jobs(page=0, page_size=page_size), policy=INTERACTIVE_RETRY)
    except ProviderError as error:
        raise domain_error(error, action=f"list the fine-tuning jobs of provider '{provider.name}'") from None
    tracked = {
        job.provider_job_id: job
        for job in FineTuningJob.objects.filter(provider=provider, provider_job_id__in=[s.id for s in snapshots])
        .select_related("agent", "provider")
    }
    return [ProviderJobListing(snapshot=snapshot, job=tracked.get(snapshot.id)) for snapshot in snapshots]


# --- writing what the provider said ---------------------------------------------------------------


def _note_error(job: FineTuningJob, error: ProviderError, *, now: datetime) -> None:
    job.last_error = error.message
    job.provider_answer = error.provider_answer or ""
    job.provider_answer_status = error.status_code
    job.last_error_at = now


def _clear_error(job: FineTuningJob) -> None:
    job.last_error = ""
    job.provider_answer = ""
    job.provider_answer_status = None
    job.last_error_at = None


class _CreationUnanswered(Exception):
    """A job creation that failed without a sure "not created" (see `_submit`)."""

    def __init__(self, error: TransientProviderError) -> None:
        super().__init__(error.message)
        self.error = error


@transaction.atomic
def _record_provider_error(*, job_id: int, error: ProviderError, actor: Actor, operation: str) -> FineTuningJob:
    job = FineTuningJob.objects.select_for_update(of=("self",)).select_related("agent", "provider").get(pk=job_id)
    _note_error(job, error, now=timezone.now())
    gone = isinstance(error, ProviderRefused) and error.status_code in rules.GONE_HTTP_STATUSES
    if gone:
        # The provider will not say anything about this job any more: mark it, keep its last known
        # provider status and the answer, so it is visible and not silently polled forever.
        advance(job, rules.REFUSED, transitions=FINE_TUNING_TRANSITIONS)
        logger.warning("fine-tuning job #%s refused by provider '%s': %s", job.pk, job.provider.name, error.message)
    else:
        logger.warning("fine-tuning job #%s: %s failed: %s", job.pk, operation, error.message)
    _record_history(job, actor=actor, reason=f"{operation}: {'refused' if gone else 'failed'} ({error.status_code or 'no answer'})")
    job.save()
    _release_budget_when_ended(job)
    return job


def _release_budget_when_ended(job: FineTuningJob) -> None:
    """A job that ended — its training cost on the ledger when it succeeded — or that its provider
    refused to create holds no budget any more (submitting a refused job again holds it again). A job
    the provider stopped answering for (REFUSED after it was created) may still be training: it keeps
    its hold until the hold expires."""
    succeeded_and_charged = job.status == rules.SUCCESS and job.model_version_id is not None
    ended_unpaid = job.status in rules.TERMINAL_STATUSES and job.status != rules.SUCCESS
    never_created = job.status == rules.REFUSED and not job.provider_job_id
    if succeeded_and_charged or ended_unpaid or never_created:
        cost_hold_release(source=job)


def _events_json(snapshot: FineTuningJobSnapshot) -> list[dict[str, Any]]:
    return [
        {"name": event.name, "created_at": event.created_at.isoformat(), "data": event.data}
        for event in sorted(snapshot.events, key=lambda event: event.created_at)
    ]


def _checkpoints_json(snapshot: FineTuningJobSnapshot) -> list[dict[str, Any]]:
    return [
        {"step_number": checkpoint.step_number, "created_at": checkpoint.created_at.isoformat(), "metrics": checkpoint.metrics}
        for checkpoint in sorted(snapshot.checkpoints, key=lambda checkpoint: checkpoint.step_number)
    ]


def _apply_snapshot(job: FineTuningJob, snapshot: FineTuningJobSnapshot, *, now: datetime) -> bool:
    """Copy the provider's view onto the row (not saved). False when the snapshot is older than
    what the row holds, in which case only the sync time is noted."""
    job.last_synced_at = now
    if rules.snapshot_is_stale(
        current_status=job.provider_status or None,
        current_modified_at=job.provider_modified_at,
        incoming_status=snapshot.status,
        incoming_modified_at=snapshot.modified_at,
    ):
        return False
    advance(job, snapshot.status, transitions=FINE_TUNING_TRANSITIONS)
    job.provider_status = snapshot.status
    job.provider_modified_at = snapshot.modified_at
    if snapshot.trained_tokens is not None:
        job.trained_tokens = snapshot.trained_tokens
    if snapshot.cost is not None:
        job.cost_usd = to_ledger_amount(snapshot.cost)  # what the column stores, so the row reads the same
        job.cost_currency = (snapshot.cost_currency or "").upper()
    if snapshot.fine_tuned_model:
        job.fine_tuned_model = snapshot.fine_tuned_model
    # Creation answers carry no events or checkpoints; keep what an earlier detailed answer said.
    if snapshot.events:
        job.events = _events_json(snapshot)
    if snapshot.checkpoints:
        job.checkpoints = _checkpoints_json(snapshot)
    job.provider_snapshot = snapshot.raw
    if snapshot.status == rules.RUNNING and job.started_at is None:
        job.started_at = now
    if snapshot.status in rules.TERMINAL_STATUSES and job.finished_at is None:
        job.finished_at = now
    return True


TRACKED_FIELDS = ("status", "provider_status", "fine_tuned_model", "model_version_id", "cost_usd", "last_error", "provider_answer")


@transaction.atomic
def _settle(*, job_id: int, snapshot: FineTuningJobSnapshot, actor: Actor, reason: str, started: bool = False) -> FineTuningJob:
    """Write a snapshot under the row lock and, on SUCCESS, do what success implies (once)."""
    job = FineTuningJob.objects.select_for_update(of=("self",)).select_related("agent", "provider", "training_file").get(pk=job_id)
    return settle_locked(job, snapshot=snapshot, actor=actor, reason=reason, started=started)


def settle_locked(
    job: FineTuningJob, *, snapshot: FineTuningJobSnapshot, actor: Actor, reason: str, started: bool = False,
    before: dict[str, Any] | None = None,
) -> FineTuningJob:
    """`_settle` for a row the caller has locked (and perhaps changed: `before` is what it was)."""
    if before is None:
        before = {name: getattr(job, name) for name in TRACKED_FIELDS}
    now = timezone.now()
    applied = _apply_snapshot(job, snapshot, now=now)
    if applied:
        _clear_error(job)
    if started and job.started_at is None:
        job.started_at = now
    if job.status == rules.SUCCESS and job.model_version_id is None:
        _register_fine_tuned_model(job, now=now)
    changed = [name for name in TRACKED_FIELDS if getattr(job, name) != before[name]]
    if not changed and not started:
        # Progress only (trained tokens, checkpoints, the sync time): no history row every minute.
        job.skip_history_when_saving = True
    else:
        transitions = f"{before['status']} → {job.status}" if before["status"] != job.status else job.status
        _record_history(job, actor=actor, reason=f"{reason}: {transitions}")
    job.save()
    _release_budget_when_ended(job)
    return job


def _register_fine_tuned_model(job: FineTuningJob, *, now: datetime) -> None:
    """Register the model and charge the ledger, both or neither (a savepoint): when either fails
    the job stays SUCCESS without a version, the error is noted, and the next sync tries again."""
    if not job.fine_tuned_model:
        job.last_error = "the provider reports SUCCESS but names no fine-tuned model; the next sync asks again"
        job.last_error_at = now
        return
    try:
        with transaction.atomic():
            version = model_version_register(
                agent=job.agent,
                provider=job.provider,
                model_id=job.fine_tuned_model,
                base_model=job.base_model,
                kind=ModelKind.FINE_TUNED,
                actor=None,  # the system registers what the job produced; the job records who started it
                reason=(
                    f"fine-tuned by job #{job.pk} ({job.provider_job_id}) on {job.training_file.filename}"
                    + (f", started by {job.created_by}" if job.created_by_id else "")
                ),
            )
            if FineTuningJob.objects.filter(model_version=version).exclude(pk=job.pk).exists():
                raise Conflict(f"model {version.model_id} is already registered from another fine-tuning job")
            _record_training_cost(job, version=version, now=now)
    except DomainError as exc:
        job.last_error = f"the job succeeded but its model could not be registered: {exc.message}; the next sync tries again"
        job.last_error_at = now
        logger.error("fine-tuning job #%s: %s", job.pk, job.last_error)
        return
    job.model_version = version
    job.cost_recorded_at = now


def _record_training_cost(job: FineTuningJob, *, version: ModelVersion, now: datetime) -> None:
    """The provider's reported cost when it is in dollars, else the trained tokens at our prices."""
    record = partial(
        cost_record,
        agent=job.agent,
        operation=Operation.FINE_TUNING,
        idempotency_key=ledger_key(job),
        model=version.model_id,
        base_model=job.base_model,
        tokens=job.trained_tokens,
        source=f"fine-tuning job {job.provider_job_id} ({job.provider.name})",
        source_object=job,
        actor=None,
        occurred_at=now,
    )
    if job.cost_usd is not None and job.cost_currency in ("", "USD"):
        record(amount_usd=job.cost_usd, note="cost reported by the provider")
    elif job.trained_tokens is not None:
        currency = f" (the provider reported {job.cost_usd} {job.cost_currency})" if job.cost_usd is not None else ""
        record(note=f"computed from {job.trained_tokens} trained tokens at the price table{currency}")
    else:
        raise InvalidInput("the provider reported neither a cost nor trained tokens for the job")
