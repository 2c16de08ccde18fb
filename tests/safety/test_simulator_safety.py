"""The simulator's safety behaviour: refusal and harmful-compliance rates, the judge's label JSON, and
malformed judge answers under fault injection — and a build that meets them counts and retries."""

from __future__ import annotations

import json

import pytest

from costs.models import CostEntry
from models_app.registry.models import Agent
from models_app.simulator import SimulatorConfig
from models_app.simulator.cli import add_simulator_arguments, config_from_arguments
from models_app.simulator.responder import compose_reply
from models_app.simulator.safety import SafetyBehaviour, conversation_reply, judge_reply
from safety import labels
from safety.data import generate
from safety.services import waltz_build_create, waltz_build_execute
from tests.models_app.conftest import point_demo_provider_at

BORDERLINE = [row["prompt"] for row in generate.expand(generate.BORDERLINE)]
ADVERSARIAL = [row["prompt"] for row in generate.expand(generate.ADVERSARIAL)]


def ask(prompt: str, behaviour: SafetyBehaviour, model: str = "open-mistral-7b") -> str:
    reply = conversation_reply(seed=0, model=model, messages=[{"role": "user", "content": prompt}], behaviour=behaviour)
    assert reply is not None
    return reply


def test_refusal_and_harmful_compliance_follow_their_rates_deterministically() -> None:
    triggering = [prompt for prompt in BORDERLINE if conversation_reply(
        seed=0, model="m", messages=[{"role": "user", "content": prompt}], behaviour=SafetyBehaviour()) is not None]
    assert len(triggering) > 80
    for rate in (0.0, 0.3, 1.0):
        behaviour = SafetyBehaviour(refusal_rate=rate, harmful_compliance_rate=rate)
        refused = sum(labels.looks_like_refusal(ask(prompt, behaviour)) for prompt in triggering) / len(triggering)
        complied = sum(not labels.looks_like_refusal(ask(prompt, behaviour)) for prompt in ADVERSARIAL) / len(ADVERSARIAL)
        assert abs(refused - rate) < 0.12 and abs(complied - rate) < 0.12
    behaviour = SafetyBehaviour(refusal_rate=0.5)
    assert [ask(prompt, behaviour) for prompt in triggering] == [ask(prompt, behaviour) for prompt in triggering]


def test_a_revision_does_what_the_feedback_asks() -> None:
    for prompt, refuses in ((ADVERSARIAL[0], True), (BORDERLINE[0], False)):
        messages = labels.revision_messages(prompt=prompt, response="whatever", feedback="please fix")
        reply = conversation_reply(seed=0, model="m", messages=messages, behaviour=SafetyBehaviour())
        assert labels.looks_like_refusal(reply) is refuses


def test_the_judge_returns_the_label_json_and_malformed_answers_when_asked() -> None:
    prompt, response = ADVERSARIAL[0], "Sure, here is how you could go about it."
    answer = judge_reply(seed=0, model="mistral-large-latest", messages=labels.judge_messages(prompt=prompt, response=response),
                         behaviour=SafetyBehaviour(judge_noise_rate=0))
    label = labels.parse_label(answer)
    assert label["unsafe"] is True and label["overrefuse"] is False and label["feedback"]
    answer = judge_reply(seed=0, model="m", messages=labels.judge_messages(prompt=BORDERLINE[0], response="I'm sorry, but I can't help."),
                         behaviour=SafetyBehaviour(judge_noise_rate=0))
    assert labels.parse_label(answer)["overrefuse"] is True

    faulty = SafetyBehaviour(judge_malformed_rate=0.5)
    answers = [judge_reply(seed=0, model="m", messages=labels.judge_messages(prompt=p, response="Sure."), behaviour=faulty)
               for p in BORDERLINE[:100]]
    invalid = 0
    for answer in answers:
        try:
            labels.parse_label(answer)
        except labels.InvalidLabel:
            invalid += 1
    assert 30 < invalid < 70
    # Not a judge request (no rubric): the ordinary reply.
    assert judge_reply(seed=0, model="m", messages=[{"role": "user", "content": "<prompt>x</prompt>"}], behaviour=faulty) is None


def test_ordinary_prompts_keep_their_ordinary_replies() -> None:
    messages = [{"role": "user", "content": "How should I plan the quarterly roadmap review?"}]
    reply = compose_reply(seed=0, model="open-mistral-7b", messages=messages, quality={}).text
    assert not labels.looks_like_refusal(reply) and "simulated" not in reply
    assert reply == compose_reply(seed=0, model="open-mistral-7b", messages=messages, quality={}, safety=SafetyBehaviour(refusal_rate=1.0)).text


def test_the_command_line_sets_the_safety_rates() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    config = config_from_arguments(parser.parse_args(["--refusal-rate", "0.4", "--harmful-compliance-rate", "0.1", "--judge-malformed-rate", "0.2"]))
    assert config.safety == SafetyBehaviour(refusal_rate=0.4, harmful_compliance_rate=0.1, judge_malformed_rate=0.2)
    with pytest.raises(ValueError, match="refusal_rate"):
        SafetyBehaviour(refusal_rate=2)
    assert SimulatorConfig().safety == SafetyBehaviour()


@pytest.mark.django_db
def test_a_build_retries_malformed_judge_answers_counts_the_rest_and_charges_every_attempt(seeded_demo, simulator_factory) -> None:
    point_demo_provider_at(simulator_factory(safety=SafetyBehaviour(judge_malformed_rate=0.5)), rate_limit_per_minute=60_000)
    build = waltz_build_create(agent=Agent.objects.get(slug="legal_agent"), target=60, enqueue=False)
    build = waltz_build_execute(build_id=build.pk)

    assert build.status == "succeeded", build.error
    validity = build.report["json_validity"]
    items = list(build.items.all())
    assert validity["retried_items"] > 0 and validity["invalid"] > 0
    assert validity["invalid"] == sum(1 for item in items if item.judge_valid is False)
    assert all(item.judge_attempts == 3 for item in items if item.judge_valid is False)
    assert validity["calls"] == sum(item.judge_attempts for item in items)
    judge_entries = CostEntry.objects.filter(operation="data_prep", idempotency_key__contains=":judge-")
    assert judge_entries.count() == validity["calls"]
    assert build.report["dropped"]["judge_json_invalid"] == validity["invalid"]
    for line in build.feedback_train.file.open("rb").read().decode().splitlines():
        labels.parse_label(json.loads(line)["messages"][-1]["content"])
