"""Reads of the model registry that are more than a `.get()`."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from models_app.registry.models import Agent, ModelStatus, ModelVersion

CANDIDATE_STATUSES = (
    ModelStatus.REGISTERED,
    ModelStatus.BENCHMARKING,
    ModelStatus.APPROVED_FOR_ROLLOUT,
    ModelStatus.ROLLING_OUT,
)


def agents_with_versions(*, slugs: frozenset[str] | None = None) -> QuerySet[Agent]:
    """Agents with their live version and candidates prefetched (two queries in all)."""
    agents = Agent.objects.all()
    if slugs is not None:
        agents = agents.filter(slug__in=slugs)
    return agents.prefetch_related(
        Prefetch(
            "versions",
            queryset=ModelVersion.objects.exclude(status__in=[ModelStatus.RETIRED, ModelStatus.REJECTED])
            .select_related("provider")
            .order_by("-created_at"),
            to_attr="active_versions",
        )
    )


def live_version(*, agent: Agent) -> ModelVersion | None:
    return agent.versions.select_related("provider").filter(status=ModelStatus.LIVE).first()


def agent_has_live_version(*, agent_id: int, other_than: int | None = None) -> bool:
    """Whether the agent has a live version (other than `other_than`): what decides whether a baseline
    may go live by hand (lifecycle.py)."""
    versions = ModelVersion.objects.filter(agent_id=agent_id, status=ModelStatus.LIVE)
    if other_than is not None:
        versions = versions.exclude(pk=other_than)
    return versions.exists()


def baseline_version(*, agent: Agent) -> ModelVersion | None:
    """The version a fine-tune is compared against: the live one, else the newest baseline."""
    return live_version(agent=agent) or (
        agent.versions.select_related("provider").filter(kind="baseline").order_by("-created_at").first()
    )


def candidate_versions(*, agent: Agent) -> QuerySet[ModelVersion]:
    return (
        agent.versions.select_related("provider")
        .filter(kind="fine_tuned", status__in=CANDIDATE_STATUSES)
        .order_by("-created_at")
    )
