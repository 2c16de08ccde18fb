"""The one way Django code talks to a model: build the provider of a `ProviderAccount`, and ask a
`ModelVersion` with the agent's generation defaults, falling back to the agent's baseline on a
transient failure when the configuration allows it.

The provider layer (models_app/providers/) is Django-free; this module is the seam that reads
accounts, keys from the environment and settings, and counts fallbacks in Prometheus. It is the one
place a key is read by the name an account gives, and every provider it builds is checked against
`provider_destinations()`: a row edited to point elsewhere gets a provider that refuses every call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from models_app.providers import destinations
from models_app.providers.base import ChatMessage
from models_app.providers.factory import ProviderCache
from models_app.providers.fallback import ChatOutcome, FallbackEvent, ModelRoute, chat_with_fallback
from models_app.providers.instrumented import InstrumentedProvider
from models_app.registry.metrics import CHAT_CALLS, FALLBACKS, provider_call_recorder
from models_app.registry.models import Agent, ModelVersion, ProviderAccount

logger = logging.getLogger(__name__)

_providers = ProviderCache()


def provider_destinations() -> destinations.ProviderDestinations:
    """Where provider accounts may send requests and which key with them, as the environment says:
    GENESIS_PROVIDER_HOSTS, MISTRAL_API_KEY to api.mistral.ai, GENESIS_SIMULATOR_API_KEY to
    GENESIS_SIMULATOR_URL; plain http:// beyond loopback only in dev."""
    return destinations.provider_destinations(
        hosts=settings.GENESIS_PROVIDER_HOSTS,
        simulator_url=settings.GENESIS_SIMULATOR_URL,
        plain_http_loopback_only=settings.GENESIS_ENV != "dev",
    )


def destination_refusal(account: ProviderAccount) -> str | None:
    """Why every call through `account` would be refused now (its destination is not one the
    environment allows for its key), or None when it may be called."""
    return provider_destinations().refusal(kind=account.kind, base_url=account.base_url, api_key_env=account.api_key_env)


def provider_for(account: ProviderAccount) -> InstrumentedProvider:
    """The process-wide provider client of an account; its key is read from the environment only, and
    sent only where `provider_destinations()` allows (otherwise every call raises
    ProviderDestinationRefused). Every call through it is counted in genesis_provider_calls_total
    (models_app/registry/metrics.py)."""
    provider = _providers.get(
        kind=account.kind,
        name=account.name,
        base_url=account.base_url,
        api_key=os.environ.get(account.api_key_env, "") if account.api_key_env else "",
        api_key_env=account.api_key_env or None,
        timeout_seconds=account.timeout_seconds,
        max_concurrency=account.max_concurrency,
        rate_limit_per_minute=account.rate_limit_per_minute,
        destinations=provider_destinations(),
    )
    return InstrumentedProvider(provider, record=provider_call_recorder(account.name))


def generation_parameters(agent: Agent) -> dict[str, Any]:
    return {"temperature": agent.temperature, "max_tokens": agent.max_tokens, "top_p": agent.top_p}


def chat_for_version(
    *,
    version: ModelVersion,
    messages: Sequence[ChatMessage],
    parameters: Mapping[str, Any] | None = None,
    fallback: ModelVersion | None = None,
) -> ChatOutcome:
    """Ask `version`. A fine-tuned version falls back to `fallback` (normally the agent's baseline)
    on a transient failure when both the agent and `models.fallback_enabled` allow it; every
    fallback is logged and counted in `genesis_model_fallbacks_total`."""
    agent = version.agent
    allowed = (
        fallback is not None
        and version.kind == "fine_tuned"
        and agent.fallback_enabled
        and settings.GENESIS.models.fallback_enabled
    )

    CHAT_CALLS.labels(agent.slug, version.model_id).inc()

    def record(event: FallbackEvent) -> None:
        FALLBACKS.labels(agent=agent.slug, primary_model=event.primary_model, fallback_model=event.fallback_model).inc()
        logger.warning(
            "fallback: %s answered for agent %s because %s failed: %s",
            event.fallback_model, agent.slug, event.primary_model, event.reason,
        )

    return chat_with_fallback(
        primary=ModelRoute(provider=provider_for(version.provider), model=version.model_id),
        fallback=ModelRoute(provider=provider_for(fallback.provider), model=fallback.model_id) if allowed and fallback else None,
        messages=messages,
        parameters={**generation_parameters(agent), **(parameters or {})},
        on_fallback=record,
    )
