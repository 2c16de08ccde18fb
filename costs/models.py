"""Tables of the costs app: prices, the append-only ledger and the rollup of its spend, budgets with
their alerts and overrides, the holds of paid work in progress, and cost reports. Every write goes through costs/services.py;
rows hold no business logic.

The ledger is append-only at three levels: the services never update or delete an entry (a
correction is a reversing entry), the admin offers neither, and on PostgreSQL a trigger refuses any
UPDATE or DELETE of a row (migration 0002).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from costs.pricing import DEFAULT_FINE_TUNING_MINIMUM_USD, DEFAULT_STORAGE_USD_PER_MONTH
from genesis.validation import DecimalDigits

# Dollars per million tokens can be fractions of a cent ($0.25 / 1M); ledger amounts are kept in
# micro-dollars (costs/pricing.py, LEDGER_QUANTUM).
RATE: DecimalDigits = {"max_digits": 12, "decimal_places": 6}
LEDGER_MONEY: DecimalDigits = {"max_digits": 16, "decimal_places": 6}
BUDGET_MONEY: DecimalDigits = {"max_digits": 12, "decimal_places": 2}
# A charge's idempotency key: cost_record refuses a longer one (PostgreSQL would refuse the row, SQLite
# would store it), and callers that build keys from long names hash them to fit.
IDEMPOTENCY_KEY_MAX_LENGTH = 200


class Operation(models.TextChoices):
    FINE_TUNING = "fine_tuning", "Fine-tuning"
    BENCHMARK = "benchmark"
    INFERENCE = "inference"
    STORAGE = "storage"
    MANUAL = "manual"
    DATA_PREP = "data_prep", "Data preparation"


class PriceTable(models.Model):
    """One version of one model's prices, in force from `effective_from` until the model's next
    version. A fine-tuned `ft:<base>:…` model without rows of its own is priced as its base."""

    model = models.CharField(max_length=200, db_index=True, help_text="Provider model id, e.g. open-mistral-7b.")
    effective_from = models.DateField()
    input_usd_per_million = models.DecimalField(**RATE, validators=[MinValueValidator(Decimal(0))])
    output_usd_per_million = models.DecimalField(**RATE, validators=[MinValueValidator(Decimal(0))])
    training_usd_per_million = models.DecimalField(
        **RATE, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="Fine-tuning training tokens; empty when the model cannot be fine-tuned or the price is unknown.",
    )
    fine_tuning_minimum_usd = models.DecimalField(
        **RATE, default=DEFAULT_FINE_TUNING_MINIMUM_USD, validators=[MinValueValidator(Decimal(0))],
        help_text="Minimum fee per fine-tuning job.",
    )
    storage_usd_per_month = models.DecimalField(
        **RATE, default=DEFAULT_STORAGE_USD_PER_MONTH, validators=[MinValueValidator(Decimal(0))],
        help_text="Monthly storage fee per fine-tuned model.",
    )
    source = models.CharField(max_length=500, help_text="Where the prices were read: a URL or document.")
    source_date = models.DateField(help_text="When the source was read.")
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["model", "-effective_from"]
        verbose_name = "price"
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="one_price_version_per_model_and_date")]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from.isoformat()}"


class CostEntry(models.Model):
    """One line of the ledger. Never changed: a correction is another entry with the opposite amount
    (`reverses`). The idempotency key makes a retried task or a repeated request charge once."""

    amount_usd = models.DecimalField(**LEDGER_MONEY)
    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="cost_entries")
    operation = models.CharField(max_length=16, choices=Operation.choices)
    model = models.CharField(max_length=200, blank=True)
    tokens = models.BigIntegerField(null=True, blank=True, help_text="All tokens the entry paid for.")
    input_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(
        default=False, db_default=False,
        help_text="Some of the tokens it paid for were estimated (the provider reported no usage): the amount is an estimate.",
    )
    # What caused the charge: a row (content type + id) when there is one, and/or a free-form source.
    source_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source_id = models.CharField(max_length=64, blank=True)
    source_object = GenericForeignKey("source_type", "source_id")
    source = models.CharField(max_length=300, blank=True, help_text="e.g. 'track_costs --log', 'outcome evt-42'.")
    occurred_at = models.DateTimeField(db_index=True)
    recorded_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX_LENGTH, unique=True)
    note = models.TextField(blank=True)
    reverses = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversal",
        help_text="The entry this one cancels.",
    )

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name = "cost entry"
        verbose_name_plural = "cost entries"
        indexes = [
            models.Index(fields=["agent", "occurred_at"], name="costs_entry_agent_time"),
            models.Index(fields=["source_type", "source_id"], name="costs_entry_source"),
            # A model version's costs (its lineage, the launch board and report) and the ledger list's
            # search select entries by model id; without it each read the whole ledger.
            models.Index(fields=["model"], name="costs_entry_model"),
        ]
        constraints = [
            # Only a reversal may be negative; anything else that lowers spend would hide it.
            models.CheckConstraint(
                condition=Q(amount_usd__gte=0) | Q(reverses__isnull=False), name="only_reversals_are_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.amount_usd} USD {self.operation} {self.agent_id}"


# The rollup of spend (CostSpendBucket, CostSpendTotal): how budgets read what is spent without summing
# the ledger. Every budget period starts at a local midnight, and every UTC offset in use is a whole
# number of quarter hours, so quarter-hour UTC buckets align with every period in every time zone (a
# change of TIME_ZONE needs no rebuild); costs/selectors.py sums the ledger itself for any part of a
# window that is not whole buckets. Both are kept by a PostgreSQL trigger on every insert into the ledger
# (migration 0013), in the inserting transaction; on SQLite (the embedded mode) they stay empty and the
# reads sum the ledger.
SPEND_BUCKET = timedelta(minutes=15)
SPEND_SUM: DecimalDigits = {"max_digits": 22, "decimal_places": 6}


class CostSpendBucket(models.Model):
    """The ledger's spend of one agent and operation in one quarter hour (UTC), reversals included
    (a reversal has its charge's time). Written only by the ledger's trigger."""

    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="+")
    operation = models.CharField(max_length=16, choices=Operation.choices)
    bucket_start = models.DateTimeField(help_text="The quarter hour's start (UTC); entries with occurred_at in it.")
    amount_usd = models.DecimalField(**SPEND_SUM)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "operation", "bucket_start"], name="costs_spend_bucket_one_per_key"),
        ]
        indexes = [models.Index(fields=["bucket_start"], name="costs_spend_bucket_time")]

    def __str__(self) -> str:
        return f"{self.amount_usd} USD {self.operation} {self.agent_id} from {self.bucket_start.isoformat()}"


class CostSpendTotal(models.Model):
    """The ledger's whole spend of one agent and operation: charges and reversals apart (/metrics
    counts them apart). Written only by the ledger's trigger."""

    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="+")
    operation = models.CharField(max_length=16, choices=Operation.choices)
    charged_usd = models.DecimalField(**SPEND_SUM)
    reversed_usd = models.DecimalField(**SPEND_SUM, help_text="Negative: what reversals took back.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "operation"], name="costs_spend_total_one_per_key"),
        ]

    def __str__(self) -> str:
        return f"{self.charged_usd + self.reversed_usd} USD {self.operation} {self.agent_id}"


class CostDashboard(CostEntry):
    """No table: puts the cost dashboard on the admin index next to the ledger (costs/admin.py)."""

    class Meta:
        proxy = True
        verbose_name = "cost dashboard"
        verbose_name_plural = "cost dashboard"


class BudgetPeriod(models.TextChoices):
    TOTAL = "total", "Total (never resets)"
    MONTHLY = "monthly"
    DAILY = "daily"


class Severity(models.TextChoices):
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


class Budget(models.Model):
    """A spending limit for all agents or one, per period, with alert thresholds and an optional
    hard limit that refuses paid work which would not fit."""

    name = models.SlugField(max_length=64, unique=True)
    amount_usd = models.DecimalField(**BUDGET_MONEY, validators=[MinValueValidator(Decimal(0))])
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.TOTAL)
    agent = models.ForeignKey(
        "models_app.Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="budgets",
        help_text="Empty: the budget covers all agents.",
    )
    thresholds = models.JSONField(
        default=list, help_text='Alert thresholds: [{"percent": 25, "severity": "warning"}, …].'
    )
    hard_limit = models.BooleanField(default=True, help_text="Refuse paid work whose estimate does not fit.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        permissions = [("override_budget", "Can start paid work over a hard budget limit, giving a reason")]

    def __str__(self) -> str:
        return self.name


class BudgetAlert(models.Model):
    """A threshold crossed upward in one period of one budget. The unique constraint over the alerts
    still armed, together with the budget row lock taken while one is created, makes it once per
    crossing. When the spend no longer reaches the threshold (the budget was raised, its thresholds
    changed, a charge was reversed) the alert is re-armed (`rearmed_at`): kept as sent, and the
    threshold fires again when spend reaches it."""

    class Delivery(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "Failed (gave up)"

    class Kind(models.TextChoices):
        THRESHOLD = "threshold"
        EXHAUSTED = "exhausted", "Exhausted (100 %)"

    budget = models.ForeignKey(Budget, on_delete=models.PROTECT, related_name="alerts")
    period_key = models.CharField(max_length=10, help_text="'total', 'YYYY-MM' or 'YYYY-MM-DD'.")
    period_start = models.DateTimeField(null=True, blank=True)
    threshold_percent = models.PositiveSmallIntegerField()
    kind = models.CharField(
        max_length=10, choices=Kind.choices, default=Kind.THRESHOLD,
        help_text="'exhausted': the notice at 100 % sent when no configured threshold is 100 % or more.",
    )
    severity = models.CharField(max_length=10, choices=Severity.choices)
    budget_usd = models.DecimalField(**BUDGET_MONEY, help_text="The budget's amount when it was crossed.")
    spent_usd = models.DecimalField(**LEDGER_MONEY, help_text="Spend in the period when it was crossed.")
    triggered_by = models.ForeignKey(CostEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    rearmed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When spend stopped reaching the threshold (budget raised, thresholds changed, a reversal): "
        "from then on the threshold fires again when spend reaches it.",
    )
    delivery = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.PENDING)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    deliveries = models.JSONField(default=dict, blank=True, help_text="Per channel: 'ok' or the failure.")
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_claimed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set while a worker sends the alert; other workers leave it alone until the claim is old (services.ALERT_DELIVERY_LEASE).",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_key", "threshold_percent"], condition=Q(rearmed_at__isnull=True),
                name="one_armed_alert_per_budget_period_threshold",
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget.name} {self.period_key} {self.threshold_percent} % ({self.severity})"


class BudgetOverride(models.Model):
    """Paid work started over a hard limit: who allowed it, why, and the numbers they saw."""

    budget = models.ForeignKey(Budget, on_delete=models.PROTECT, related_name="overrides")
    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    estimate_usd = models.DecimalField(**LEDGER_MONEY)
    budget_usd = models.DecimalField(**BUDGET_MONEY)
    spent_usd = models.DecimalField(**LEDGER_MONEY)
    period_key = models.CharField(max_length=10)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.budget.name}: {self.estimate_usd} USD by {self.actor} ({self.created_at:%Y-%m-%d})"


class CostHold(models.Model):
    """Money set aside for paid work that has started and not yet ended (a benchmark run, a
    fine-tuning job): its estimate counts against every hard limit covering the agent until the work
    releases it, so work started at the same moment cannot together overspend a budget that each
    alone fits in. The hold counts in full while the work runs, even as its real costs land on the
    ledger: a hard limit errs on the side of refusing. A hold its work never released (the work was
    lost) stops counting at `expires_at`."""

    agent = models.ForeignKey("models_app.Agent", on_delete=models.PROTECT, related_name="+")
    operation = models.CharField(max_length=16, choices=Operation.choices)
    amount_usd = models.DecimalField(**LEDGER_MONEY, validators=[MinValueValidator(Decimal(0))])
    source_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    source_id = models.CharField(max_length=64)
    source_object = GenericForeignKey("source_type", "source_id")
    source = models.CharField(max_length=300, help_text="e.g. 'benchmark run #12'.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["source_type", "source_id"], name="costs_hold_one_per_source"),
        ]
        indexes = [
            models.Index(fields=["agent"], name="costs_hold_open", condition=Q(released_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.amount_usd} USD held for {self.source}"


class CostReport(models.Model):
    """A report is a background job: a row that moves pending → running → succeeded | failed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    schedule_key = models.CharField(
        max_length=40, null=True, blank=True, unique=True,
        help_text="'daily:YYYY-MM-DD' for the beat-made report, so a repeated beat makes one report a day.",
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    as_of = models.DateTimeField(null=True, blank=True, help_text="Entries recorded up to this moment are included.")
    # The beat-made report covers its month (costs.services.cost_report_daily), so each stays the size of a
    # month however old the ledger grows; one made on request covers the whole ledger.
    spend_since = models.DateField(null=True, blank=True,
                                   help_text="First day of the spend listed (local time); empty: the whole ledger.")
    entry_count = models.PositiveIntegerField(null=True, blank=True)
    total_usd = models.DecimalField(**LEDGER_MONEY, null=True, blank=True)
    markdown = models.TextField(blank=True)
    csv = models.TextField(blank=True)
    deliveries = models.JSONField(default=dict, blank=True)
    resends = models.PositiveSmallIntegerField(
        default=0, help_text="Times beat's sweep sent this report's task again (its message was lost, or its worker died)."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"cost report #{self.pk} ({self.status})"


# running → running: a report abandoned by a killed worker is claimed again; failed → running: a
# failed report is made again when its task is sent again; pending → failed: the sweep gave up sending
# a report no worker ever started (costs/report_sweep.py).
REPORT_TRANSITIONS: dict[str, frozenset[str]] = {
    CostReport.Status.PENDING: frozenset({CostReport.Status.RUNNING, CostReport.Status.FAILED}),
    CostReport.Status.RUNNING: frozenset(
        {CostReport.Status.RUNNING, CostReport.Status.SUCCEEDED, CostReport.Status.FAILED}
    ),
    CostReport.Status.SUCCEEDED: frozenset(),
    CostReport.Status.FAILED: frozenset({CostReport.Status.RUNNING}),
}
