"""The registry part of the demo world `seed_demo` builds: a simulator provider, the five agents of
the prototype, and for each a live baseline and a registered fine-tuned candidate. Idempotent."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.management.base import OutputWrapper

from models_app.registry.models import ModelKind, ModelStatus, ModelVersion, ProviderKind
from models_app.registry.services import (
    agent_ensure,
    model_version_register,
    model_version_transition,
    provider_account_upsert,
)

DEMO_PROVIDER = "simulator"
DEMO_BASE_MODEL = "open-mistral-7b"
DEMO_FINE_TUNE_DATE = "20261101"

DEMO_AGENTS = {
    "qa_agent": (
        "QA agent",
        "Checks answers and facts for other agents; short, exact replies.",
        "You are a meticulous QA reviewer. Answer exactly and briefly.",
    ),
    "content_agent": (
        "Content agent",
        "Writes marketing copy: taglines, product blurbs, social posts.",
        "You write clear, lively marketing copy within the requested length.",
    ),
    "legal_agent": (
        "Legal agent",
        "Drafts legal letters and clauses and answers questions on contracts.",
        "You draft precise legal text. Cite the clause you rely on.",
    ),
    "support_agent": (
        "Support agent",
        "Answers billing and account support questions for customers.",
        "You are a friendly billing support agent. Resolve the customer's question.",
    ),
    "analyst_agent": (
        "Analyst agent",
        "Analyses sales figures and answers with numbers.",
        "You are a sales analyst. Answer with the figure and one line of reasoning.",
    ),
}


def demo_fine_tuned_model_id(agent_slug: str) -> str:
    """A stable `ft:<base>:<8hex>:<yyyymmdd>:<8hex>` name per agent, as the simulator would make."""
    digest = hashlib.sha256(f"genesis-demo:{agent_slug}".encode()).hexdigest()
    return f"ft:{DEMO_BASE_MODEL}:{digest[:8]}:{DEMO_FINE_TUNE_DATE}:{digest[8:16]}"


def seed_registry(*, out: OutputWrapper) -> None:
    provider = provider_account_upsert(
        name=DEMO_PROVIDER,
        kind=ProviderKind.SIMULATOR,
        base_url=settings.GENESIS_SIMULATOR_URL,
        api_key_env="GENESIS_SIMULATOR_API_KEY",
    )
    for slug, (name, purpose, system_prompt) in DEMO_AGENTS.items():
        agent = agent_ensure(slug=slug, name=name, purpose=purpose, system_prompt=system_prompt)
        baseline = model_version_register(
            agent=agent,
            provider=provider,
            model_id=DEMO_BASE_MODEL,
            base_model=DEMO_BASE_MODEL,
            kind=ModelKind.BASELINE,
            reason="demo: the prototype's base model",
        )
        # Only a freshly registered baseline is put live: once people have moved versions on, the demo
        # leaves their choices alone (and never fails because the baseline was retired).
        if baseline.status == ModelStatus.REGISTERED and not ModelVersion.objects.filter(
            agent=agent, status=ModelStatus.LIVE
        ).exists():
            model_version_transition(version=baseline, to_status=ModelStatus.LIVE, reason="demo: serves today")
        model_version_register(
            agent=agent,
            provider=provider,
            model_id=demo_fine_tuned_model_id(slug),
            base_model=DEMO_BASE_MODEL,
            kind=ModelKind.FINE_TUNED,
            reason="demo: the prototype's fine-tune",
        )
    out.write(f"registry: provider '{DEMO_PROVIDER}' at {provider.base_url}, {len(DEMO_AGENTS)} agents with a live baseline and a fine-tuned candidate")
