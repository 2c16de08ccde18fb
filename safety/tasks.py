"""Celery entry points of the safety app: ids in, one service call, safe to run twice.

`waltz_build_execute` locks its build (a Postgres advisory lock) and skips finished builds and
finished items, so a message redelivered after a worker died resumes the build, and one delivered
twice while the first worker lives is dropped. A provider that still fails transiently after the
per-call retries is retried here with a countdown; a database blip likewise.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task
from django.utils import timezone

from genesis.errors import NotFound
from genesis.tasks import RETRY_ON_DATABASE_ERRORS, SWEEP_OPTIONS
from models_app.providers import TransientProviderError
from safety import services

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="safety.run_waltz_build", max_retries=5, **RETRY_ON_DATABASE_ERRORS)
def run_waltz_build(self: Task, build_id: int) -> str:
    try:
        return services.waltz_build_execute(build_id=build_id).status
    except NotFound as exc:
        logger.info("WaltzRL build %s not run: %s", build_id, exc.message)
        return "gone"
    except TransientProviderError as exc:
        if self.request.retries >= 5:
            services.waltz_build_fail(build_id=build_id, error=f"the provider kept failing: {exc}")
            return "failed"
        countdown = min(60, 5 * 2 ** self.request.retries)
        services.waltz_build_retry_at(build_id=build_id, when=timezone.now() + timedelta(seconds=countdown))
        raise self.retry(countdown=countdown, max_retries=None) from exc


@shared_task(name="safety.resend_stranded_builds", **SWEEP_OPTIONS)
def resend_stranded_builds() -> list[int]:
    return services.waltz_builds_resend_stranded()
