"""Tables of online evaluation: experiments, their stage plan and approvals, exposures, outcomes and
the audit trail. Every write goes through experiments/services.py (outcomes: experiments/outcomes.py; the guardrail
task's stored evaluation: experiments/guardrail_check.py; deletions by age: experiments/retention.py);
rows hold no business logic."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back", "Rolled back"
    COMPLETED = "completed"


# An agent serves at most one experiment at a time: its running or paused one.
ACTIVE_STATUSES = (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
FINAL_STATUSES = (ExperimentStatus.ROLLED_BACK, ExperimentStatus.COMPLETED)


class Experiment(models.Model):
    """A staged rollout of one candidate model version (treatment) against the agent's live one
    (control). Users are split by GrowthBook hash v2 of (seed, user id): see experiments/assignment.py."""

    key = models.SlugField(max_length=100, unique=True)
    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="experiments")
    control = models.ForeignKey("models_app.ModelVersion", on_delete=models.PROTECT, related_name="+")
    treatment = models.ForeignKey("models_app.ModelVersion", on_delete=models.PROTECT, related_name="experiments")
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT)
    seed = models.CharField(max_length=64, help_text="Hash seed of this experiment; never changes once set.")
    stage_plan = models.JSONField(help_text="Treatment percentages, strictly increasing, ending at 100.")
    min_stage_hours = models.FloatField()
    # Counts users, not outcomes (the statistics cluster by user); the name is the setting's, ROLLOUT_MIN_SAMPLES_PER_ARM.
    min_samples_per_arm = models.PositiveIntegerField(
        "min users per arm",
        help_text="Users with outcomes needed in each arm of the current stage before it may advance (not outcomes: "
                  "the statistics count users).",
    )
    planned_samples_per_arm = models.PositiveIntegerField(
        default=2000, help_text="Sample per arm the sequential guardrail test is tuned for."
    )
    guardrails = models.JSONField(help_text="List of guardrail rules (metric, direction, threshold, kind, action).")
    # Incremented by every edit; a stage approval is valid only for the version it was requested at.
    config_version = models.PositiveIntegerField(default=1)
    current_stage = models.ForeignKey(
        "ExperimentStage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verdict_override_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    data_deleted_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When a prune began deleting this ended experiment's outcomes and exposures (marked before the first "
                  "delete). Ingestion then refuses the agent's events from before it ended, plus the 5 minutes of clock "
                  "skew allowed: sent again, one of them would be stored and charged twice.",
    )
    # Set by every change that can alter a routing decision; the agent's config version derives from it.
    routing_changed_at = models.DateTimeField(auto_now_add=True)
    # The last guardrail evaluation (experiments.guardrail_check.guardrails_check, beat every minute), as of
    # guardrails_checked_at: each guardrail's state (for "warning" state changes, and shown), and the
    # figures of the current stage the holds read (experiments.holds.StageFigures as JSON: users, outcomes
    # served by another model, the sample-ratio test, the success-rate lift). The launch pages show a
    # running rollout from these instead of reading its outcomes on every view (experiments.holds.
    # stored_evaluation); the decisions (request, approve) still judge the outcomes afresh.
    guardrail_states = models.JSONField(default=list, blank=True)
    # db_default as well: the column came after a release's code that inserts experiments without it
    # (0011), and that code, still running in a rolling deploy, must not lose the row it creates.
    stage_figures = models.JSONField(default=dict, db_default={}, blank=True)
    guardrails_checked_at = models.DateTimeField(null=True, blank=True)
    # The launch calendar: the date the operator aims to start each stage at ({"25": ISO datetime}),
    # shown beside the earliest time the holds allow (experiments/calendar.py). A plan, not a hold.
    stage_targets = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"], condition=Q(status__in=["running", "paused"]), name="one_active_experiment_per_agent"
            ),
        ]
        permissions = [
            ("start_experiment", "Can start an experiment"),
            ("request_stage", "Can request a stage advance"),
            ("approve_stage", "Can approve a stage advance"),
            ("pause_experiment", "Can pause or resume an experiment"),
            ("rollback_experiment", "Can roll back an experiment"),
            ("override_verdict", "Can start an experiment whose candidate has no PASS verdict, with a reason"),
        ]

    def __str__(self) -> str:
        return self.key


class StageStatus(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    ROLLED_BACK = "rolled_back", "Rolled back"


class ExperimentStage(models.Model):
    """One step of the plan (10 %, 25 %…), created when the experiment starts."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="stages")
    index = models.PositiveSmallIntegerField()
    percent = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=StageStatus.choices, default=StageStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "index"]
        constraints = [models.UniqueConstraint(fields=["experiment", "index"], name="unique_stage_index")]

    def __str__(self) -> str:
        return f"{self.experiment.key} stage {self.index + 1} ({self.percent} %)"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    VOIDED = "voided"


class StageApproval(models.Model):
    """A request to advance to `stage`, and its approval by a second person."""

    stage = models.ForeignKey(ExperimentStage, on_delete=models.CASCADE, related_name="approvals")
    status = models.CharField(max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    config_version = models.PositiveIntegerField(help_text="The experiment's config version when requested.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(fields=["stage"], condition=Q(status="pending"), name="one_pending_approval_per_stage"),
        ]

    def __str__(self) -> str:
        return f"advance to {self.stage} ({self.status})"


class Variant(models.TextChoices):
    CONTROL = "control"
    TREATMENT = "treatment"
    LIVE = "live", "Live (no experiment)"


class Assignment(models.Model):
    """A user's exposure to an arm: the first time they were seen in it, and in which stage. A user
    who moves control → treatment when the stage rises has one row per arm.

    Written in bulk by routing and by outcome ingestion, up to a row per event, so like OutcomeEvent's
    its keys are kept by Django, not by database constraints (one trigger call per row and key at
    commit): the rows carry ids just read, and experiments and their stages are never deleted. No
    index on the keys of their own: the unique index starts with the experiment, and nothing looks
    assignments up by stage."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments",
                                   db_constraint=False, db_index=False)
    user_id = models.CharField(max_length=200)
    variant = models.CharField(max_length=16, choices=Variant.choices)
    stage = models.ForeignKey(ExperimentStage, null=True, on_delete=models.SET_NULL, related_name="+",
                              db_constraint=False, db_index=False)
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "user_id", "variant"], name="unique_assignment_per_arm"),
        ]

    def __str__(self) -> str:
        # Said without a query: the experiment's id, not its key.
        return f"user {self.user_id} in {self.variant} of experiment #{self.experiment_id}"


# Column order and PostgreSQL types for bulk inserts (experiments/bulk.py).
ASSIGNMENT_COLUMNS = (
    ("experiment_id", "bigint"), ("user_id", "text"), ("variant", "text"), ("stage_id", "bigint"), ("first_seen", "timestamptz"),
)


# How far ahead of the server's clock an outcome's occurred_at may be: agents' clocks drift a little;
# further ahead is a bug (a wrong time zone, milliseconds read as seconds) and is refused
# (experiments/outcomes.py). One within it is stored at its time of receipt, so a stored occurred_at
# is at most this much earlier than the time the agent sent — which is why a deletion's limit on what
# ingestion takes again is its cut-off plus this (experiments/retention.py, outcome_age_limits).
MAX_OUTCOME_CLOCK_SKEW = timedelta(minutes=5)


class OutcomeEvent(models.Model):
    """What happened when a model served a request, reported by the agent. `event_id` makes a
    resent event count once; it is the agent's own id, so unique per agent (two agents may both
    number their events from 1). The variant is the arm the user was assigned to when it occurred
    (intention to treat, experiments/outcomes.py); `model` is the model that served it, as reported —
    another model than the arm's when the agent fell back.

    The hot table (bench/outcomes: 20 000 events/s is the target), so its two foreign keys are kept
    by Django, not by database constraints: PostgreSQL checks a foreign key with one trigger call per
    inserted row, and the two checks were a fifth of a 1 000-event batch's time. Nothing is lost in
    practice: ingestion writes only ids it has just read, an agent with outcomes cannot be deleted
    (PROTECT, enforced by Django) and experiments are never deleted (the admin refuses; a delete
    through the ORM still cascades here). Neither key has an index of its own: the unique
    (agent, event_id) and the (experiment, variant, occurred_at) indexes start with them."""

    event_id = models.CharField(max_length=200)
    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False)
    experiment = models.ForeignKey(Experiment, null=True, blank=True, on_delete=models.CASCADE, related_name="outcomes",
                                   db_constraint=False, db_index=False)
    variant = models.CharField(max_length=16, choices=Variant.choices)
    user_id = models.CharField(max_length=200)
    model = models.CharField(max_length=200)
    success = models.BooleanField()
    latency_ms = models.FloatField()
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    quality = models.FloatField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["experiment", "variant", "occurred_at"], name="outcome_exp_variant_time")]
        constraints = [models.UniqueConstraint(fields=["agent", "event_id"], name="unique_event_id_per_agent")]
        permissions = [("erase_user_data", "Can erase one end user's outcomes and exposures")]

    def __str__(self) -> str:
        return f"outcome {self.event_id} ({self.variant}, {'success' if self.success else 'failure'})"


class EventAction(models.TextChoices):
    CREATE = "create", "Created"
    EDIT = "edit", "Edited"
    START = "start", "Started"
    REQUEST = "request", "Advance requested"
    APPROVAL = "approval", "Advance approved"
    REFUSAL = "refusal", "Refused"
    VOID = "void", "Approval voided"
    PAUSE = "pause", "Paused"
    RESUME = "resume", "Resumed"
    ROLLBACK = "rollback", "Rolled back"
    COMPLETE = "complete", "Completed"
    GUARDRAIL_WARNING = "guardrail_warning", "Guardrail warning"


class ExperimentEvent(models.Model):
    """The audit trail: who did what to an experiment, when, from which state to which, and why.
    `actor` null means Genesis itself (the guardrail task): a person who acted is deactivated, never
    deleted (PROTECT, genesis/admin_users.py), so a null is never a deleted user."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=24, choices=EventAction.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True)
    # A short machine-readable cause ("manual", "guardrail_success_rate", "srm", "four_eyes"…),
    # the `reason` label of genesis_experiment_rollbacks_total.
    reason_code = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["action", "reason_code"], name="event_action_reason")]

    def __str__(self) -> str:
        return f"{self.experiment.key}: {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class DataDeletion(models.Model):
    """The trace of end users' data deleted on purpose (experiments/retention.py): a retention prune
    (by beat or `prune_outcomes`) or the erasure of one user (`erase_user_data`). An erased user is
    named only by a keyed hash of their id (`subject_hash`), so the trace does not keep what was erased,
    yet an operator holding the id can still show that it was."""

    class Kind(models.TextChoices):
        PRUNE = "prune"
        ERASURE = "erasure"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # null: Genesis itself (the scheduled prune).
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Indexed: every POST /outcomes batch reads the erasures since its oldest event (retention.outcome_age_limits).
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    agent = models.CharField(max_length=100, blank=True, help_text="The agent's slug; empty: every agent.")
    subject_hash = models.CharField(max_length=64, blank=True, db_index=True,
                                    help_text="HMAC-SHA256 of the erased user id (keyed by the secret key); empty for a prune.")
    criteria = models.JSONField(default=dict, blank=True, help_text="What was asked: the cut-offs of a prune, the options of an erasure.")
    outcomes_deleted = models.PositiveBigIntegerField(default=0)
    assignments_deleted = models.PositiveBigIntegerField(default=0)
    experiments = models.JSONField(default=list, blank=True, help_text="Keys of the experiments whose data this changed.")
    reason = models.TextField(blank=True)
    # Read by every POST /outcomes batch (experiments.retention.outcome_age_limits: the newest one, by the index).
    outcomes_before = models.DateTimeField(
        null=True, blank=True, db_index=True,
        help_text="A prune of live outcomes: the cut-off it deletes them by (every deleted outcome was stored as "
                  "occurred before it), recorded before its first delete. Ingestion refuses events that occurred before "
                  "the newest of these plus the 5 minutes of clock skew allowed, which may have been deleted: sent again, "
                  "they would be stored and charged a second time. Empty for an erasure (its time and user hash limit "
                  "ingestion) and for a prune of ended experiments alone (those mark the experiment: "
                  "Experiment.data_deleted_at).",
    )

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%Y-%m-%d %H:%M}: {self.outcomes_deleted} outcomes, {self.assignments_deleted} exposures"
