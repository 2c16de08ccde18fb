"""Reads of fine-tuning jobs and training files that are more than a `.get()`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Count, F, Q, QuerySet

from costs.selectors import FineTuningJobLine, charged_by_source
from models_app.finetuning import rules
from models_app.finetuning.models import FineTuningJob, FineTuningStatus, TrainingFile
from models_app.registry.models import Agent


def jobs_to_sync() -> QuerySet[FineTuningJob]:
    """Jobs the provider may still change, on enabled accounts, least recently synced first; plus any
    SUCCESS job whose model is not registered yet (its registration failed and must be retried)."""
    return (
        FineTuningJob.objects.exclude(provider_job_id="")
        .filter(provider__enabled=True)
        .filter(Q(status__in=rules.MOVING_STATUSES) | Q(status=rules.SUCCESS, model_version__isnull=True))
        .order_by(F("last_synced_at").asc(nulls_first=True), "pk")
    )


def jobs_for_agents(*, agent_slugs: frozenset[str] | None = None, agent: str | None = None) -> QuerySet[FineTuningJob]:
    """Jobs (newest first) of the given agents, with what their listing shows."""
    jobs = FineTuningJob.objects.select_related("agent", "provider", "model_version", "training_file", "validation_file")
    if agent_slugs is not None:
        jobs = jobs.filter(agent__slug__in=agent_slugs)
    if agent is not None:
        jobs = jobs.filter(agent__slug=agent)
    return jobs.order_by("-created_at", "-pk")


def training_files_for(*, agent: Agent, purpose: str | None = None) -> QuerySet[TrainingFile]:
    files = TrainingFile.objects.filter(agent=agent).select_related("provider")
    if purpose is not None:
        files = files.filter(purpose=purpose)
    return files.order_by("-uploaded_at", "-pk")


def finetuning_job_counts() -> list[tuple[str, int]]:
    """(state, jobs) for every state, 0 included: /metrics' genesis_finetuning_jobs."""
    counts = dict(FineTuningJob.objects.values_list("status").annotate(n=Count("id")).order_by())
    return [(state, counts.get(state, 0)) for state in FineTuningStatus.values]


def fine_tuning_job_lines(*, as_of: datetime, limit: int = 100) -> list[FineTuningJobLine]:
    """The cost report's fine-tuning section: the newest jobs created by `as_of`, with what the ledger
    had charged for each by then (registered with costs by models_app/apps.py)."""
    jobs = list(jobs_for_agents().filter(created_at__lte=as_of)[:limit])
    charged = charged_by_source(model=FineTuningJob, source_ids=[job.pk for job in jobs], as_of=as_of)
    return [
        FineTuningJobLine(
            job=job.provider_job_id or f"#{job.pk}",
            agent=job.agent.slug,
            model=job.fine_tuned_model or job.base_model,
            status=job.status,
            created_at=job.created_at,
            cost=charged.get(job.pk, Decimal(0)),
        )
        for job in jobs
    ]
