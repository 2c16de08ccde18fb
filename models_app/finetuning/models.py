"""Fine-tuning: the training files uploaded for an agent, and the jobs trained on them.

A job is a row (GUIDE, "A background job is a row"): its status mirrors the provider's exactly, plus
NOT_CREATED (saved here, not yet accepted by the provider) and REFUSED (the provider refused to
create it, or no longer answers for it — its answer is kept in `provider_answer`). Beat's sync only
advances the row. Writes go through models_app/finetuning/services.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from audits.wording import counted
from genesis.validation import DecimalDigits
from models_app.finetuning import rules
from models_app.registry.models import Agent, ModelVersion, ProviderAccount

MONEY: DecimalDigits = {"max_digits": 16, "decimal_places": 6}  # the ledger's precision (micro-dollars)


class TrainingFilePurpose(models.TextChoices):
    TRAINING = "training"
    VALIDATION = "validation"


class TrainingFile(models.Model):
    """A chat JSONL file uploaded to a provider for an agent. The content lives at the provider; we
    keep what identifies it (provider file id, SHA-256) and what estimates cost (tokens)."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="training_files")
    provider = models.ForeignKey(ProviderAccount, on_delete=models.PROTECT, related_name="training_files")
    provider_file_id = models.CharField(max_length=100, help_text="The provider's id of the uploaded file.")
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=16, choices=TrainingFilePurpose.choices, default=TrainingFilePurpose.TRAINING)
    line_count = models.PositiveIntegerField(help_text="Samples (lines) in the file.")
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    estimated_tokens = models.BigIntegerField(help_text="About one token per four characters of sample text.")
    dataset = models.ForeignKey(
        "audits.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="training_files",
        help_text="The audited dataset these bytes came from (same sha256), so a model's lineage reaches its audit.",
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "provider_file_id"], name="unique_training_file_per_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.agent.slug}, {counted(self.line_count, 'line')})"


class FineTuningStatus(models.TextChoices):
    NOT_CREATED = rules.NOT_CREATED, "Not yet created at the provider"
    REFUSED = rules.REFUSED, "Refused by the provider"
    QUEUED = rules.QUEUED, "Queued"
    VALIDATING = rules.VALIDATING, "Validating"
    VALIDATED = rules.VALIDATED, "Validated (waiting for start)"
    RUNNING = rules.RUNNING, "Running"
    SUCCESS = rules.SUCCESS, "Success"
    FAILED = rules.FAILED, "Failed"
    FAILED_VALIDATION = rules.FAILED_VALIDATION, "Failed validation"
    CANCELLED = rules.CANCELLED, "Cancelled"
    CANCELLATION_REQUESTED = rules.CANCELLATION_REQUESTED, "Cancellation requested"


# The row mirrors the provider, so while the provider may still change the job any status it reports
# is a move (a repeated one included: a sync that finds nothing new). NOT_CREATED may also be cancelled
# here before it reaches the provider; a refused row may be submitted again or answered for again;
# REFUSED is reachable from every status because a provider may stop answering for any job (404/410).
# A terminal status is final at the provider: only the same status again (the sync that registers a
# succeeded job's model) or REFUSED.
_MIRRORED = frozenset(rules.PROVIDER_STATUSES) | {rules.REFUSED}
FINE_TUNING_TRANSITIONS: dict[str, frozenset[str]] = {
    rules.NOT_CREATED: _MIRRORED,
    rules.REFUSED: _MIRRORED,
    **{status: _MIRRORED for status in rules.MOVING_STATUSES},
    **{status: frozenset({status, rules.REFUSED}) for status in rules.TERMINAL_STATUSES},
}


class FineTuningJob(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="fine_tuning_jobs")
    provider = models.ForeignKey(ProviderAccount, on_delete=models.PROTECT, related_name="fine_tuning_jobs")
    provider_job_id = models.CharField(max_length=100, blank=True, help_text="Empty until the provider accepts the job.")
    base_model = models.CharField(max_length=120)
    training_file = models.ForeignKey(TrainingFile, on_delete=models.PROTECT, related_name="training_jobs")
    validation_file = models.ForeignKey(
        TrainingFile, null=True, blank=True, on_delete=models.PROTECT, related_name="validation_jobs"
    )
    hyperparameters = models.JSONField(default=dict, blank=True, help_text='e.g. {"epochs": 2, "learning_rate": 0.0001}')
    suffix = models.CharField(max_length=rules.MAX_SUFFIX_LENGTH, blank=True)
    auto_start = models.BooleanField(
        default=False, help_text="On: the provider starts training as soon as it has validated the file. Off: a person presses Start training."
    )

    status = models.CharField(
        max_length=32, choices=FineTuningStatus.choices, default=FineTuningStatus.NOT_CREATED, db_index=True
    )
    provider_status = models.CharField(
        max_length=32, blank=True, help_text="The last status the provider reported (kept when it later refuses)."
    )
    provider_modified_at = models.DateTimeField(null=True, blank=True)
    trained_tokens = models.BigIntegerField(null=True, blank=True)
    estimated_cost_usd = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Our estimate before creation, checked against the budgets."
    )
    cost_usd = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="As the provider reports it (its estimate until the job ends)."
    )
    cost_currency = models.CharField(max_length=8, blank=True)
    cost_recorded_at = models.DateTimeField(null=True, blank=True, help_text="When the cost went on the ledger.")
    fine_tuned_model = models.CharField(max_length=200, blank=True)
    model_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="fine_tuning_job",
        help_text="The version registered from this job's model; at most one, ever.",
    )
    events = models.JSONField(default=list, blank=True)
    checkpoints = models.JSONField(default=list, blank=True)
    provider_snapshot = models.JSONField(default=dict, blank=True, help_text="The provider's last answer about the job.")

    last_error = models.TextField(blank=True, help_text="What went wrong last; empty after a clean sync.")
    provider_answer = models.TextField(blank=True, help_text="The provider's own words when it last refused or failed.")
    provider_answer_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    budget_override_reason = models.TextField(blank=True)
    audit_override_reason = models.TextField(
        blank=True, help_text="Why it trains on data whose audit found PII or format errors (given by a person who may)."
    )

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Who changed what and when; the bulky provider copies are left out of the history rows.
    history = HistoricalRecords(excluded_fields=["events", "checkpoints", "provider_snapshot", "last_synced_at", "updated_at"])

    if TYPE_CHECKING:
        # Added by simple-history (which has no type information) to every model it tracks. Declared
        # for mypy only: a real class attribute would turn history off, simple-history tests hasattr().
        skip_history_when_saving: bool

        def save_without_historical_record(self, *args: Any, **kwargs: Any) -> None: ...

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "fine-tuning job"
        permissions = [("override_training_audit", "Can fine-tune on data whose audit found PII or format errors")]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_job_id"], condition=~Q(provider_job_id=""),
                name="unique_fine_tuning_job_per_provider",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.agent.slug} {self.base_model} ({self.status})"

    @property
    def is_moving(self) -> bool:
        return self.status in rules.MOVING_STATUSES
