"""The "simulator" provider kind: the Mistral implementation pointed at `manage.py mistral_simulator`."""

from __future__ import annotations

from models_app.simulator.config import DEFAULT_API_KEY

from .base import ProviderKind
from .factory import build_provider
from .mistral import MistralProvider

SIMULATOR_DEFAULT_URL = "http://127.0.0.1:8765"  # what `seed_demo` uses unless $GENESIS_SIMULATOR_URL says otherwise


def simulator_provider(
    *,
    base_url: str = SIMULATOR_DEFAULT_URL,
    api_key: str = DEFAULT_API_KEY,
    name: str = "simulator",
    api_key_env: str | None = None,
    timeout_seconds: float = 30.0,
    max_concurrency: int = 8,
) -> MistralProvider:
    provider = build_provider(
        kind=ProviderKind.SIMULATOR,
        base_url=base_url,
        api_key=api_key,
        name=name,
        api_key_env=api_key_env,
        timeout_seconds=timeout_seconds,
        max_concurrency=max_concurrency,
    )
    assert isinstance(provider, MistralProvider)
    return provider
