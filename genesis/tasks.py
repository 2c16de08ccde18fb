"""What every app's Celery tasks share: the options of a task that retries database blips, the limits
of a once-a-minute sweep, and sending a task by name once the current transaction commits; and the
project's own task, clearing expired sessions.

The project-wide defaults (acks_late, reject_on_worker_lost, soft and hard time limits, which queue a
task goes to) are in settings.py's CELERY_* block; a task names only what differs from them.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import current_app, shared_task
from django.core.management import call_command
from django.db import InterfaceError, OperationalError, transaction

logger = logging.getLogger(__name__)

# A task whose job row is the truth retries a lost database connection with backoff; nothing else is
# retried by Celery (a provider's transient errors are retried inside the call, see providers/retry.py).
RETRY_ON_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}

# Beat runs the sweeps every minute: one that outlives the next tick is cut off instead of piling up.
SWEEP_OPTIONS: dict[str, Any] = {"soft_time_limit": 50, "time_limit": 60}


def send_task(task_name: str, *args: Any, what: str, **kwargs: Any) -> bool:
    """Send the task called `task_name` now; False when the broker cannot take it.

    By name, so a service that hands work to the queue does not import the task module that calls it
    back (the task is the entry point above the service). A broker that cannot take the message is
    logged, not raised: the row is committed as it should be, and the job's sweep (audits, WaltzRL
    builds, benchmark chunks, budget alerts, cost reports) sends the task again. `what` names the work in that log
    line."""
    try:
        current_app.send_task(task_name, args=args, kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001 - the committed row stays to be swept; see the docstring
        logger.warning("could not enqueue %s (%s: %s)", what, type(exc).__name__, exc)
        return False
    return True


def send_on_commit(task_name: str, *args: Any, what: str, **kwargs: Any) -> None:
    """`send_task` once the current transaction commits (at once outside one)."""
    transaction.on_commit(partial(send_task, task_name, *args, what=what, **kwargs))


@shared_task(name="genesis.clear_expired_sessions")
def clear_expired_sessions() -> None:
    """Beat, daily: Django's `clearsessions` — the session table keeps every admin sign-in otherwise."""
    call_command("clearsessions")
