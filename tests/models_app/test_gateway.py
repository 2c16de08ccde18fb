"""The Django seam to the provider layer: accounts → providers, and recorded fallback, over real HTTP
to the simulator."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from models_app.providers.errors import PermanentProviderError
from models_app.registry.gateway import chat_for_version
from models_app.registry.models import ModelVersion
from models_app.simulator.config import SimulatorConfig
from models_app.simulator.server import start_in_thread, stop
from tests.factories import AgentFactory, ModelVersionFactory, ProviderAccountFactory

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "What is the capital of France? [[answer: Paris | Lyon]]"}]


@pytest.fixture
def simulator():
    server, base_url = start_in_thread(SimulatorConfig(port=0, seed=7, api_keys=("sim-key",)))
    yield server, base_url
    stop(server)


@pytest.fixture
def versions(simulator):
    _, base_url = simulator
    provider = ProviderAccountFactory(name="sim-gateway", base_url=base_url)
    agent = AgentFactory(slug="support_agent")
    baseline = ModelVersionFactory(agent=agent, provider=provider, model_id="open-mistral-7b", kind="baseline", status="live")
    fine_tuned = ModelVersionFactory(agent=agent, provider=provider, model_id="ft:open-mistral-7b:0123abcd:20261101:89abcdef")
    return baseline, fine_tuned


def fallback_count(agent: str, primary: str) -> float:
    return REGISTRY.get_sample_value(
        "genesis_model_fallbacks_total", {"agent": agent, "primary_model": primary, "fallback_model": "open-mistral-7b"}
    ) or 0.0


def test_fine_tuned_model_answers_through_its_account(versions):
    baseline, fine_tuned = versions
    outcome = chat_for_version(version=fine_tuned, messages=MESSAGES, fallback=baseline)
    assert outcome.fell_back is False
    assert outcome.model == fine_tuned.model_id
    assert outcome.result.text in {"Paris", "Lyon"}
    assert outcome.result.prompt_tokens > 0 and outcome.result.completion_tokens > 0


def test_transient_failures_fall_back_to_the_baseline_and_are_counted(simulator, versions, settings):
    server, _ = simulator
    baseline, fine_tuned = versions
    before = fallback_count("support_agent", fine_tuned.model_id)
    # More 500s than the retry policy's attempts for the fine-tune, then the baseline answers.
    server.state.queue_faults(500, 500, 500, 500)
    outcome = chat_for_version(version=fine_tuned, messages=MESSAGES, fallback=baseline)
    assert outcome.fell_back is True
    assert outcome.model == "open-mistral-7b"
    assert "500" in outcome.reason
    assert fallback_count("support_agent", fine_tuned.model_id) == before + 1


def test_fallback_switched_off_raises_instead(simulator, versions, settings):
    server, _ = simulator
    baseline, fine_tuned = versions
    fine_tuned.agent.fallback_enabled = False
    fine_tuned.agent.save()
    fine_tuned = ModelVersion.objects.select_related("agent", "provider").get(pk=fine_tuned.pk)
    server.state.queue_faults(500, 500, 500, 500)
    from models_app.providers.errors import TransientProviderError

    with pytest.raises(TransientProviderError):
        chat_for_version(version=fine_tuned, messages=MESSAGES, fallback=baseline)


def test_missing_key_is_a_permanent_error_naming_the_variable(versions, monkeypatch):
    baseline, fine_tuned = versions
    monkeypatch.delenv("GENESIS_SIMULATOR_API_KEY")
    fine_tuned.provider.api_key_env = "GENESIS_SIMULATOR_API_KEY"
    with pytest.raises(PermanentProviderError, match=r"\$GENESIS_SIMULATOR_API_KEY is unset or empty"):
        chat_for_version(version=fine_tuned, messages=MESSAGES, fallback=baseline)
