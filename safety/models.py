"""Tables of the safety app: WaltzRL prompt sets, builds and their per-prompt items.

A build is a job row (queued → running → succeeded | failed) that a Celery task advances. Its work is
one row per prompt (WaltzItem), each provider answer written to its row — and its cost to the ledger
under a key of its own — as soon as it arrives, so a worker killed mid-build resumes where it was and
no prompt is paid for twice. Writes go through safety/services.py.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from genesis.jobs import WORKER_JOB_TRANSITIONS, WorkerJobStatus
from genesis.validation import DecimalDigits

MONEY: DecimalDigits = {"max_digits": 16, "decimal_places": 8}


class PromptKind(models.TextChoices):
    ADVERSARIAL = "adversarial", "Adversarial (harmful)"
    BORDERLINE = "borderline", "Borderline (benign)"


class PromptSetOrigin(models.TextChoices):
    BUILTIN = "builtin", "Built-in (synthetic)"
    IMPORT = "import", "Imported file"


class PromptSet(models.Model):
    """Prompts of one kind from one file: the built-in synthetic sets or an imported export."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=PromptKind.choices)
    origin = models.CharField(max_length=16, choices=PromptSetOrigin.choices, default=PromptSetOrigin.IMPORT)
    file_name = models.CharField(max_length=255, blank=True)
    prompt_field = models.CharField(max_length=100, default="prompt")
    sha256 = models.CharField(max_length=64, db_index=True)
    prompt_count = models.PositiveIntegerField(default=0)
    problem_count = models.PositiveIntegerField(default=0, help_text="Lines skipped as malformed.")
    problems = models.JSONField(default=list, blank=True, help_text='[{"line": n, "detail": "…"}, …] (first 1 000)')
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["sha256", "kind", "prompt_field"], name="unique_prompt_set_content"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.prompt_count} prompts)"


class SafetyPrompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    line = models.PositiveIntegerField(help_text="Line of the file it came from.")
    text = models.TextField()
    category = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=100, blank=True, help_text="e.g. or-bench, wildjailbreak, genesis-synthetic")

    class Meta:
        ordering = ["prompt_set", "line"]

    def __str__(self) -> str:
        return self.text[:80]


# A WaltzRL build is a worker job (genesis/jobs.py): queued → running → succeeded | failed, taken over
# by another worker when its own dies.
BuildStatus = WorkerJobStatus
BUILD_TRANSITIONS = WORKER_JOB_TRANSITIONS


class WaltzBuild(models.Model):
    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="waltz_builds")
    conversation_model = models.ForeignKey("models_app.ModelVersion", on_delete=models.PROTECT, related_name="+")
    judge_model = models.CharField(max_length=200)
    judge_provider = models.ForeignKey("models_app.ProviderAccount", on_delete=models.PROTECT, related_name="+")
    prompt_sets = models.ManyToManyField(PromptSet, related_name="builds")
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.QUEUED, db_index=True)
    parameters = models.JSONField(default=dict, help_text="target, mix, validation, seed, thresholds — frozen at start.")
    selection = models.JSONField(default=dict, blank=True, help_text="What the prompt selection removed and why.")
    total_items = models.PositiveIntegerField(default=0)
    completed_items = models.PositiveIntegerField(default=0)
    estimated_cost_usd = models.DecimalField(default=0, **MONEY)
    cost_usd = models.DecimalField(default=0, **MONEY)
    report = models.JSONField(null=True, blank=True)
    shortfall = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    via = models.CharField(max_length=200, blank=True)
    budget_override_reason = models.TextField(blank=True)
    conversation_train = models.ForeignKey("audits.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    conversation_valid = models.ForeignKey("audits.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    feedback_train = models.ForeignKey("audits.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    feedback_valid = models.ForeignKey("audits.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    finetuning_job = models.ForeignKey(
        "models_app.FineTuningJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The Stage-1 (feedback agent) fine-tuning job started from this build.",
    )
    finetune_claimed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set while a person's request creates the Stage-1 job (uploads, then the provider), so a second "
                  "click is refused; a claim older than safety.services.FINETUNE_CLAIM_LASTS was a process that died.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the worker's own retry after a transient provider failure is due; beat's sweep leaves the "
                  "build to it until a minute after.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("finetune_waltzbuild", "Can start the Stage-1 fine-tuning job from a WaltzRL build")]
        constraints = [
            models.CheckConstraint(condition=~Q(status="succeeded") | Q(report__isnull=False), name="waltzbuild_succeeded_has_report"),
        ]

    def __str__(self) -> str:
        return f"WaltzRL build #{self.pk} ({self.agent.slug}, {self.status})"

    @property
    def progress(self) -> float:
        return round(self.completed_items / self.total_items, 4) if self.total_items else 0.0

    @property
    def is_finished(self) -> bool:
        return self.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED)


class WaltzItem(models.Model):
    """One prompt of a build: the conversation agent's answer, the judge's label, the detector's
    cross-check and the revision — each written once, as it arrives."""

    build = models.ForeignKey(WaltzBuild, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(SafetyPrompt, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=PromptKind.choices)
    category = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=100, blank=True)
    split = models.CharField(max_length=8, choices=[("train", "Training"), ("valid", "Validation")])
    text = models.TextField(help_text="The prompt as sent (PII scrubbed).")
    response = models.TextField(blank=True)
    answered = models.BooleanField(default=False)
    judge_raw = models.TextField(blank=True, help_text="The judge's last answer, as it came.")
    judge_attempts = models.PositiveSmallIntegerField(default=0)
    judge_valid = models.BooleanField(null=True, help_text="Whether the judge gave the label JSON (after retries).")
    label = models.JSONField(null=True, blank=True, help_text="The judge's label as parsed, before the bounds.")
    unsafe = models.BooleanField(null=True)
    overrefuse = models.BooleanField(null=True)
    detector_refusal = models.BooleanField(null=True)
    agrees = models.BooleanField(null=True, help_text="Judge and refusal detector agree.")
    disagreements = models.JSONField(default=list, blank=True)
    revision = models.TextField(blank=True)
    revised = models.BooleanField(default=False)
    revision_ok = models.BooleanField(null=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(default=0, **MONEY)
    done = models.BooleanField(default=False)

    class Meta:
        ordering = ["build", "position"]
        constraints = [
            models.UniqueConstraint(fields=["build", "prompt"], name="unique_waltz_item_prompt"),
            models.UniqueConstraint(fields=["build", "position"], name="unique_waltz_item_position"),
        ]
        indexes = [models.Index(fields=["build"], condition=Q(done=False), name="waltz_item_todo")]

    def __str__(self) -> str:
        return f"build #{self.build_id} item {self.position}"

