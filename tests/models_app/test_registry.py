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
            # Under its most permissive conditions: an agent's first baseline going live, and approval
            # without a PASS only by a verdict override (a baseline's too, since the security review).
            overridden = target == "approved_for_rollout" and current in ("registered", "rejected")
            assert lifecycle.transition_refusal(
                current=current, target=target, kind="baseline", agent_has_live=False, verdict_overridden=overridden
            ) is None


def test_override_lets_an_unbenchmarked_fine_tune_be_approved():
    version = ModelVersionFactory()
    for kind in ("fine_tuned", "baseline"):
        assert lifecycle.transition_refusal(current="registered", target="approved_for_rollout", kind=kind, agent_has_live=True)
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
            for agent_has_live in (False, True):
                offered = set(lifecycle.manual_targets(current=current, kind=kind, agent_has_live=agent_has_live))
                assert not offered & {"benchmarking", "approved_for_rollout", "rolling_out", "registered"}
                # Live by hand: only an agent's first baseline. A live version is offered nothing.
                assert ("live" in offered) == (kind == "baseline" and current == "registered" and not agent_has_live)
                assert not (current == "live" and offered)


def test_a_baseline_goes_live_by_hand_only_as_the_agents_first_model():
    """Security review, finding 1: registry permissions alone put any self-declared "baseline" live
    over the agent's live model (no benchmark, no four-eyes). Now only an agent's first one."""
    from models_app.registry.services import model_version_change_status_by_hand

    user = UserFactory(username="operator", is_superuser=True)
    agent = AgentFactory(slug="qa_agent")
    first = ModelVersionFactory(agent=agent, kind="baseline", model_id="open-mistral-7b")
    assert model_version_change_status_by_hand(version=first, to_status="live", actor=user, reason="serves today").status == "live"

    untested = ModelVersionFactory(agent=agent, kind="baseline", model_id="untested-model-x")
    with pytest.raises(Conflict, match="the agent already has a live version, and a baseline goes live by hand only as an agent's first model"):
        model_version_change_status_by_hand(version=untested, to_status="live", actor=user, reason="x")
    # Not as Genesis either (seed_demo, a service): the rule is the lifecycle's, not the admin's.
    with pytest.raises(Conflict, match="the agent already has a live version"):
        model_version_transition(version=untested, to_status="live", reason="x")
    assert ModelVersion.objects.get(pk=untested.pk).status == "registered"
    assert ModelVersion.objects.get(pk=first.pk).status == "live"
    # The way that remains: a rollout completing (the experiment services), which retires the old one.
    replaced = walk(untested, "benchmarking", "approved_for_rollout", "rolling_out", "live")
    assert replaced.status == "live" and ModelVersion.objects.get(pk=first.pk).status == "retired"


def test_a_rolling_out_version_is_not_rejected_by_hand_even_from_a_stale_read():
    """Race review, finding 1: a version serving an experiment's treatment arm was rejected by hand while
    the experiment kept routing users to it. Its ways out are the rollout's: rollback or completion."""
    from models_app.registry.services import model_version_change_status_by_hand

    user = UserFactory(username="operator", is_superuser=True)
    stale = walk(ModelVersionFactory(), "benchmarking", "approved_for_rollout")
    walk(ModelVersion.objects.get(pk=stale.pk), "rolling_out")  # the rollout starts after the page was read
    assert lifecycle.manual_targets(current="rolling_out", kind="fine_tuned", agent_has_live=True) == []
    with pytest.raises(Conflict, match="it serves its experiment's treatment arm: roll the experiment back"):
        model_version_change_status_by_hand(version=stale, to_status="rejected", actor=user, reason="bad tone")
    assert ModelVersion.objects.get(pk=stale.pk).status == "rolling_out"


def test_the_live_version_is_not_retired_by_hand():
    """Retiring the live model, then putting any registered baseline live as the agent's "first" one,
    would be the same by-hand replacement in two steps."""
    from models_app.registry.services import model_version_change_status_by_hand

    user = UserFactory(username="operator", is_superuser=True)
    live = walk(ModelVersionFactory(kind="baseline", model_id="open-mistral-7b"), "live")
    assert lifecycle.manual_targets(current="live", kind="baseline", agent_has_live=False) == []
    with pytest.raises(Conflict, match="a live version is retired only when its successor goes live"):
        model_version_change_status_by_hand(version=live, to_status="retired", actor=user, reason="switch it off")
    with pytest.raises(Conflict, match="a live version is retired only when its successor goes live"):
        model_version_transition(version=live, to_status="retired", reason="switch it off")
    assert ModelVersion.objects.get(pk=live.pk).status == "live"


@pytest.mark.parametrize("model_id", ["ft:open-mistral-7b:0123abcd:20261101:deadbeef", "ft:mistral-small-latest:my-suffix:1a2b3c4d"])
def test_a_fine_tuned_model_id_cannot_be_registered_as_a_baseline(model_id):
    agent, provider = AgentFactory(), ProviderAccountFactory()
    with pytest.raises(InvalidInput, match="is a fine-tuned model .* register it as fine_tuned"):
        model_version_register(agent=agent, provider=provider, model_id=model_id, base_model="open-mistral-7b", kind="baseline")
    assert not ModelVersion.objects.filter(agent=agent).exists()
    assert model_version_register(agent=agent, provider=provider, model_id=model_id, base_model="open-mistral-7b",
                                  kind="fine_tuned").kind == "fine_tuned"


@pytest.mark.parametrize("name", ["DATABASE_URL", "GENESIS_SECRET_KEY", "lowercase_api_key", "MISTRAL_KEY"])
def test_provider_key_variable_must_be_an_api_key(name, provider_hosts):
    from models_app.registry.services import provider_account_upsert

    provider_hosts("VLLM_API_KEY=127.0.0.1:9")

    with pytest.raises(InvalidInput, match=f"api_key_env: '{name}' is not allowed"):
        provider_account_upsert(name="evil", kind="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key_env=name)
    assert provider_account_upsert(name="ok", kind="openai_compatible", base_url="http://127.0.0.1:9/v1",
                                   api_key_env="VLLM_API_KEY").api_key_env == "VLLM_API_KEY"
