"""Model registry services: registration, lifecycle transitions (legal and illegal), history."""

from __future__ import annotations

import pytest

from genesis.errors import Conflict, InvalidInput, PermissionDenied
from models_app.registry import lifecycle
from models_app.registry.models import ModelStatus, ModelVersion
from models_app.registry.services import model_version_register, model_version_transition
from tests.factories import AgentFactory, ModelVersionFactory, ProviderAccountFactory, UserFactory

pytestmark = pytest.mark.django_db


def walk(version: ModelVersion, *statuses: str) -> ModelVersion:
    for status in statuses:
        version = model_version_transition(version=version, to_status=status, reason=f"to {status}")
    return version


def test_full_lifecycle_of_a_fine_tune_retires_the_previous_live_version():
    agent = AgentFactory(slug="qa_agent")
    baseline = walk(ModelVersionFactory(agent=agent, model_id="open-mistral-7b", kind="baseline"), "live")
    candidate = walk(ModelVersionFactory(agent=agent), "benchmarking", "approved_for_rollout", "rolling_out", "live")
    baseline.refresh_from_db()
    assert candidate.status == ModelStatus.LIVE
    assert baseline.status == ModelStatus.RETIRED
    assert ModelVersion.objects.filter(agent=agent, status="live").count() == 1


@pytest.mark.parametrize(
    ("path", "target", "message"),
    [
        ((), "rolling_out", "a registered version cannot become rolling_out"),
        (("benchmarking",), "live", "a benchmarking version cannot become live"),
        (("benchmarking", "rejected"), "approved_for_rollout", "only by overriding its verdict"),
        (("benchmarking", "rejected", "retired"), "registered", r"allowed next: none \(final state\)"),
        ((), "live", "cannot become live without a benchmark"),
        ((), "registered", "already registered"),
        ((), "shipped", "'shipped' is not a model status"),
    ],
)
def test_illegal_transitions_are_refused_with_a_message(path, target, message):
    version = walk(ModelVersionFactory(), *path)
    with pytest.raises(Conflict, match=message):
        model_version_transition(version=version, to_status=target)
    assert ModelVersion.objects.get(pk=version.pk).status == (path[-1] if path else "registered")


def test_every_listed_transition_is_accepted_by_the_table():
    for current, targets in lifecycle.ALLOWED_TRANSITIONS.items():
        for target in targets:
            kind = "baseline"  # a baseline may skip the benchmark; everything else is the same
            overridden = current == "rejected" and target == "approved_for_rollout"
            assert lifecycle.transition_refusal(current=current, target=target, kind=kind, verdict_overridden=overridden) is None


def test_override_lets_an_unbenchmarked_fine_tune_be_approved():
    version = ModelVersionFactory()
    assert lifecycle.transition_refusal(current="registered", target="approved_for_rollout", kind="fine_tuned")
    model_version_transition(version=version, to_status="approved_for_rollout", reason="judged by hand", verdict_overridden=True)
    assert ModelVersion.objects.get(pk=version.pk).status == "approved_for_rollout"


def test_history_records_who_and_why():
    user = UserFactory(is_superuser=True)
    version = ModelVersionFactory()
    model_version_transition(version=version, to_status="benchmarking", actor=user, reason="nightly benchmark")
    latest = version.history.latest()
    assert latest.status == "benchmarking"
    assert latest.history_user == user
    assert latest.history_change_reason == "nightly benchmark"
    assert latest.prev_record.status == "registered"


def test_a_long_reason_is_kept_whole_with_who_at_its_end():
    """Status reasons name who at their end; the history column cut them at 100 characters."""
    user = UserFactory(is_superuser=True)
    version = ModelVersionFactory()
    reason = "benchmark run #12 PASS: relative improvement +10.4 % (95 % interval +6.1 % to +14.9 %), approved by the second reviewer"
    model_version_transition(version=version, to_status="benchmarking", actor=user, reason=reason)
    assert len(reason) > 100 and version.history.latest().history_change_reason == reason


def test_user_without_permission_is_refused():
    clerk = UserFactory(username="clerk")
    version = ModelVersionFactory()
    with pytest.raises(PermissionDenied, match="user 'clerk' may not change model status"):
        model_version_transition(version=version, to_status="benchmarking", actor=clerk)


def test_register_is_idempotent_and_validates():
    agent, provider = AgentFactory(), ProviderAccountFactory()
    first = model_version_register(agent=agent, provider=provider, model_id="m", base_model="b", kind="fine_tuned")
    again = model_version_register(agent=agent, provider=provider, model_id="m", base_model="b", kind="fine_tuned")
    assert first.pk == again.pk
    with pytest.raises(InvalidInput, match="kind: 'huge' is not one of"):
        model_version_register(agent=agent, provider=provider, model_id="n", base_model="b", kind="huge")


def test_by_hand_a_person_may_only_retire_or_reject_or_put_a_baseline_live():
    from models_app.registry.services import model_version_change_status_by_hand

    user = UserFactory(username="operator", is_superuser=True)
    candidate = walk(ModelVersionFactory(), "benchmarking", "approved_for_rollout")
    with pytest.raises(Conflict, match="rolling out and going live from an approved rollout"):
        model_version_change_status_by_hand(version=candidate, to_status="rolling_out", actor=user, reason="ship it")
    with pytest.raises(InvalidInput, match="reason: say why"):
        model_version_change_status_by_hand(version=candidate, to_status="rejected", actor=user, reason=" ")
    rejected = model_version_change_status_by_hand(version=candidate, to_status="rejected", actor=user, reason="bad tone")
    assert rejected.status == "rejected"
    baseline = ModelVersionFactory(kind="baseline", model_id="open-mistral-nemo")
    assert model_version_change_status_by_hand(version=baseline, to_status="live", actor=user, reason="new base").status == "live"


def test_manual_targets_never_offer_rollout_states():
    for current in lifecycle.ALLOWED_TRANSITIONS:
        for kind in ("baseline", "fine_tuned"):
            offered = set(lifecycle.manual_targets(current=current, kind=kind))
            assert not offered & {"benchmarking", "approved_for_rollout", "rolling_out", "registered"}
            assert ("live" in offered) == (kind == "baseline" and current == "registered")


@pytest.mark.parametrize("name", ["DATABASE_URL", "GENESIS_SECRET_KEY", "lowercase_api_key", "MISTRAL_KEY"])
def test_provider_key_variable_must_be_an_api_key(name, provider_hosts):
    from models_app.registry.services import provider_account_upsert

    provider_hosts("VLLM_API_KEY=127.0.0.1:9")

    with pytest.raises(InvalidInput, match=f"api_key_env: '{name}' is not allowed"):
        provider_account_upsert(name="evil", kind="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key_env=name)
    assert provider_account_upsert(name="ok", kind="openai_compatible", base_url="http://127.0.0.1:9/v1",
                                   api_key_env="VLLM_API_KEY").api_key_env == "VLLM_API_KEY"
