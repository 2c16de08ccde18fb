"""Every write of fine-tuning jobs: create / submit / start / cancel a job and sync it with its
provider — which, on SUCCESS, registers the fine-tuned model and puts the cost on the ledger exactly
once. Training files are uploaded by models_app/finetuning/training_files.py; adopting the provider
job a lost creation answer left untracked is models_app/finetuning/adoption.py's.

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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from costs.models import Operation
from costs.pricing import to_ledger_amount
from costs.selectors import fine_tuning_cost
from costs.services import budget_check, cost_hold_release, cost_record
from genesis.errors import Conflict, DomainError, InvalidInput, NotFound
from genesis.history import record_history
from genesis.jobs import advance
from genesis.permissions import Actor, require_permission
from models_app.finetuning import rules
from models_app.finetuning.models import FINE_TUNING_TRANSITIONS, FineTuningJob, TrainingFile, TrainingFilePurpose
from models_app.finetuning.provider_calls import (
    INTERACTIVE_RETRY,
    SYNC_RETRY,
    call_provider,
    domain_error,
    fine_tuning_provider,
)
from models_app.finetuning.training_files import provider_lost_file, training_data_gate, training_file_audit
from models_app.providers.base import FineTuningJobSnapshot
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
LEDGER_KEY_PREFIX = "finetune:"


def ledger_key(job: FineTuningJob) -> str:
    return f"{LEDGER_KEY_PREFIX}{job.pk}"


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


def _check_files(*, agent: Agent, training_file: TrainingFile, validation_file: TrainingFile | None) -> None:
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
    audit_override_reason: str | None,
) -> FineTuningJob:
    require_permission(actor=actor, permission="models_app.add_finetuningjob", action="create fine-tuning jobs")
    _check_files(agent=agent, training_file=training_file, validation_file=validation_file)
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
    audit_overridden = _check_training_data(training_file, validation_file, actor=actor, override_reason=audit_override_reason)
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
        audit_override_reason=(audit_override_reason or "").strip() if audit_overridden else "",
    )
    # Saved first because the hold points at the row; its history row is written once, below, when
    # the check has said whether the budget was overridden. A refusal rolls the row back.
    job.save_without_historical_record()
    check = budget_check(agent=agent, estimate_usd=estimate, actor=actor, override_reason=override_reason,
                         hold_for=job, operation=Operation.FINE_TUNING, hold_lasts=FINE_TUNING_HOLD_LASTS)
    job.budget_override_reason = (override_reason or "").strip() if check.overridden else ""
    record_history(job, actor=actor, reason=f"created; estimated ${estimate}" + (" (budget overridden)" if check.overridden else ""))
    job.save()
    return job


def _check_training_data(
    *files: TrainingFile | None, actor: Actor, override_reason: str | None
) -> bool:
    """The audit gate (training_data_gate) on each file that has a finished audit; True when a
    person's reason let blocking findings through. A file uploaded before audits were kept has none."""
    overridden = False
    for training_file in files:
        audit = training_file_audit(training_file) if training_file is not None else None
        if training_file is not None and audit is not None:
            findings = training_data_gate(audit=audit, filename=training_file.filename, actor=actor, override_reason=override_reason)
            overridden = overridden or bool(findings.blocking)
    return overridden


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
    audit_override_reason: str | None = None,
) -> FineTuningJob:
    """Estimate the job's cost, check it against the agent's budgets (costs.budget_check: refused
    with Conflict unless a person with costs.override_budget gives `override_reason`) and the files'
    audits against the training-data rule (refused on PII or format errors unless a person with
    models_app.override_training_audit gives `audit_override_reason`, kept on the row), save the row,
    and — unless `submit=False` — create it at the provider.

    The row is committed before the provider is asked, so a job is never lost: the returned job is
    QUEUED/VALIDATED… when the provider accepted it, REFUSED with the provider's answer when it
    refused (and, when it no longer has the training file, how to upload it again), or NOT_CREATED
    with `last_error` when the provider could not be reached (submit again)."""
    job = _job_insert(
        agent=agent, training_file=training_file, validation_file=validation_file, base_model=base_model,
        hyperparameters=hyperparameters, suffix=suffix, auto_start=auto_start, actor=actor,
        override_reason=override_reason, audit_override_reason=audit_override_reason,
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
        return _record_failed_creation(job, failure, client=client, actor=actor, now=now)
    holder = FineTuningJob.objects.filter(provider=job.provider, provider_job_id=snapshot.id).exclude(pk=job.pk).first()
    if holder is not None:
        return _refuse_reused_job_id(job, snapshot=snapshot, holder=holder, actor=actor, now=now)
    job.provider_job_id = snapshot.id
    job.submitted_at = now
    _apply_snapshot(job, snapshot, now=now)
    _clear_error(job)
    record_history(job, actor=actor, reason=f"created at the provider as {snapshot.id} ({snapshot.status})")
    job.save()
    return job


def _record_failed_creation(
    job: FineTuningJob, failure: ProviderError | _CreationUnanswered, *, client: MistralProvider, actor: Actor, now: datetime
) -> FineTuningJob:
    """Permanent: the provider refused this job (bad model, deprecated route, bad key, a file it lost…);
    its answer is kept and the row is REFUSED. Transient: it stays NOT_CREATED and can be submitted again."""
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
        job.last_error += _lost_files_advice(client, job)
    record_history(job, actor=actor, reason=f"submit failed: {error.message}")
    job.save()
    _release_budget_when_ended(job)
    return job


def _lost_files_advice(client: MistralProvider, job: FineTuningJob) -> str:
    """After a refused creation: what to do when the provider no longer has the job's files (empty
    when it has them, or cannot say)."""
    advice = []
    for training_file in (job.training_file, job.validation_file):
        try:
            lost = training_file is not None and provider_lost_file(client, training_file)
        except ProviderError:
            lost = False
        if not lost or training_file is None:
            continue
        again = (
            f"choose its dataset #{training_file.dataset_id} again or upload the file again"
            if training_file.dataset_id else "upload the file again (fine_tune create --training PATH, or the form's upload)"
        )
        advice.append(
            f" — provider '{job.provider.name}' no longer has {training_file.filename} (training file #{training_file.pk}, "
            f"provider file {training_file.provider_file_id}; a restarted simulator forgets its files): create a new "
            f"job and {again}, which uploads it anew"
        )
    return "".join(advice)


def _refuse_reused_job_id(
    job: FineTuningJob, *, snapshot: FineTuningJobSnapshot, holder: FineTuningJob, actor: Actor, now: datetime
) -> FineTuningJob:
    """The provider answered the creation with a job id another row already tracks: a provider must
    never do that (it lost its jobs: a restarted simulator). The row does not take the id — two rows
    following one provider job would mix their models and costs up — so it is REFUSED and holds nothing."""
    job.last_error = (
        f"provider '{job.provider.name}' answered with job id {snapshot.id}, which job #{holder.pk} ({holder.status}) "
        "already tracks: the provider re-used a job id, so it has probably lost its earlier jobs (a restarted "
        "simulator forgets them). This job was not linked to that id. The provider may have started a job for it: "
        f"check its list (manage.py fine_tune status --provider {job.provider.name}) and cancel it there if unwanted"
    )
    job.provider_answer, job.provider_answer_status, job.last_error_at = "", None, now
    advance(job, rules.REFUSED, transitions=FINE_TUNING_TRANSITIONS)
    record_history(job, actor=actor, reason=f"submit refused: provider job id {snapshot.id} is job #{holder.pk}'s")
    job.save()
    _release_budget_when_ended(job)
    logger.warning("fine-tuning job #%s: %s", job.pk, job.last_error)
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
            record_history(job, actor=actor, reason=f"{why} (before it reached the provider)")
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

    Provider trouble does not raise: a refusal to answer for the job (404/410 of Mistral's retired
    routes, 501, a 400/422 "deprecated" — any refusal but of the key or a rate limit) marks the job
    REFUSED with the provider's answer and releases its budget hold; any other failure is kept in
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
    if snapshot.training_file_ids and job.training_file.provider_file_id not in snapshot.training_file_ids:
        # The provider lost this job and handed its id to another one (a restarted simulator): what it
        # says about that job must not become this row's status, model or cost.
        foreign = ProviderRefused(
            f"provider job {snapshot.id} now trains on {', '.join(snapshot.training_file_ids)}, not on this job's "
            f"{job.training_file.filename} ({job.training_file.provider_file_id}): the provider re-used the job id "
            "for another job, so it no longer answers for this one",
            provider=job.provider.name,
        )
        return _record_provider_error(job_id=job.pk, error=foreign, actor=actor, operation="sync", gone=True)
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
def _record_provider_error(
    *, job_id: int, error: ProviderError, actor: Actor, operation: str, gone: bool | None = None
) -> FineTuningJob:
    """Note the provider's error on the row; `gone` (by default: a refusal that ends the job's tracking,
    rules.job_refusal_ends_tracking) marks it REFUSED."""
    job = FineTuningJob.objects.select_for_update(of=("self",)).select_related("agent", "provider").get(pk=job_id)
    noted_before = (job.status, job.last_error)
    _note_error(job, error, now=timezone.now())
    if gone is None:
        gone = isinstance(error, ProviderRefused) and rules.job_refusal_ends_tracking(
            error.status_code, asked_to_act=operation in ("start", "cancel"))
    if gone:
        # The provider will not say anything about this job any more: mark it, keep its last known
        # provider status and the answer, so it is visible and not silently polled forever.
        advance(job, rules.REFUSED, transitions=FINE_TUNING_TRANSITIONS)
        logger.warning("fine-tuning job #%s refused by provider '%s': %s", job.pk, job.provider.name, error.message)
    else:
        logger.warning("fine-tuning job #%s: %s failed: %s", job.pk, operation, error.message)
    if (job.status, job.last_error) == noted_before:
        # The same failure again: beat syncs every minute, and a provider outage would write 1 440
        # identical history rows a day per job. The row still says when it last failed (last_error_at).
        job.save_without_historical_record()
    else:
        record_history(job, actor=actor, reason=f"{operation}: {'refused' if gone else 'failed'} ({error.status_code or 'no answer'})")
        job.save()
    _release_budget_when_ended(job)
    return job


def _release_budget_when_ended(job: FineTuningJob) -> None:
    """A job that ended — its training cost on the ledger when it succeeded — or that is REFUSED holds
    no budget any more (submitting a refused job again holds it again). REFUSED by any path: the
    provider refused to create it, or no longer knows it (a job it lost, a retired route) — nothing
    follows such a job, so its hold would only block other work until it expired. Should the provider
    answer for it again and it succeed, its cost still goes on the ledger at that sync."""
    succeeded_and_charged = job.status == rules.SUCCESS and job.model_version_id is not None
    ended_unpaid = job.status in rules.TERMINAL_STATUSES and job.status != rules.SUCCESS
    if succeeded_and_charged or ended_unpaid or job.status == rules.REFUSED:
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
        record_history(job, actor=actor, reason=f"{reason}: {transitions}")
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
    # The one line that says the job's result exists (its task's own line says only "SUCCESS"); once committed.
    transaction.on_commit(partial(
        logger.info, "fine-tuning job #%s succeeded: %s registered for %s as model version #%s",
        job.pk, version.model_id, job.agent.slug, version.pk,
    ))


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
