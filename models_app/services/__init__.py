"""Every write of the models_app, one module per domain: registry.py (agents, providers, model
versions, API keys); benchmarks and fine-tuning jobs in modules of their own."""

from models_app.services.registry import (  # noqa: F401
    API_KEY_PREFIX,
    ApiPrincipal,
    agent_ensure,
    agent_upsert,
    api_key_authenticate,
    api_key_cache_clear,
    api_key_create,
    api_key_revoke,
    ensure_agent_access,
    hash_api_key,
    model_version_change_status_by_hand,
    model_version_register,
    model_version_transition,
    provider_account_upsert,
    validate_api_key_env,
)
