"""POST /outcomes: 202 with accepted / duplicates / per-index rejections, idempotent on event_id, the
1 000-event limit, agent permissions, and attribution of each event to its user's assigned arm
(more in test_attribution.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from experiments.models import Assignment, OutcomeEvent
from experiments.services import experiment_start
from tests.experiments.factories import draft_experiment, outcome_events, rollout_team, user_in_arm

pytestmark = pytest.mark.django_db

# A past time within the outcome retention (GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, 90 days): a fixed date
# would be refused as too old once the calendar moved past it.
A_MONTH_AGO = (datetime.now(UTC) - timedelta(days=30)).replace(hour=10, minute=0, second=0, microsecond=0)


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def post(client, key: str, events: list):
    return client.post("/api/v1/outcomes", {"events": events}, content_type="application/json", **bearer(key))


def event(**changes):
    base = {"event_id": "e-1", "agent": "qa_agent", "user_id": "u-1", "model": "open-mistral-7b",
            "success": True, "latency_ms": 350.5}
    return {**base, **changes}


@pytest.fixture
def running():
    team = rollout_team()
    return experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])


def test_a_valid_batch_is_accepted_with_202(client, running, api_key_for):
    events = outcome_events(running, arm="treatment", n=30, success_rate=0.8, quality=0.7)
    response = post(client, api_key_for("qa_agent"), events)
    assert response.status_code == 202
    assert response.json() == {"accepted": 30, "duplicates": 0, "rejected": [], "uncharged": []}
    stored = OutcomeEvent.objects.filter(experiment=running, variant="treatment")
    assert stored.count() == 30 and stored.filter(success=True).count() == 24


def test_a_repeated_event_id_is_counted_once(client, running, api_key_for):
    key = api_key_for("qa_agent")
    events = outcome_events(running, arm="control", n=10, success_rate=0.9)
    assert post(client, key, events).json() == {"accepted": 10, "duplicates": 0, "rejected": [], "uncharged": []}
    assert post(client, key, events).json() == {"accepted": 0, "duplicates": 10, "rejected": [], "uncharged": []}
    # Twice within one batch, and once more next to a new event.
    fresh = event(event_id="new-1")
    assert post(client, key, [fresh, fresh, events[0]]).json() == {"accepted": 1, "duplicates": 2, "rejected": [], "uncharged": []}
    assert OutcomeEvent.objects.count() == 11


def test_each_bad_event_is_rejected_by_index_and_the_rest_accepted(client, running, api_key_for):
    events = [
        event(event_id="ok-0"),
        event(event_id="bad-1", quality=1.5),
        {"event_id": "bad-2", "agent": "qa_agent"},
        event(event_id="bad-3", latency_ms=-1),
        event(event_id="bad-4", success="yes"),
        event(event_id="bad-5", agent="nobody_agent"),
        "not an object",
        event(event_id="ok-7", occurred_at=f"{A_MONTH_AGO:%Y-%m-%dT%H:%M:%SZ}", input_tokens=12, output_tokens=30),
        event(event_id="", user_id="u"),
        event(event_id="bad-9", latency_ms="fast"),
    ]
    # A key for all agents: one for qa_agent alone would be refused the batch for nobody_agent (403).
    body = post(client, api_key_for(all_agents=True), events).json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    rejected = {item["index"]: item["detail"] for item in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert rejected[1].startswith("quality: ") and "less than or equal to 1" in rejected[1]
    assert "user_id: Field required" in rejected[2] and "success: Field required" in rejected[2]
    assert rejected[3].startswith("latency_ms: ") and "greater than or equal to 0" in rejected[3]
    assert rejected[4] == "success: Value error, must be true or false"
    assert rejected[5] == "agent: 'nobody_agent' does not exist"
    assert rejected[6] == "event: must be an object"
    assert rejected[8].startswith("event_id: ")
    assert rejected[9].startswith("latency_ms: ")
    seven = OutcomeEvent.objects.get(event_id="ok-7")
    assert seven.occurred_at == A_MONTH_AGO
    assert (seven.input_tokens, seven.output_tokens) == (12, 30)


def test_numbers_and_times_are_taken_only_as_the_schema_types_them(client, running, api_key_for):
    # Was: accepted and stored changed — true as 1, "1e3" as 1000, 5.0 tokens as 5 and a number as
    # seconds since 1970. A date alone is ISO-8601 (the contract's word): midnight UTC.
    wrong = [
        {"latency_ms": True}, {"latency_ms": "1e3"}, {"latency_ms": "12"}, {"quality": True},
        {"input_tokens": True}, {"input_tokens": "5"}, {"output_tokens": 5.0},
        {"occurred_at": 1733000000}, {"occurred_at": "1733000000"}, {"occurred_at": "12/06/2026"},
    ]
    right = [{"latency_ms": 12}, {"quality": 1}, {"input_tokens": 5}, {"occurred_at": f"{A_MONTH_AGO:%Y-%m-%d} 10:00:00+00:00"},
             {"occurred_at": f"{A_MONTH_AGO:%Y-%m-%d}"}]
    events = [event(event_id=f"w-{n}", **change) for n, change in enumerate(wrong)]
    events += [event(event_id=f"r-{n}", **change) for n, change in enumerate(right)]
    body = post(client, api_key_for("qa_agent"), events).json()
    rejected = {item["index"]: item["detail"] for item in body["rejected"]}
    assert sorted(rejected) == list(range(len(wrong))) and body["accepted"] == len(right)
    for index, change in enumerate(wrong):
        assert rejected[index].startswith(f"{next(iter(change))}: "), rejected[index]
    assert "ISO-8601 date-time" in rejected[7]


def test_an_event_older_than_the_outcome_retention_is_rejected_naming_it(client, running, api_key_for, settings):
    """Money review: an outcome the retention prune may have deleted, sent again, was stored and
    charged again; one older than the retention is now rejected (test_retention.py has the whole story)."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS = 90
    old = (datetime.now(UTC) - timedelta(days=100)).replace(microsecond=0)
    body = post(client, api_key_for("qa_agent"), [event(event_id="old", occurred_at=old.isoformat()), event(event_id="new")]).json()
    assert body["accepted"] == 1 and [item["index"] for item in body["rejected"]] == [0]
    assert body["rejected"][0]["detail"].startswith(
        f"occurred_at: {old.isoformat()} is older than the 90-day outcome retention (GENESIS_RETAIN_LIVE_OUTCOMES_DAYS; received at ")
    assert list(OutcomeEvent.objects.values_list("event_id", flat=True)) == ["new"]


def test_more_than_1000_events_is_422(client, running, api_key_for):
    events = [event(event_id=f"e-{i}") for i in range(1001)]
    response = post(client, api_key_for("qa_agent"), events)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("events: ")
    assert not OutcomeEvent.objects.exists()
    assert post(client, api_key_for("qa_agent"), events[:1000]).json()["accepted"] == 1000


def test_a_key_may_report_only_for_its_agents(client, running, api_key_for):
    from tests.factories import AgentFactory

    AgentFactory(slug="legal_agent")
    response = post(client, api_key_for("qa_agent"), [event(), event(event_id="e-2", agent="legal_agent")])
    assert response.status_code == 403
    assert response.json()["detail"] == "API key 'test qa_agent' may not act for agent 'legal_agent'"
    # Only existing agents are asked about (an unknown one rejects its own event; an invalid event's
    # agent is not looked at): the refusal names legal_agent alone.
    response = post(client, api_key_for("qa_agent"), [
        event(), event(event_id="e-2", agent="nobody_agent"), event(event_id="e-3", agent="legal_agent"),
        event(event_id="e-4", agent="other_agent", success="yes"),
    ])
    assert response.status_code == 403
    assert response.json()["detail"] == "API key 'test qa_agent' may not act for agent 'legal_agent'"
    assert not OutcomeEvent.objects.exists()
    # Without the other agent's event, the unknown agent's event is rejected on its own (CONTRACT).
    body = post(client, api_key_for("qa_agent"), [event(), event(event_id="e-2", agent="nobody_agent")]).json()
    assert body["accepted"] == 1 and body["rejected"] == [{"index": 1, "detail": "agent: 'nobody_agent' does not exist"}]
    assert post(client, "gk_nope", [event()]).status_code == 401


def test_events_count_in_the_arm_their_user_was_assigned_to_whichever_model_served(client, running, api_key_for):
    key = api_key_for("qa_agent")
    treated = user_in_arm(running, "treatment", percent=10, base="u-t")
    controlled = user_in_arm(running, "control", percent=10, base="u-c")
    control_model, treatment_model = running.control.model_id, running.treatment.model_id
    body = post(client, key, [
        event(event_id="t", user_id=treated, model=treatment_model),
        event(event_id="t-fallback", user_id=treated, model=control_model, success=False),  # the candidate failed
        event(event_id="c", user_id=controlled, model=control_model),
        event(event_id="c-other", user_id=controlled, model="some-other-model"),
    ]).json()
    assert body["accepted"] == 4
    arms = dict(OutcomeEvent.objects.filter(experiment=running).values_list("event_id", "variant"))
    assert arms == {"t": "treatment", "t-fallback": "treatment", "c": "control", "c-other": "control"}
    assert OutcomeEvent.objects.get(event_id="t-fallback").model == control_model  # what served stays on the row
    # Agents that route in-process never call /route: their outcomes record the exposure, in the
    # assigned arm only (a fallback does not put the user in control too).
    assert set(Assignment.objects.values_list("user_id", "variant", "stage__percent")) == {
        (treated, "treatment", 10), (controlled, "control", 10)
    }


def test_without_an_experiment_outcomes_are_stored_as_live(client, api_key_for):
    team = rollout_team()
    draft_experiment(actor=team["starter"])
    assert post(client, api_key_for("qa_agent"), [event()]).status_code == 202
    stored = OutcomeEvent.objects.get()
    assert (stored.variant, stored.experiment) == ("live", None)
    assert not Assignment.objects.exists()


def test_an_empty_batch_is_fine(client, running, api_key_for):
    assert post(client, api_key_for("qa_agent"), []).json() == {"accepted": 0, "duplicates": 0, "rejected": [], "uncharged": []}


def test_tokens_become_inference_cost_on_the_ledger_once(client, running, api_key_for):
    from datetime import date
    from decimal import Decimal

    from costs.models import CostEntry
    from costs.services import price_upsert

    price_upsert(model="open-mistral-7b", effective_from=date(2024, 1, 1), input_usd_per_million="0.25",
                 output_usd_per_million="0.75", source="test price list", source_date=date(2024, 1, 1))
    key = api_key_for("qa_agent")
    events = [
        # The candidate is priced as its base model (no prices of its own).
        event(event_id="t-1", model=running.treatment.model_id, input_tokens=1_000, output_tokens=2_000),
        event(event_id="t-2", model=running.treatment.model_id, input_tokens=3_000, output_tokens=0),
        event(event_id="c-1", model=running.control.model_id, input_tokens=4_000, output_tokens=4_000),
        event(event_id="n-1", model="unpriced-model", input_tokens=10, output_tokens=10),
        event(event_id="z-1"),  # no tokens: no cost
    ]
    assert post(client, key, events).json()["accepted"] == 5
    costs = dict(OutcomeEvent.objects.values_list("event_id", "cost_usd"))
    assert costs["t-1"] == Decimal("0.00175")  # 1 000 × 0.25 + 2 000 × 0.75, per million
    assert costs["t-2"] == Decimal("0.00075")
    assert costs["c-1"] == Decimal("0.004")
    assert costs["n-1"] is None and costs["z-1"] is None
    ledger = {entry.model: entry for entry in CostEntry.objects.filter(operation="inference")}
    assert set(ledger) == {running.treatment.model_id, running.control.model_id}
    assert ledger[running.treatment.model_id].amount_usd == Decimal("0.0025")
    assert (ledger[running.treatment.model_id].input_tokens, ledger[running.treatment.model_id].output_tokens) == (4_000, 2_000)
    assert ledger[running.control.model_id].amount_usd == Decimal("0.004")

    assert post(client, key, events).json()["duplicates"] == 5
    assert CostEntry.objects.filter(operation="inference").count() == 2  # a resent batch is charged nothing


def test_each_outcomes_cost_is_exact_to_its_eight_places_and_the_ledger_rounds_their_sum_once(client, running, api_key_for):
    """Money review: each outcome's cost was rounded to the micro-dollar before it was stored and
    summed, so a thousand one-token events at $0.25/M put $0.000000 on the ledger (true: $0.00025), and
    a thousand of 1 input + 2 output tokens at $0.25/$0.75 put $0.002 (true: $0.00175)."""
    from datetime import date
    from decimal import Decimal

    from costs.models import CostEntry
    from costs.services import price_upsert

    price_upsert(model="open-mistral-7b", effective_from=date(2024, 1, 1), input_usd_per_million="0.25",
                 output_usd_per_million="0.75", source="test price list", source_date=date(2024, 1, 1))
    key = api_key_for("qa_agent")
    model = running.control.model_id

    one_token = [event(event_id=f"one-{i}", user_id=f"u-{i}", model=model, input_tokens=1, output_tokens=0) for i in range(1000)]
    assert post(client, key, one_token).json()["accepted"] == 1000
    assert set(OutcomeEvent.objects.values_list("cost_usd", flat=True)) == {Decimal("0.00000025")}
    assert CostEntry.objects.get(operation="inference").amount_usd == Decimal("0.000250")

    three_tokens = [event(event_id=f"three-{i}", user_id=f"u-{i}", model=model, input_tokens=1, output_tokens=2) for i in range(1000)]
    assert post(client, key, three_tokens).json()["accepted"] == 1000
    assert set(OutcomeEvent.objects.filter(event_id__startswith="three-").values_list("cost_usd", flat=True)) == {Decimal("0.00000175")}
    assert sorted(CostEntry.objects.filter(operation="inference").values_list("amount_usd", flat=True)) == [
        Decimal("0.000250"), Decimal("0.001750")]


def test_the_answer_names_the_events_whose_tokens_could_not_be_charged(client, running, api_key_for):
    # Was: a 202 saying nothing, and only a line in the server's log, so the sender could not tell
    # that part of its cost was missing from the ledger.
    from costs.models import CostEntry
    from costs.services import price_upsert
    from tests.factories import ModelVersionFactory

    # Dates within the outcome retention (90 days), where an event is still taken.
    price_from, before_price = A_MONTH_AGO.date(), A_MONTH_AGO.date() - timedelta(days=10)
    price_upsert(model="open-mistral-7b", effective_from=price_from, input_usd_per_million="0.25",
                 output_usd_per_million="0.75", source="test price list", source_date=price_from)
    ModelVersionFactory(agent=running.agent, model_id="unpriced-model")  # the agent's, with no price
    events = [
        event(event_id="priced", input_tokens=100, output_tokens=100),
        event(event_id="n-1", model="unpriced-model", input_tokens=10, output_tokens=0),
        event(event_id="o-1", model="other-model", output_tokens=5),
        event(event_id="n-no-tokens", model="unpriced-model"),  # nothing to charge
        event(event_id="n-zero", model="unpriced-model", input_tokens=0, output_tokens=0),
        event(event_id="bad", model="unpriced-model", input_tokens=-1),  # rejected, not uncharged
        event(event_id="n-2", model="unpriced-model", input_tokens=7),
        event(event_id="n-1", model="unpriced-model", input_tokens=10),  # a duplicate in the batch
        event(event_id="before-price", input_tokens=3, occurred_at=f"{before_price}T12:00:00Z"),  # priced only from later
    ]
    key = api_key_for("qa_agent")
    body = post(client, key, events).json()
    assert (body["accepted"], body["duplicates"], [item["index"] for item in body["rejected"]]) == (7, 1, [5])
    uncharged = {item["model"]: item for item in body["uncharged"]}
    assert [item["model"] for item in body["uncharged"]] == ["open-mistral-7b", "other-model", "unpriced-model"]
    assert {model: item["indexes"] for model, item in uncharged.items()} == {
        "open-mistral-7b": [8], "other-model": [2], "unpriced-model": [1, 6],
    }
    assert uncharged["unpriced-model"]["detail"].startswith("no price for model 'unpriced-model' in force on ")
    assert f"on {before_price}:" in uncharged["open-mistral-7b"]["detail"]
    assert uncharged["other-model"]["detail"].startswith("model 'other-model' is not a registered model of 'qa_agent'")
    assert CostEntry.objects.filter(operation="inference").count() == 1  # only "priced"
    # Sent again: duplicates, charged nothing and listed nowhere.
    assert post(client, key, events).json() == {
        "accepted": 0, "duplicates": 8, "rejected": body["rejected"], "uncharged": [],
    }


def test_an_agent_key_cannot_put_another_models_spend_on_the_shared_budget(client, running, api_key_for):
    # A security review put $160 on the shared budget with one event naming an expensive model the
    # agent does not run, and every agent's paid work was refused. Tokens are charged only for the
    # agent's own model versions — not for a model registered to another agent either.
    from datetime import date

    from costs.models import CostEntry
    from costs.services import price_upsert
    from tests.factories import AgentFactory, ModelVersionFactory

    price_upsert(model="mistral-large-latest", effective_from=date(2024, 6, 1), input_usd_per_million="8",
                 output_usd_per_million="24", source="test price list", source_date=date(2024, 6, 1))
    ModelVersionFactory(agent=AgentFactory(slug="legal_agent"), model_id="mistral-large-latest")
    burn = event(event_id="burn", model="mistral-large-latest", input_tokens=10_000_000, output_tokens=10_000_000)
    body = post(client, api_key_for("qa_agent"), [burn]).json()
    assert body["accepted"] == 1 and [item["indexes"] for item in body["uncharged"]] == [[0]]
    assert "not a registered model of 'qa_agent'" in body["uncharged"][0]["detail"]
    assert not CostEntry.objects.filter(operation="inference").exists()

    ModelVersionFactory(agent=running.agent, model_id="mistral-large-latest")  # now qa_agent's own model
    body = post(client, api_key_for("qa_agent"), [{**burn, "event_id": "served"}]).json()
    assert body["uncharged"] == [] and CostEntry.objects.get(operation="inference").amount_usd == 320


def test_values_that_would_break_the_aggregates_are_rejected_naming_the_field(client, running, api_key_for):
    key = api_key_for("qa_agent")
    response = post(client, key, [event(event_id="slow", latency_ms=1e200), event(event_id="ok", latency_ms=3_600_000),
                                  event(event_id="tokens", input_tokens=2_000_000_000)])
    body = response.json()
    assert response.status_code == 202 and body["accepted"] == 1
    assert [(r["index"], r["detail"].split(":")[0]) for r in body["rejected"]] == [(0, "latency_ms"), (2, "input_tokens")]
    # The results, which square and sum latencies in SQL, still work.
    assert client.get(f"/api/v1/experiments/{running.key}/results", **bearer(key)).status_code == 200


def test_a_nul_in_any_string_field_is_rejected_per_event(client, running, api_key_for):
    events = [event(event_id="e\x00"), event(event_id="e-2", user_id="u\x001"), event(event_id="e-3", model="m\x00"),
              event(event_id="e-4")]
    body = post(client, api_key_for("qa_agent"), events).json()
    assert body["accepted"] == 1
    assert [(r["index"], r["detail"].split(":")[0]) for r in body["rejected"]] == [(0, "event_id"), (1, "user_id"), (2, "model")]
    assert all("NUL" in r["detail"] for r in body["rejected"])


def test_an_event_from_the_future_is_rejected(client, running, api_key_for):
    from datetime import timedelta

    now = datetime.now(UTC)
    events = [event(event_id="future", occurred_at=(now + timedelta(hours=1)).isoformat()),
              event(event_id="skewed", occurred_at=(now + timedelta(minutes=2)).isoformat())]
    body = post(client, api_key_for("qa_agent"), events).json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [0]
    assert body["rejected"][0]["detail"].startswith("occurred_at:") and "in the future" in body["rejected"][0]["detail"]
    assert list(OutcomeEvent.objects.values_list("event_id", flat=True)) == ["skewed"]


def test_event_ids_are_unique_per_agent_not_across_agents(client, api_key_for):
    from models_app.registry.services import model_version_transition
    from tests.factories import AgentFactory, ModelVersionFactory

    for slug in ("qa_agent", "legal_agent"):
        baseline = ModelVersionFactory(agent=AgentFactory(slug=slug), model_id="open-mistral-7b", kind="baseline")
        model_version_transition(version=baseline, to_status="live", reason="test")
    qa, legal = api_key_for("qa_agent"), api_key_for("legal_agent")
    assert post(client, qa, [event(event_id="1")]).json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncharged": []}
    assert post(client, legal, [event(event_id="1", agent="legal_agent")]).json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncharged": []}
    assert post(client, qa, [event(event_id="1")]).json() == {"accepted": 0, "duplicates": 1, "rejected": [], "uncharged": []}
    assert sorted(OutcomeEvent.objects.values_list("agent__slug", "event_id")) == [("legal_agent", "1"), ("qa_agent", "1")]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_a_batch_across_the_midnight_that_ends_a_month_is_charged_to_each_month(client, running, api_key_for, settings, zone):
    """Calendar review: one request's events of an agent and model are one ledger entry per day of
    TIME_ZONE, dated by its newest event — a batch sent just after midnight on the 1st puts its last
    tenth of a second of the old month on the old month's budget, not on the new one's."""
    from decimal import Decimal

    from django.utils import timezone

    from costs.models import CostEntry
    from costs.selectors import budget_status
    from costs.services import budget_upsert, price_upsert

    settings.TIME_ZONE = zone
    price_upsert(model="open-mistral-7b", effective_from=date(2024, 1, 1), input_usd_per_million="1000",
                 output_usd_per_million="0", source="test price list", source_date=date(2024, 1, 1))
    monthly = budget_upsert(name="monthly", amount_usd="100", period="monthly")
    now = timezone.localtime()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)  # the latest midnight of a 1st there
    last_of_old, first_of_new = month_start - timedelta(milliseconds=100), month_start + timedelta(milliseconds=100)
    events = [event(event_id="old", occurred_at=last_of_old.isoformat(), input_tokens=1_000, output_tokens=0),  # $1
              event(event_id="new", user_id="u-2", occurred_at=first_of_new.isoformat(), input_tokens=2_000, output_tokens=0)]

    assert post(client, api_key_for("qa_agent"), events).json()["accepted"] == 2

    entries = CostEntry.objects.filter(operation="inference").order_by("occurred_at")
    assert [(entry.amount_usd, timezone.localtime(entry.occurred_at).day) for entry in entries] == [
        (Decimal("1"), last_of_old.day), (Decimal("2"), 1)]
    assert budget_status(budget=monthly, now=first_of_new).spent == Decimal("2")
    assert budget_status(budget=monthly, now=last_of_old).spent == Decimal("1")


def test_a_model_without_a_price_is_logged_once_a_minute_not_with_every_batch(client, running, api_key_for, caplog, monkeypatch, log_clock):
    """Each batch of such a model met the warning: an agent posting a batch a second logged 3 600 identical
    lines an hour. Now one a minute per process, the next one saying how many it held back."""
    import logging

    from experiments import costing
    from genesis.logging import Throttled
    from tests.factories import ModelVersionFactory

    throttle = Throttled(60.0)
    monkeypatch.setattr(costing, "_unpriced_warnings", throttle)
    ModelVersionFactory(agent=running.agent, model_id="unpriced-model")
    key = api_key_for("qa_agent")
    with caplog.at_level(logging.WARNING, logger="experiments.costing"):
        for batch in range(5):
            assert post(client, key, [event(event_id=f"np-{batch}", model="unpriced-model", input_tokens=5)]).status_code == 202
        log_clock.now = 61.0  # the minute is over
        assert post(client, key, [event(event_id="np-last", model="unpriced-model", input_tokens=5)]).status_code == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "experiments.costing"]
    assert len(lines) == 2 and all(line.startswith("outcomes: no price for unpriced-model;") for line in lines)
    assert lines[1].endswith(" (4 more like this in the last 61 s)")


def test_each_model_without_a_price_has_its_own_minute(client, running, api_key_for, caplog, monkeypatch, log_clock):
    """The line was throttled by the set of models of the batch: a batch of a and b, then one of a, then one of
    b logged three times in a minute. One key per model: each is said once a minute, whichever batches it
    comes in."""
    import logging

    from experiments import costing
    from genesis.logging import Throttled
    from tests.factories import ModelVersionFactory

    monkeypatch.setattr(costing, "_unpriced_warnings", Throttled(60.0))
    for model in ("unpriced-a", "unpriced-b"):
        ModelVersionFactory(agent=running.agent, model_id=model)
    key = api_key_for("qa_agent")
    with caplog.at_level(logging.WARNING, logger="experiments.costing"):
        for batch, models in enumerate([("unpriced-a", "unpriced-b"), ("unpriced-a",), ("unpriced-b",)]):
            events = [event(event_id=f"{model}-{batch}", model=model, input_tokens=5) for model in models]
            assert post(client, key, events).status_code == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "experiments.costing"]
    assert [line.split(";")[0] for line in lines] == ["outcomes: no price for unpriced-a", "outcomes: no price for unpriced-b"]
