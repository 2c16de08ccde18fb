"""The launch console's one table: which stage requests their approvers were told about, so each
request is announced once and reminded once (writes in launch/services.py)."""

from __future__ import annotations

from django.db import models


class ApprovalNotice(models.Model):
    approval = models.OneToOneField("experiments.StageApproval", on_delete=models.CASCADE, related_name="launch_notice")
    notified_at = models.DateTimeField()
    deliveries = models.JSONField(default=dict, blank=True, help_text="{channel: ok | failed: …} of the announcement.")
    reminded_at = models.DateTimeField(null=True, blank=True)
    reminder_deliveries = models.JSONField(default=dict, blank=True)
    recipients = models.JSONField(default=list, blank=True, help_text="Addresses the email went to.")

    class Meta:
        ordering = ["-notified_at"]

    def __str__(self) -> str:
        return f"notice of approval request #{self.approval_id}"
