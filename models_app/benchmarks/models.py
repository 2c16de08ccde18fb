"""Offline evaluation: suites of cases, runs of a candidate against a baseline, and per-case results.

A suite version is immutable once imported (a changed file makes a new version), so a run names
exactly the cases it was scored on. A run is a row with a small state machine; its work is split
into chunks (rows too) that Celery tasks claim, so a run survives a killed worker. Writes go through
models_app/benchmarks/services.py.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from genesis.validation import DecimalDigits
from models_app.registry.models import Agent, ModelVersion

MONEY: DecimalDigits = {"max_digits": 16, "decimal_places": 8}  # per-call costs are fractions of a cent


class BenchmarkSuite(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="benchmark_suites")
    slug = models.SlugField(max_length=64)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    fingerprint = models.CharField(max_length=64, help_text="Hash of the cases' content.")
    case_count = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=200, blank=True, help_text="Where the cases came from (file name, seed).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent__slug", "slug", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "slug", "version"], name="unique_benchmark_suite_version"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}/{self.slug} v{self.version}"


class BenchmarkCase(models.Model):
    suite = models.ForeignKey(BenchmarkSuite, on_delete=models.CASCADE, related_name="cases")
    key = models.CharField(max_length=100, help_text="The case's id in the suite file.")
    position = models.PositiveIntegerField()
    messages = models.JSONField()
    reference = models.JSONField(null=True, blank=True)
    scorer = models.JSONField(help_text='e.g. {"name": "normalized_match"}; see models_app/benchmarks/scorers.py')
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["suite", "position"]
        constraints = [models.UniqueConstraint(fields=["suite", "key"], name="unique_benchmark_case_key")]

    def __str__(self) -> str:
        return self.key


class BenchmarkRunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BenchmarkVerdict(models.TextChoices):
    PASS = "PASS", "PASS"
    FAIL = "FAIL", "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE", "INCONCLUSIVE"


class BenchmarkRun(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="benchmark_runs")
    suite = models.ForeignKey(BenchmarkSuite, on_delete=models.PROTECT, related_name="runs")
    suite_version = models.PositiveIntegerField()
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="benchmark_runs_as_candidate")
    baseline = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="benchmark_runs_as_baseline")
    status = models.CharField(
        max_length=16, choices=BenchmarkRunStatus.choices, default=BenchmarkRunStatus.QUEUED, db_index=True
    )
    parameters = models.JSONField(default=dict, help_text="Generation settings and gate settings, frozen at start.")
    total_items = models.PositiveIntegerField(default=0, help_text="(model, case) pairs to score.")
    completed_items = models.PositiveIntegerField(default=0)
    estimated_cost_usd = models.DecimalField(default=0, **MONEY)
    cost_usd = models.DecimalField(default=0, **MONEY, help_text="Actual cost, summed from the results.")
    verdict = models.CharField(max_length=16, choices=BenchmarkVerdict.choices, blank=True)
    comparison = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_via = models.CharField(max_length=120, blank=True, help_text="admin, API key label, command…")
    budget_override_reason = models.TextField(blank=True)
    candidate_status_before = models.CharField(
        max_length=24, blank=True, help_text="The candidate's status before the run, restored if the run fails."
    )
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("override_benchmark_verdict", "Can approve a candidate despite a non-PASS benchmark verdict"),
        ]
        indexes = [models.Index(fields=["agent", "-created_at"], name="benchmark_run_agent_recent")]
        constraints = [
            models.CheckConstraint(
                condition=Q(verdict="") | Q(status=BenchmarkRunStatus.COMPLETED),
                name="benchmark_verdict_only_when_completed",
            ),
            models.CheckConstraint(condition=~Q(candidate=models.F("baseline")), name="benchmark_candidate_not_baseline"),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} {self.agent.slug}: {self.candidate.model_id} vs {self.baseline.model_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in (BenchmarkRunStatus.COMPLETED, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED)

    @property
    def progress_percent(self) -> float:
        return round(100 * self.completed_items / self.total_items, 1) if self.total_items else 0.0


class BenchmarkChunkStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class BenchmarkChunk(models.Model):
    """A slice of a run's (model, case) pairs that one Celery task works through. A worker claims
    it with a lease (its name and a token) and renews a heartbeat; a chunk whose worker died is
    handed to another, which skips the pairs already scored. `received_by` names the worker that last
    received a message for the queued chunk, so a worker killed before claiming it is noticed too."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    items = models.JSONField(help_text="[[model_version_id, case_id], …]")
    status = models.CharField(max_length=16, choices=BenchmarkChunkStatus.choices, default=BenchmarkChunkStatus.QUEUED)
    worker = models.CharField(max_length=200, blank=True)
    received_by = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Celery node that last received a message for this chunk while it was queued; "
        "emptied when the chunk is queued again.",
    )
    lease_token = models.UUIDField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_benchmark_chunk_index")]

    def __str__(self) -> str:
        return f"run #{self.run_id} chunk {self.index}"


class ModelAnswer(models.Model):
    """What a model answered to a case and what asking cost in tokens: a result's, and a kept
    answer's while its judge is asked again."""

    output = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    latency_ms = models.FloatField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    judge_prompt_tokens = models.PositiveIntegerField(default=0)
    judge_completion_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(
        default=False, db_default=False,
        help_text="Some of its token counts (the answer's or its judge's) were estimated: the provider reported no usage.",
    )

    class Meta:
        abstract = True


class BenchmarkResult(ModelAnswer):
    """One model's answer to one case in one run: written once (the unique constraint), and its
    cost goes on the ledger once under `cost_key` (posted just after, see `cost_posted_at`)."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="results")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    case = models.ForeignKey(BenchmarkCase, on_delete=models.PROTECT, related_name="results")
    score = models.FloatField()
    # False for an answer the run ended before its judge could grade (BenchmarkUnscoredAnswer): it was
    # paid for and is kept for its cost, but its score of 0 is no grade and counts in no mean.
    scored = models.BooleanField(default=True)
    reason = models.CharField(max_length=300, blank=True)
    error = models.TextField(
        blank=True, help_text="The provider's refusal when it refused this case, or why the answer was never scored."
    )
    cost_usd = models.DecimalField(default=0, **MONEY)
    cost_key = models.CharField(max_length=120, unique=True, help_text="Idempotency key of its ledger entry.")
    cost_posted_at = models.DateTimeField(null=True, blank=True, help_text="When its cost went on the ledger.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "case__position", "model_version"]
        indexes = [
            # The ledger's outbox: results whose cost is not posted yet (normally none, briefly a few).
            models.Index(fields=["run"], condition=Q(cost_posted_at__isnull=True), name="benchmark_result_unposted"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "model_version", "case"], name="unique_benchmark_result"),
            models.CheckConstraint(condition=Q(score__gte=0) & Q(score__lte=1), name="benchmark_score_in_unit_range"),
        ]

    def __str__(self) -> str:
        return f"run #{self.run_id} {self.case.key} ({self.model_version.model_id}): {self.score:.2f}"


class BenchmarkUnscoredAnswer(ModelAnswer):
    """A model's answer whose LLM judge failed transiently. It was paid for, so it is kept: the chunk's
    retry asks only the judge again, never the model. Once judged it becomes a BenchmarkResult (and
    this row goes); if the run is cancelled or fails first, it becomes a result marked not scored, so
    its cost still reaches the run's total and the ledger."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="unscored_answers")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    case = models.ForeignKey(BenchmarkCase, on_delete=models.PROTECT, related_name="+")
    cost_usd = models.DecimalField(default=0, **MONEY, help_text="The model's answer plus any judge call already paid.")
    error = models.TextField(blank=True, help_text="The judge's last error.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "model_version", "case"], name="unique_benchmark_unscored_answer"),
        ]

    def __str__(self) -> str:
        return f"run #{self.run_id}: unscored answer of model version {self.model_version_id} to case {self.case_id}"


class BenchmarkVerdictOverride(models.Model):
    """A person approved a candidate for rollout despite a non-PASS verdict: who, when, why."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.PROTECT, related_name="overrides")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict_before = models.CharField(max_length=16, choices=BenchmarkVerdict.choices)
    candidate_status_before = models.CharField(max_length=24)
    candidate_status_after = models.CharField(max_length=24)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"override of run #{self.run_id} ({self.verdict_before}) by {self.actor}"


RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    BenchmarkRunStatus.QUEUED: frozenset({BenchmarkRunStatus.RUNNING, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED}),
    BenchmarkRunStatus.RUNNING: frozenset(
        {BenchmarkRunStatus.COMPLETED, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED}
    ),
    BenchmarkRunStatus.COMPLETED: frozenset(),
    BenchmarkRunStatus.FAILED: frozenset(),
    BenchmarkRunStatus.CANCELLED: frozenset(),
}


FINISHED_RUN_STATUSES = (BenchmarkRunStatus.COMPLETED, BenchmarkRunStatus.FAILED, BenchmarkRunStatus.CANCELLED)
