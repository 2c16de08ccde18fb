"""Tables of the audits app: the JSONL datasets people upload (and the scrubbed or rebalanced copies
made from them), and the audit runs that read them.

Writes go through audits/services.py. Both tables are job rows as well as records: a derived dataset
is written by a worker (pending → ready | failed) and an audit run is done by a worker (queued →
running → succeeded | failed); the task only advances the row.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from audits.dedupe import DEFAULT_THRESHOLD
from genesis.jobs import WORKER_JOB_TRANSITIONS, WorkerJobStatus


class DatasetPurpose(models.TextChoices):
    TRAINING = "training"
    VALIDATION = "validation"
    BENCHMARK = "benchmark"


class DatasetOrigin(models.TextChoices):
    UPLOAD = "upload", "Uploaded"
    SCRUB = "scrub", "Scrubbed copy"
    REBALANCE = "rebalance", "Rebalanced copy"


class DatasetStatus(models.TextChoices):
    PENDING = "pending", "Being written"
    READY = "ready"
    FAILED = "failed"


# A derived dataset (scrubbed, rebalanced) is written by a worker: pending until its file is complete.
DATASET_TRANSITIONS: dict[str, frozenset[str]] = {
    DatasetStatus.PENDING: frozenset({DatasetStatus.READY, DatasetStatus.FAILED}),
    DatasetStatus.READY: frozenset(),
    DatasetStatus.FAILED: frozenset(),
}


class Dataset(models.Model):
    """A chat JSONL file kept under MEDIA_ROOT/datasets/. An uploaded file is ready at once; a scrubbed
    or rebalanced copy names its parent and is written by a worker. The file never changes once
    ready (its sha256 says so); a new version is a new dataset."""

    agent = models.ForeignKey(
        "models_app.Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="datasets"
    )
    purpose = models.CharField(max_length=16, choices=DatasetPurpose.choices, default=DatasetPurpose.TRAINING)
    origin = models.CharField(max_length=16, choices=DatasetOrigin.choices, default=DatasetOrigin.UPLOAD)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="derived",
        help_text="The dataset this one was scrubbed or rebalanced from.",
    )
    status = models.CharField(max_length=10, choices=DatasetStatus.choices, default=DatasetStatus.READY)
    file = models.FileField(upload_to="datasets/", max_length=300)
    original_name = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField(default=0)
    line_count = models.BigIntegerField(default=0, help_text="Physical lines; a last line without a newline counts.")
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    via = models.CharField(max_length=200, blank=True, help_text="How it arrived: admin, API key, command, worker.")
    created_at = models.DateTimeField(auto_now_add=True)
    # For derived datasets: what was asked, what the worker did.
    parameters = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Replacement counts, or the rebalance plan.")
    achieved_mix = models.JSONField(null=True, blank=True, help_text="Rebalanced copies: easy / medium / hard shares written.")
    shortfall = models.TextField(blank=True, help_text="Rebalanced copies: what the target mix lacked.")
    progress = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started writing this copy.")
    error = models.TextField(blank=True)
    latest_audit = models.ForeignKey(
        "AuditRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The newest audit run started for this dataset (kept here so lists need no subquery).",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        # Separate from view: the audit page shows masked samples, the file holds the raw PII.
        permissions = [("download_dataset", "Can download the dataset file (raw, with any PII in it)")]
        constraints = [
            models.CheckConstraint(
                condition=Q(origin="upload", parent__isnull=True) | (~Q(origin="upload") & Q(parent__isnull=False)),
                name="dataset_parent_iff_derived",
            ),
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="dataset_progress_0_1"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.original_name}"


# An audit run is a worker job (genesis/jobs.py): queued → running → succeeded | failed, taken over by
# another worker when its own dies. Services refuse any other move.
AuditStatus = WorkerJobStatus
AUDIT_TRANSITIONS = WORKER_JOB_TRANSITIONS


class AuditRun(models.Model):
    """One audit of one dataset: format, PII, duplicates, difficulty (audits/report.py). The full
    report (``AuditReport.to_contract_dict``: counts, line numbers and masked samples, never a raw
    PII value) is kept in ``report``; the summary columns feed the admin lists."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="audit_runs")
    status = models.CharField(max_length=10, choices=AuditStatus.choices, default=AuditStatus.QUEUED)
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    # Bounds are checked by the services (audits.dedupe.check_threshold), the one place that knows them.
    near_threshold = models.FloatField(
        default=DEFAULT_THRESHOLD,
        help_text="Estimated Jaccard similarity at which two examples count as near duplicates.",
    )
    find_near_duplicates = models.BooleanField(default=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    via = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started this run.")
    error = models.TextField(blank=True)
    report = models.JSONField(null=True, blank=True)
    # Summary of the report, for lists and filters.
    lines = models.BigIntegerField(null=True, blank=True)
    valid = models.BigIntegerField(null=True, blank=True)
    format_error_total = models.BigIntegerField(null=True, blank=True)
    pii_total = models.BigIntegerField(null=True, blank=True)
    duplicates_exact = models.BigIntegerField(null=True, blank=True)
    duplicates_near = models.BigIntegerField(null=True, blank=True)
    easy = models.FloatField(null=True, blank=True)
    medium = models.FloatField(null=True, blank=True)
    hard = models.FloatField(null=True, blank=True)
    has_findings = models.BooleanField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    processes = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="auditrun_progress_0_1"),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | Q(report__isnull=False), name="auditrun_succeeded_has_report"
            ),
        ]

    def __str__(self) -> str:
        return f"audit #{self.pk} of dataset #{self.dataset_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (AuditStatus.QUEUED, AuditStatus.RUNNING)
