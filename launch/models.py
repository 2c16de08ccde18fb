"""The launch console's one table: which stage requests their approvers were told about, so each
request is announced once and reminded once, and which channels failed, so the redelivery sweep sends
only those again (writes in launch/services.py)."""

from __future__ import annotations

from django.db import models


class ApprovalNotice(models.Model):
    approval = models.OneToOneField("experiments.StageApproval", on_delete=models.CASCADE, related_name="launch_notice")
    notified_at = models.DateTimeField()
    deliveries = models.JSONField(default=dict, blank=True, help_text="{channel: ok | failed: …} of the announcement.")
    delivery_attempts = models.PositiveSmallIntegerField(default=0, help_text="Sends of the announcement so far.")
    reminded_at = models.DateTimeField(null=True, blank=True)
    reminder_deliveries = models.JSONField(default=dict, blank=True)
    reminder_delivery_attempts = models.PositiveSmallIntegerField(default=0)
    recipients = models.JSONField(default=list, blank=True, help_text="Addresses the email went to.")
    redelivery_claimed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set while a worker sends a failed channel again; others leave the notice alone until the claim "
                  "is old (genesis.notifications.DELIVERY_LEASE).",
    )

    class Meta:
        ordering = ["-notified_at"]

    def __str__(self) -> str:
        return f"notice of approval request #{self.approval_id}"


class WeeklyLaunchReport(models.Model):
    """The beat-made Go/No-Go report of one ISO week (local time), so a repeated beat — a standby
    taking over after a killed beat re-sends what that beat sent since it last saved the schedule —
    sends one report a week (launch.services.launch_report_send), as CostReport.schedule_key does for
    the daily cost report."""

    week = models.CharField(max_length=10, unique=True, help_text="ISO week, 'YYYY-Www' (local time).")
    claimed_at = models.DateTimeField(
        help_text="When a worker started sending it. On PostgreSQL the sender's advisory lock tells a live worker from "
                  "a killed one (whose claim is taken over at once); elsewhere a claim younger than the task time "
                  "limit is left alone."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.JSONField(default=dict, blank=True, help_text="{channel: ok | failed: …}")

    class Meta:
        ordering = ["-week"]

    def __str__(self) -> str:
        return f"Go/No-Go report of {self.week}"
