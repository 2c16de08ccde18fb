"""Build a provider from plain values, e.g. from a `ProviderAccount` row:

    build_provider(
        kind=account.kind, name=account.name, base_url=account.base_url,
        api_key=os.environ.get(account.api_key_env, ""), api_key_env=account.api_key_env,
        timeout_seconds=account.timeout_seconds, max_concurrency=account.max_concurrency,
        rate_limit_per_minute=account.rate_limit_per_minute, destinations=destinations,
    )

Never reads settings or the environment itself. A caller that reads the key from a variable an account
names must pass `destinations` (models_app/registry/gateway.py does): a provider whose URL the rules do
not allow for that variable is built without the key and refuses every call, sending nothing.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from .base import ChatProvider, ProviderKind, ProviderSettings
from .destinations import ProviderDestinations
from .http import ProviderHttpClient, tls_context
from .mistral import MistralProvider
from .openai_compatible import OpenAICompatibleProvider


def build_provider(
    *,
    kind: ProviderKind | str,
    base_url: str | None,
    api_key: str,
    name: str | None = None,
    api_key_env: str | None = None,
    timeout_seconds: float = 30.0,
    max_concurrency: int = 8,
    rate_limit_per_minute: int | None = None,
    strip_answer_markers: bool | None = None,
    http_client: ProviderHttpClient | None = None,
    destinations: ProviderDestinations | None = None,
) -> MistralProvider | OpenAICompatibleProvider:
    """A provider for `kind`. "simulator" is the Mistral implementation pointed at the simulator;
    it alone receives benchmark answer markers unless `strip_answer_markers` says otherwise.
    With `destinations`, one its rules refuse holds no key and raises ProviderDestinationRefused on every
    call (so what it is used for fails the way a refused call does, saying what to change)."""
    try:
        provider_kind = ProviderKind(kind)
    except ValueError:
        raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(k.value for k in ProviderKind)}") from None
    if provider_kind is not ProviderKind.MISTRAL and not base_url:
        raise ValueError(f"a {provider_kind.value} provider needs a base_url")
    if destinations is not None and api_key and not api_key_env:
        raise ValueError("destinations check a key by the name of its variable: pass api_key_env with api_key")
    refusal = destinations.refusal(kind=provider_kind, base_url=base_url, api_key_env=api_key_env) if destinations else None
    settings = ProviderSettings(
        name=name or provider_kind.value,
        kind=provider_kind,
        base_url=base_url or None,
        api_key="" if refusal else api_key,
        api_key_env=api_key_env or None,
        timeout_seconds=timeout_seconds,
        max_concurrency=max_concurrency,
        rate_limit_per_minute=rate_limit_per_minute,
        strip_answer_markers=(
            provider_kind is not ProviderKind.SIMULATOR if strip_answer_markers is None else strip_answer_markers
        ),
    )
    if provider_kind is ProviderKind.OPENAI_COMPATIBLE:
        return OpenAICompatibleProvider(settings, http_client=http_client, refusal=refusal)
    return MistralProvider(settings, http_client=http_client, refusal=refusal)


def warm_up() -> None:
    """Do now, once, what a process's first provider would do lazily: load the CA bundle (one TLS
    context per process) and the SDK's chat module (on first use). Celery workers call it before
    they fork their pool (genesis/celery.py): otherwise every pool process spent a quarter to half a
    second of CPU on it at the start of its first benchmark chunk, with its calls waiting
    (bench/benchmark_runner)."""
    tls_context()
    # Nothing is sent: the address is only parsed (port 9 is "discard", in case it ever were). The
    # OpenAI-compatible provider needs nothing more: its client is the same provider HTTP client.
    provider = MistralProvider(ProviderSettings(name="warm-up", kind=ProviderKind.MISTRAL, base_url="http://127.0.0.1:9"))
    provider.load_lazy_parts()
    provider.close()


class ProviderCache:
    """One provider (and so one HTTP connection pool and one call gate) per distinct configuration
    in a process. A changed key or URL yields a new provider; the old one is closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, tuple[tuple[Any, ...], ChatProvider]] = {}

    def get(self, **options: Any) -> MistralProvider | OpenAICompatibleProvider:
        identity = options.get("name") or str(options.get("kind"))
        # The key takes part only as a digest, so the cache holds no second copy of it.
        fingerprint = tuple(
            sorted(
                (key, hashlib.sha256(str(value).encode()).hexdigest() if key == "api_key" else repr(value))
                for key, value in options.items()
            )
        )
        with self._lock:
            cached = self._providers.get(identity)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]  # type: ignore[return-value]
            provider = build_provider(**options)
            self._providers[identity] = (fingerprint, provider)
        if cached is not None:
            cached[1].close()
        return provider

    def close_all(self) -> None:
        with self._lock:
            providers = [provider for _, provider in self._providers.values()]
            self._providers.clear()
        for provider in providers:
            provider.close()
