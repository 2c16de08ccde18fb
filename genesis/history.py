"""Who changed a row and why, for django-simple-history (each model's "History" in the admin)."""

from __future__ import annotations

from typing import Any

from genesis.permissions import Actor


def record_history(instance: Any, *, actor: Actor, reason: str) -> None:
    """Set before the row is saved: simple-history reads these when it writes the history entry. The
    reason is kept whole (a text column, SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD): a
    status reason such as "fine-tuned by job #1 (…), started by admin" names who at its end."""
    instance._history_user = actor
    instance._change_reason = reason or ""
