"""Fine-tuning jobs over HTTP, read-only: what a pipeline needs to follow a job it did not start.

Creating, starting and cancelling spend money, so they stay with people (the admin and
`manage.py fine_tune`, checked against Django permissions); API keys belong to agent services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema

from genesis.errors import NotFound
from genesis.validation import ObjectId, Slug
from models_app.finetuning.models import FineTuningJob
from models_app.finetuning.selectors import jobs_for_agents
from models_app.registry.services import ensure_agent_access, request_principal

router = Router(tags=["fine-tuning"])


class FineTuningJobOut(Schema):
    id: int
    agent: str
    provider: str
    provider_job_id: str | None
    base_model: str
    status: str
    provider_status: str | None
    hyperparameters: dict[str, Any]
    training_file: str
    validation_file: str | None
    trained_tokens: int | None
    estimated_cost_usd: str | None
    cost_usd: str | None
    cost_currency: str | None
    cost_recorded: bool
    fine_tuned_model: str | None
    model_version_id: int | None
    last_error: str | None
    provider_answer: str | None
    provider_answer_status: int | None
    audit_override_reason: str | None = None  # why it trains on data whose audit found PII or format errors
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_synced_at: datetime | None


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def _job_out(job: FineTuningJob) -> FineTuningJobOut:
    return FineTuningJobOut(
        id=job.pk,
        agent=job.agent.slug,
        provider=job.provider.name,
        provider_job_id=job.provider_job_id or None,
        base_model=job.base_model,
        status=job.status,
        provider_status=job.provider_status or None,
        hyperparameters=job.hyperparameters,
        training_file=job.training_file.provider_file_id,
        validation_file=job.validation_file.provider_file_id if job.validation_file else None,
        trained_tokens=job.trained_tokens,
        estimated_cost_usd=_money(job.estimated_cost_usd),
        cost_usd=_money(job.cost_usd),
        cost_currency=job.cost_currency or None,
        cost_recorded=job.cost_recorded_at is not None,
        fine_tuned_model=job.fine_tuned_model or None,
        model_version_id=job.model_version_id,
        last_error=job.last_error or None,
        provider_answer=job.provider_answer or None,
        provider_answer_status=job.provider_answer_status,
        audit_override_reason=job.audit_override_reason or None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_synced_at=job.last_synced_at,
    )


@router.get("/fine-tuning/jobs", response=list[FineTuningJobOut], summary="Fine-tuning jobs of the agents this key may act for")
def list_jobs(
    request: HttpRequest, agent: Slug | None = None, limit: int = Query(50, ge=1, le=200)
) -> list[FineTuningJobOut]:
    principal = request_principal(request)
    if agent is not None:
        ensure_agent_access(principal=principal, agent_slug=agent)
    slugs = None if principal.all_agents else principal.agent_slugs
    return [_job_out(job) for job in jobs_for_agents(agent_slugs=slugs, agent=agent)[:limit]]


@router.get("/fine-tuning/jobs/{job_id}", response=FineTuningJobOut, summary="One fine-tuning job")
def get_job(request: HttpRequest, job_id: ObjectId) -> FineTuningJobOut:
    job = jobs_for_agents().filter(pk=job_id).first()
    # A job of an agent the key may not see answers 404, not 403: its existence is not the key's business.
    if job is None or not request_principal(request).may_act_for(job.agent.slug):
        raise NotFound(f"fine-tuning job {job_id} does not exist")
    return _job_out(job)
