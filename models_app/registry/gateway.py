"""The one way Django code gets a model's provider: the provider of a `ProviderAccount`, and the agent's
generation defaults its callers (benchmarks, safety data) ask with.

The provider layer (models_app/providers/) is Django-free; this module is the seam that reads
accounts, keys from the environment and settings, and counts provider calls in Prometheus. It is the one
place a key is read by the name an account gives, and every provider it builds is checked against
`provider_destinations()`: a row edited to point elsewhere gets a provider that refuses every call.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

from models_app.providers import destinations
from models_app.providers.factory import ProviderCache
from models_app.providers.instrumented import InstrumentedProvider
from models_app.registry.metrics import provider_call_recorder
from models_app.registry.models import Agent, ProviderAccount

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

