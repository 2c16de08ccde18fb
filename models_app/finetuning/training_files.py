"""Training files: check a chat JSONL file line by line and upload it to the provider for an agent
(or upload an audited dataset), reusing an earlier upload of the same bytes while the provider still
has it. The jobs trained on them are models_app/finetuning/services.py's.

A provider file id is the provider's promise about one file. A provider that lost its files (a
restarted simulator) may answer "not found" for an id, or hand an id out again: an earlier upload is
reused only after the provider confirms it still has it, and a new upload whose id another row holds
is refused rather than taken for that row's file.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from typing import IO

from django.db import transaction
from django.db.models import Q

from audits import formats
from audits.models import AuditRun, AuditStatus, Dataset, DatasetStatus
from audits.report import audit_file
from audits.services import dataset_file_open, dataset_record_audit
from audits.wording import counted
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from genesis.permissions import Actor, require_permission
from models_app.finetuning import rules
from models_app.finetuning.models import TrainingFile, TrainingFilePurpose
from models_app.finetuning.provider_calls import (
    INTERACTIVE_RETRY,
    call_provider,
    default_provider_account,
    domain_error,
    fine_tuning_provider,
    fine_tuning_routes_missing,
)
from models_app.providers.base import UploadedFile
from models_app.providers.destinations import MISTRAL_DEFAULT_URL
from models_app.providers.errors import ProviderAnswerTooLarge, ProviderError, ProviderRefused
from models_app.providers.mistral import MistralProvider
from models_app.registry.models import Agent, ProviderAccount

MAX_REPORTED_PROBLEMS = 20
COPY_CHUNK_BYTES = 1024 * 1024
AUDIT_OVERRIDE_PERMISSION = "models_app.override_training_audit"


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
    audit_override_reason: str | None = None,
    provider_file_id: str = "",
) -> TrainingFile:
    """Check a chat JSONL file line by line and against its audit, then upload it to the provider for `agent`.

    The file is linked to `dataset` (an audits.Dataset with the same bytes), or else to the newest
    ready dataset of the agent (or of no agent) with the same sha256, so a model's lineage reaches
    the audit of the data it was trained on.

    `content` is read in chunks into a temporary file, so the check never holds the whole file; the
    upload itself hands the bytes to the SDK. A file with any bad line is refused with every problem
    located (TrainingFileInvalid), before the provider sees it. Bytes no finished audit knows are
    audited now (kept as a dataset); an audit with PII is refused (training_data_gate) unless a person
    who may gives `audit_override_reason`. The same bytes uploaded again for the same agent, provider
    and purpose return the earlier upload instead of a second copy.

    `provider_file_id`: the provider already holds these bytes under that id, but no row does — they were
    uploaded after the backup the database was restored from. Nothing is uploaded: the provider is asked
    for the file, and its content, downloaded, must be these bytes (sha256) — the audit above is of them —
    before the row records it, so a job the provider ran on it can be adopted
    (docs/runbooks/backup-restore.md)."""
    require_permission(actor=actor, permission="models_app.add_trainingfile", action="upload training files")
    if purpose not in TrainingFilePurpose.values:
        raise InvalidInput(f"purpose: '{purpose}' is not one of {', '.join(TrainingFilePurpose.values)}")
    filename = (filename or "").strip() or "training.jsonl"
    account = provider or default_provider_account(agent=agent)
    client = fine_tuning_provider(account)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as spool:
        while chunk := content.read(COPY_CHUNK_BYTES):
            spool.write(chunk)
        scanned = _scan_training_file(spool)
        _refuse_invalid_lines(scanned, filename=filename)
        if dataset is not None and dataset.sha256 and dataset.sha256 != scanned.sha256:
            raise InvalidInput(f"dataset: #{dataset.pk} holds other bytes than {filename} (sha256 differs)")
        dataset = dataset or _dataset_with_bytes(agent=agent, sha256=scanned.sha256)
        audit = _audited(spool, agent=agent, filename=filename, purpose=purpose, actor=actor, dataset=dataset)
        dataset = audit.dataset
        training_data_gate(audit=audit, filename=filename, actor=actor, override_reason=audit_override_reason)
        if provider_file_id:
            uploaded = _file_at_provider(client, account=account, filename=filename, file_id=provider_file_id, scanned=scanned)
        else:
            existing = _earlier_upload(agent=agent, account=account, sha256=scanned.sha256, purpose=purpose, dataset=dataset)
            if existing is not None and _still_at_provider(client, existing):
                return existing
            spool.seek(0)
            uploaded = _upload(client, account=account, filename=filename, payload=spool.read())
    return _record_upload(uploaded, account=account, agent=agent, filename=filename, purpose=purpose, scanned=scanned,
                          actor=actor, dataset=dataset, named_by_person=bool(provider_file_id))


@transaction.atomic
def _record_upload(
    uploaded: UploadedFile, *, account: ProviderAccount, agent: Agent, filename: str, purpose: str,
    scanned: _ScannedFile, actor: Actor, dataset: Dataset | None, named_by_person: bool = False,
) -> TrainingFile:
    """The row of a file the provider accepted; refused when another file's row holds the id it gave.
    `named_by_person`: the id is the one a person gave (`provider_file_id`), not one the provider just
    handed out — another row holding it is then that row's record of the same file, not a provider's
    mistake."""
    training_file, created = TrainingFile.objects.get_or_create(
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
    if not created and (training_file.agent_id, training_file.sha256, training_file.purpose) != (agent.pk, scanned.sha256, purpose):
        if named_by_person:
            raise Conflict(
                f"{filename} ({agent.slug}, {purpose}): training file #{training_file.pk} ({training_file.filename}, "
                f"{training_file.agent.slug}, {training_file.purpose}) already records provider file {uploaded.id}, and "
                "a provider file is recorded once. Nothing was recorded: train on that training file, or upload "
                f"{filename} without naming a provider file for {agent.slug} ({purpose})"
            )
        raise Conflict(
            f"{filename} ({agent.slug}, {purpose}): provider '{account.name}' gave it the file id {uploaded.id}, "
            f"which training file #{training_file.pk} ({training_file.filename}, {training_file.agent.slug}, "
            f"{training_file.purpose}, uploaded {training_file.uploaded_at:%Y-%m-%d %H:%M}) already holds. A provider "
            "must not hand out an id twice: it has probably lost its earlier files (a restarted simulator forgets "
            f"them). Nothing was recorded, so neither file is mixed up with the other; check provider "
            f"'{account.name}' and upload again"
        )
    return training_file


def provider_lost_file(client: MistralProvider, training_file: TrainingFile) -> bool:
    """True when the provider answers "not found" for the file it gave `training_file`'s id to (it
    lost it: a restarted simulator forgets its files). Any other failure is raised (ProviderError)."""
    try:
        call_provider(lambda: client.retrieve_file(file_id=training_file.provider_file_id), policy=INTERACTIVE_RETRY)
    except ProviderRefused as error:
        if error.status_code in rules.GONE_HTTP_STATUSES:
            return True
        raise
    return False


def _still_at_provider(client: MistralProvider, training_file: TrainingFile) -> bool:
    try:
        return not provider_lost_file(client, training_file)
    except ProviderError as error:
        raise domain_error(error, action=f"look up {training_file.filename} at provider '{training_file.provider.name}'") from None


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
        if error.status_code in rules.ROUTE_MISSING_HTTP_STATUSES:
            # Not the file's fault: the account has no fine-tuning at all.
            raise Conflict(fine_tuning_routes_missing(
                account, method="POST", path="/v1/files", error=error,
                then=f"upload {filename} there (fine_tune upload --provider NAME, or choose that account in the form)",
            )) from None
        raise Conflict(
            f"{filename}: provider '{account.name}' refused the file"
            + (f": {error.provider_answer}" if error.provider_answer else f": {error.message}")
        ) from None
    except ProviderError as error:
        raise domain_error(error, action=f"upload {filename} to provider '{account.name}'") from None


def _file_at_provider(
    client: MistralProvider, *, account: ProviderAccount, filename: str, file_id: str, scanned: _ScannedFile
) -> UploadedFile:
    """The provider's file `file_id`, once its content is known to be the bytes of `filename`: the file's
    size and line count as the provider reports them first (a cheap refusal), then its content,
    downloaded and compared by sha256 — the audit of `filename` is what the row vouches for, and a file
    of the same size can hold other text (PII no audit read). A provider that cannot serve the content
    is refused: the file is never recorded unverified."""
    try:
        stored = call_provider(lambda: client.retrieve_file(file_id=file_id), policy=INTERACTIVE_RETRY)
    except ProviderRefused as error:
        if error.status_code in rules.GONE_HTTP_STATUSES:
            raise NotFound(f"provider '{account.name}' has no file '{file_id}'; upload {filename} without naming a provider file") from None
        raise domain_error(error, action=f"look up file {file_id} at provider '{account.name}'") from None
    except ProviderError as error:
        raise domain_error(error, action=f"look up file {file_id} at provider '{account.name}'") from None
    if stored.size_bytes != scanned.size_bytes or (stored.num_lines is not None and stored.num_lines != scanned.line_count):
        lines = f", {counted(stored.num_lines, 'line')}" if stored.num_lines is not None else ""
        raise Conflict(
            f"provider file {file_id} ({stored.filename}: {stored.size_bytes} bytes{lines}) does not hold the bytes of "
            f"{filename} ({scanned.size_bytes} bytes, {counted(scanned.line_count, 'line')}); give the file it was "
            "uploaded from"
        )
    held = _content_at_provider(client, account=account, filename=filename, file_id=file_id, scanned=scanned)
    if held != scanned.sha256:
        raise Conflict(
            f"provider file {file_id} holds other bytes than {filename}: sha256 {held[:12]}… at provider "
            f"'{account.name}', {scanned.sha256[:12]}… in {filename} (same size and line count). The audit of "
            f"{filename} does not describe that file, so it is not recorded; give the file it was uploaded from, or "
            f"upload {filename} without naming a provider file and train on that"
        )
    return stored


# A file's content answer is read up to its expected size and this much more: enough to see that it is
# larger, without reading a provider's larger file whole for nothing.
CONTENT_SLACK_BYTES = 1024


def _content_at_provider(
    client: MistralProvider, *, account: ProviderAccount, filename: str, file_id: str, scanned: _ScannedFile
) -> str:
    """The sha256 of the content the provider holds under `file_id` (GET /v1/files/{id}/content), or a
    refusal saying why it cannot be compared with `filename` and what to do instead."""
    unverified = (
        f"so Genesis cannot check that it holds the bytes of {filename}, and records nothing unverified. Upload "
        f"{filename} without naming a provider file and train again on that upload, or ask the provider for the "
        f"content of file {file_id} and compare it with {filename}"
    )
    try:
        content = call_provider(
            lambda: client.download_file(file_id=file_id, max_bytes=scanned.size_bytes + CONTENT_SLACK_BYTES),
            policy=INTERACTIVE_RETRY,
        )
    except ProviderAnswerTooLarge as error:
        raise Conflict(
            f"provider file {file_id} holds other bytes than {filename}: its content is more than {error.limit_bytes} "
            f"bytes, {filename} has {scanned.size_bytes}; give the file it was uploaded from"
        ) from None
    except ProviderRefused as error:
        # A route it does not serve (404/405/501), or a refusal to hand out this file's content (a provider
        # may keep training files to itself): either way, nothing to compare.
        base = (account.base_url or MISTRAL_DEFAULT_URL).rstrip("/")
        said = f": {error.provider_answer}" if error.provider_answer else ""
        raise Conflict(
            f"provider '{account.name}' does not serve the content of file {file_id} (GET {base}/v1/files/{file_id}"
            f"/content answered {error.status_code}{said}), {unverified}"
        ) from None
    except ProviderError as error:
        raise domain_error(error, action=f"download file {file_id} from provider '{account.name}'") from None
    return hashlib.sha256(content).hexdigest()


def _dataset_with_bytes(*, agent: Agent, sha256: str) -> Dataset | None:
    return (
        Dataset.objects.filter(sha256=sha256, status=DatasetStatus.READY)
        .filter(Q(agent=agent) | Q(agent__isnull=True))
        .order_by("-created_at", "-pk")
        .first()
    )


def training_file_from_dataset(
    *, dataset: Dataset, actor: Actor = None, provider: ProviderAccount | None = None, audit_override_reason: str | None = None
) -> TrainingFile:
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
    with dataset_file_open(dataset=dataset) as content:
        try:
            return training_file_upload(
                agent=agent, content=content, filename=dataset.original_name, purpose=dataset.purpose,
                provider=provider, actor=actor, dataset=dataset, audit_override_reason=audit_override_reason,
            )
        except TrainingFileInvalid as exc:
            raise exc.advised(
                f"The audit of dataset #{dataset.pk} lists every problem; fix them and upload the file as a new dataset"
            ) from None


# --- the training-data audit gate ---------------------------------------------------------------------


def training_file_audit(training_file: TrainingFile) -> AuditRun | None:
    """The newest finished audit of the bytes a training file holds (through its dataset), or None.
    Not the dataset's latest audit: an "Audit again" still queued or one that failed would otherwise
    switch the gate off for data whose finished audit found PII."""
    if training_file.dataset_id is None:
        return None
    return (AuditRun.objects.filter(dataset_id=training_file.dataset_id, status=AuditStatus.SUCCEEDED)
            .order_by("-finished_at", "-pk").first())


def training_data_gate(
    *, audit: AuditRun, filename: str, actor: Actor, override_reason: str | None
) -> rules.TrainingDataFindings:
    """Apply the rule (rules.training_data_findings) to a file's audit: blocking findings refuse
    (Conflict, code audit_findings) with what to do, unless a person holding
    models_app.override_training_audit gives a reason. Returns the findings (the warnings to show)."""
    findings = rules.training_data_findings(audit.report or {})
    if not findings.blocking:
        return findings
    found = " and ".join(findings.blocking)
    if not (override_reason or "").strip():
        raise Conflict(
            f"{filename}: its audit (dataset #{audit.dataset_id}, audit #{audit.pk}) found {found}, so fine-tuning on it "
            f"is refused. Train on a scrubbed copy (admin › Training-data audits › Datasets › #{audit.dataset_id} › "
            f"\"Scrub (placeholders)\", or manage.py audit_dataset {filename} --scrub OUT) and fix any format errors; "
            f"or give a reason to go ahead anyway (needs the permission '{AUDIT_OVERRIDE_PERMISSION}')",
            code="audit_findings",
        )
    if actor is None:
        raise PermissionDenied(
            f"an override of the training-data audit needs a person: run it as a user with '{AUDIT_OVERRIDE_PERMISSION}'"
        )
    require_permission(actor=actor, permission=AUDIT_OVERRIDE_PERMISSION,
                       action=f"fine-tune on {filename}, whose audit found {found} (an override)")
    return findings


def _audited(spool: IO[bytes], *, agent: Agent, filename: str, purpose: str, actor: Actor, dataset: Dataset | None) -> AuditRun:
    """The finished audit of these bytes: `dataset`'s, or one made now and kept as a dataset (so the
    job's page and the model's lineage show it) — the audit core is fast on a training file."""
    audit = dataset.latest_audit if dataset is not None else None
    if audit is not None and audit.status == AuditStatus.SUCCEEDED:
        return audit
    spool.flush()
    report = audit_file(spool.name)
    # Recorded by the system: the person uploads a training file, which may not let them add datasets.
    audit = dataset_record_audit(path=spool.name, report=report, purpose=purpose, agent=agent, actor=None,
                                 via=f"fine-tuning upload by {actor or 'the system'}", original_name=filename)
    audit.dataset.latest_audit = audit  # written to the row by the service; the instance follows
    return audit
