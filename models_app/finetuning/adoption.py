"""Adopting a provider job whose creation answer was lost: the job was created at the provider but its
id never reached us, so a person picks it from the provider's list and it is checked against the row
before it is tracked (and charged once, as if creation had answered)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from genesis.errors import Conflict, InvalidInput, NotFound
from genesis.integrity import UniqueKey, is_unique_violation
from genesis.permissions import Actor, require_permission
from models_app.finetuning import rules
from models_app.finetuning.models import FineTuningJob
from models_app.finetuning.provider_calls import INTERACTIVE_RETRY, call_provider, domain_error, fine_tuning_provider
from models_app.finetuning.services import TRACKED_FIELDS, finetuning_provider_jobs, job_reload, settle_locked
from models_app.providers.base import FineTuningJobSnapshot
from models_app.providers.errors import ProviderError, ProviderRefused

logger = logging.getLogger(__name__)

# Another row tracks the provider job already. Settling may also register the job's model and charge
# the ledger: their unique constraints refused are defects, not this conflict.
PROVIDER_JOB_TRACKED = UniqueKey.constraint(FineTuningJob, "unique_fine_tuning_job_per_provider")


HYPERPARAMETER_TOLERANCE = 1e-9  # the provider echoes floats through JSON; compare, not ==


def finetuning_job_adopt(*, job: FineTuningJob, provider_job_id: str, actor: Actor = None, reason: str = "") -> FineTuningJob:
    """Link a row still waiting for its creation answer (NOT_CREATED: a timeout or 5xx that may hide a
    job the provider did create) to that provider job, as if the creation had answered: the row takes
    the provider's id and status, beat's sync follows it from there, its budget hold stays until it
    ends, and on SUCCESS its model is registered and its cost charged once (`finetune:<pk>`).

    The provider is asked for the job first (its retrieve call, outside any transaction); the row is
    then checked again and written under its lock. Refused with NotFound when the provider has no such
    job, and Conflict when another row already tracks it, when this row is not waiting for a creation
    answer, or when the provider's job is not this row's (another base model, training or validation
    file, suffix, or a hyperparameter the row asked for)."""
    require_permission(actor=actor, permission="models_app.change_finetuningjob", action="adopt provider fine-tuning jobs")
    provider_job_id = (provider_job_id or "").strip()
    if not provider_job_id:
        raise InvalidInput("provider_job_id: give the provider's id of the job to adopt (from its job list)")
    job = job_reload(job)
    _check_adoptable(job, provider_job_id=provider_job_id)  # the cheap refusals, before the provider is asked
    client = fine_tuning_provider(job.provider)
    try:
        snapshot = call_provider(lambda: client.get_job(job_id=provider_job_id), policy=INTERACTIVE_RETRY)
    except ProviderRefused as error:
        if error.status_code == 404:
            raise NotFound(
                f"provider '{job.provider.name}' has no fine-tuning job '{provider_job_id}'; check the id in its job "
                f"list (manage.py fine_tune status --provider {job.provider.name}). If the provider really created "
                f"nothing, submit job #{job.pk} again instead"
            ) from None
        raise domain_error(error, action=f"look up fine-tuning job '{provider_job_id}' at provider '{job.provider.name}'") from None
    except ProviderError as error:
        raise domain_error(error, action=f"look up fine-tuning job '{provider_job_id}' at provider '{job.provider.name}'") from None
    mismatches = _adoption_mismatches(job, snapshot)
    if mismatches:
        raise Conflict(
            f"provider job {snapshot.id} is not the one job #{job.pk} asked for: {'; '.join(mismatches)}. "
            "Adopt the provider job that matches this row, or create a job row with that job's settings "
            "(fine_tune create … --no-submit) and adopt it there"
        )
    why = f"adopted provider job {snapshot.id}" + (f" ({reason.strip()})" if reason.strip() else "")
    try:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update(of=("self",)).select_related(
                "agent", "provider", "training_file"
            ).get(pk=job.pk)
            _check_adoptable(job, provider_job_id=snapshot.id)  # again: a submit or adoption may have won meanwhile
            before = {name: getattr(job, name) for name in TRACKED_FIELDS}
            job.provider_job_id = snapshot.id
            # When the provider created it, not when we learnt of it (unless the provider did not say).
            job.submitted_at = snapshot.created_at if snapshot.created_at.timestamp() > 0 else timezone.now()
            job = settle_locked(job, snapshot=snapshot, actor=actor, reason=why, before=before)
    except IntegrityError as exc:
        if not is_unique_violation(exc, PROVIDER_JOB_TRACKED):
            raise
        # Another row took the same provider job between our check and our write (the unique constraint).
        raise Conflict(_already_tracked_message(job, provider_job_id=snapshot.id)) from None
    logger.info("fine-tuning job #%s %s by %s: now %s", job.pk, why, actor or "the system", job.status)
    return job


@dataclass(frozen=True)
class AdoptionCandidate:
    snapshot: FineTuningJobSnapshot
    mismatches: list[str]  # empty: the provider job is what this row would have created

    @property
    def matches(self) -> bool:
        return not self.mismatches


def finetuning_adoption_candidates(*, job: FineTuningJob, actor: Actor = None) -> list[AdoptionCandidate]:
    """The provider's jobs no row tracks, each with how it differs from `job` — matching ones first,
    newest first within each — for a person choosing which one `job` should adopt."""
    listing = finetuning_provider_jobs(provider=job.provider, actor=actor)
    job = job_reload(job)
    candidates = [
        AdoptionCandidate(snapshot=item.snapshot, mismatches=_adoption_mismatches(job, item.snapshot))
        for item in listing
        if item.job is None
    ]
    candidates.sort(key=lambda candidate: candidate.snapshot.created_at, reverse=True)
    return sorted(candidates, key=lambda candidate: not candidate.matches)


def _already_tracked_message(job: FineTuningJob, *, provider_job_id: str) -> str:
    other = FineTuningJob.objects.filter(provider=job.provider, provider_job_id=provider_job_id).exclude(pk=job.pk).first()
    tracker = f"job #{other.pk} ({other.status})" if other else "another job row"
    return (
        f"provider job {provider_job_id} is already tracked by {tracker}; a provider job can be adopted by one row "
        f"only. Cancel job #{job.pk} if it is a leftover, or adopt a provider job no row tracks"
    )


def _check_adoptable(job: FineTuningJob, *, provider_job_id: str) -> None:
    if job.provider_job_id:
        raise Conflict(
            f"fine-tuning job #{job.pk} already tracks provider job {job.provider_job_id} ({job.status}); "
            "only a job whose creation was never answered (NOT_CREATED) can adopt one"
        )
    if job.status != rules.NOT_CREATED:
        raise Conflict(
            f"fine-tuning job #{job.pk} is {job.status}, not waiting for a creation answer; only a NOT_CREATED job can "
            "adopt a provider job. To track the provider's job, create a job row with its settings "
            "(fine_tune create … --no-submit) and adopt it there"
        )
    if FineTuningJob.objects.filter(provider=job.provider, provider_job_id=provider_job_id).exclude(pk=job.pk).exists():
        raise Conflict(_already_tracked_message(job, provider_job_id=provider_job_id))


def _adoption_mismatches(job: FineTuningJob, snapshot: FineTuningJobSnapshot) -> list[str]:
    """Where the provider's job differs from what the row would have created; empty when it matches.
    A training-file list or hyperparameter the provider does not report is not compared."""
    mismatches = []
    if snapshot.base_model != job.base_model:
        mismatches.append(f"base model {snapshot.base_model}, not {job.base_model}")
    if snapshot.training_file_ids and set(snapshot.training_file_ids) != {job.training_file.provider_file_id}:
        mismatches.append(
            f"training files {', '.join(snapshot.training_file_ids)}, not {job.training_file.provider_file_id}"
        )
    wanted_validation = {job.validation_file.provider_file_id} if job.validation_file is not None else set()
    if set(snapshot.validation_file_ids) != wanted_validation and (snapshot.validation_file_ids or wanted_validation):
        mismatches.append(
            f"validation files {', '.join(snapshot.validation_file_ids) or 'none'}, "
            f"not {', '.join(wanted_validation) or 'none'}"
        )
    if (snapshot.suffix or "") != (job.suffix or ""):
        mismatches.append(f"suffix '{snapshot.suffix or ''}', not '{job.suffix}'")
    for name, wanted in sorted(job.hyperparameters.items()):
        reported = snapshot.hyperparameters.get(name)
        if reported is None:
            continue
        try:
            same = abs(float(reported) - float(wanted)) <= HYPERPARAMETER_TOLERANCE * max(1.0, abs(float(wanted)))
        except (TypeError, ValueError):
            same = reported == wanted
        if not same:
            mismatches.append(f"{name} {reported}, not {wanted}")
    return mismatches
