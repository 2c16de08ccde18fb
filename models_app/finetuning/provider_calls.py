"""How fine-tuning asks its provider: which account trains an agent's models, the provider of an account
(refused with what to do when it cannot fine-tune), the retry policies, and the error a person is told
when the provider will not do something."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from genesis.errors import Conflict, DomainError, InvalidInput
from models_app.providers.destinations import MISTRAL_DEFAULT_URL
from models_app.providers.errors import ProviderError, ProviderRefused, TransientProviderError
from models_app.providers.mistral import MistralProvider
from models_app.providers.retry import RetryPolicy, call_with_retries
from models_app.registry.gateway import provider_for
from models_app.registry.models import Agent, ProviderAccount, ProviderKind
from models_app.registry.selectors import baseline_version

logger = logging.getLogger(__name__)


T = TypeVar("T")

# A person is waiting in the admin or at a terminal: a few quick tries, then say so.
INTERACTIVE_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.5, max_delay_seconds=5.0)
# Beat's sync has a minute between ticks: the provider layer's default policy.
SYNC_RETRY = RetryPolicy()


class ProviderUnavailable(DomainError):
    """The provider did not answer (timeouts, 429, 5xx) even after the retries: try again later."""

    status_code = 503
    code = "provider_unavailable"


def default_provider_account(*, agent: Agent) -> ProviderAccount:
    """The account serving the agent's baseline: where its fine-tunes are trained unless told otherwise."""
    version = baseline_version(agent=agent)
    if version is None:
        raise InvalidInput(
            f"agent '{agent.slug}' has no baseline or live model version, so no provider to train on; "
            "register one (or name the provider account)"
        )
    return version.provider


def fine_tuning_provider(account: ProviderAccount) -> MistralProvider:
    if not account.enabled:
        raise Conflict(f"provider account '{account.name}' is disabled; enable it in the admin first")
    if account.kind not in (ProviderKind.MISTRAL, ProviderKind.SIMULATOR):
        # The account's refusal, not a bad argument (the agent or account named exists): HTTP 409, exit 1.
        raise Conflict(
            f"provider account '{account.name}' is {account.get_kind_display()}, which cannot fine-tune; "
            "use a Mistral or simulator account"
        )
    provider = provider_for(account)
    # The factory builds Mistral for both kinds; provider_for wraps it to count its calls (models_app/registry/metrics.py).
    assert isinstance(provider.wrapped, MistralProvider)
    # The counting proxy answers every MistralProvider call as the wrapped provider does (it forwards
    # through __getattr__), which no static type can say: typed as what it forwards to.
    return provider  # type: ignore[return-value]


def fine_tuning_routes_missing(account: ProviderAccount, *, method: str, path: str, error: ProviderRefused, then: str) -> str:
    """What a person is told when the provider answers a fine-tuning route as one it does not serve
    (rules.ROUTE_MISSING_HTTP_STATUSES): not a problem of their file or job, but of the account.
    `path` is below the account's URL; `then` what to do once on another account."""
    base = (account.base_url or MISTRAL_DEFAULT_URL).rstrip("/")
    said = f": {error.provider_answer}" if error.provider_answer else ""
    return (
        f"provider '{account.name}' does not serve Mistral's fine-tuning routes: {method} {base}{path} answered "
        f"{error.status_code}{said}. Mistral retired its fine-tuning API in 2026 (later mistralai 2.x releases no "
        "longer ship it), so this account cannot train models: use a provider account that still offers fine-tuning "
        f"(a Mistral account with fine-tuning access, or the simulator for a demo) and {then}"
    )


def call_provider(operation: Callable[[], T], *, policy: RetryPolicy) -> T:
    def log_retry(attempt: Any) -> None:
        logger.info("provider call retry %d in %.1fs: %s", attempt.retry_number, attempt.delay_seconds, attempt.error)

    return call_with_retries(operation, policy=policy, on_retry=log_retry)


def domain_error(error: ProviderError, *, action: str) -> DomainError:
    """What a person is told when the provider will not do `action`."""
    answer = f" — the provider said: {error.provider_answer}" if error.provider_answer else ""
    if isinstance(error, TransientProviderError):
        return ProviderUnavailable(f"could not {action}: {error.message}; try again in a minute")
    return Conflict(f"could not {action}: {error.message}{answer}")
