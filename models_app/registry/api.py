"""Registry endpoints: which agents a key may act for, and their models."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema

from genesis.validation import Slug
from models_app.registry.models import Agent, ModelVersion
from models_app.registry.selectors import agents_with_versions
from models_app.registry.services import ensure_agent_access, request_principal

router = Router(tags=["registry"])


class ModelVersionOut(Schema):
    id: int
    model: str
    provider: str
    base_model: str
    kind: str
    status: str


class AgentOut(Schema):
    agent: str
    name: str
    purpose: str
    live_model: ModelVersionOut | None
    candidates: list[ModelVersionOut]


def _version_out(version: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut(
        id=version.pk,
        model=version.model_id,
        provider=version.provider.name,
        base_model=version.base_model,
        kind=version.kind,
        status=version.status,
    )


def _agent_out(agent: Agent) -> AgentOut:
    # agents_with_versions prefetches them (Prefetch to_attr), an attribute the model's stub cannot know.
    versions: list[ModelVersion] = agent.active_versions  # type: ignore[attr-defined]
    live = next((v for v in versions if v.status == "live"), None)
    return AgentOut(
        agent=agent.slug,
        name=agent.name,
        purpose=agent.purpose,
        live_model=_version_out(live) if live else None,
        candidates=[_version_out(v) for v in versions if v.status != "live"],
    )


@router.get("/agents", response=list[AgentOut], summary="Agents this key may act for, with their models")
def list_agents(request: HttpRequest) -> list[AgentOut]:
    principal = request_principal(request)
    agents = agents_with_versions(slugs=None if principal.all_agents else principal.agent_slugs)
    return [_agent_out(agent) for agent in agents]


@router.get("/agents/{agent}", response=AgentOut, summary="One agent and its models")
def get_agent(request: HttpRequest, agent: Slug) -> AgentOut:
    ensure_agent_access(principal=request_principal(request), agent_slug=agent)
    return _agent_out(agents_with_versions(slugs=frozenset({agent})).get())
