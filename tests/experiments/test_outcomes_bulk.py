"""The bulk path under outcome ingestion (experiments/bulk.py, the COPY into a staging table and the
INSERT … ON CONFLICT that also records exposures): values arrive byte for byte, a second batch in
the same transaction sees none of the first, a duplicate has no effect at all, and the number of
queries does not grow with the batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.bulk import insert_ignoring_conflicts
from experiments.models import ASSIGNMENT_COLUMNS, Assignment, ExperimentStage, OutcomeEvent
from experiments.outcomes import OUTCOME_COLUMNS, outcomes_ingest
from experiments.services import experiment_start
from tests.experiments.factories import draft_experiment, rollout_team, user_in_arm

pytestmark = pytest.mark.django_db


@pytest.fixture
def running():
    team = rollout_team()
    return experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])


def event(experiment, **changes):
    base = {"event_id": f"e-{uuid.uuid4().hex[:12]}", "agent": experiment.agent.slug, "user_id": "u-1",
            "model": experiment.control.model_id, "success": True, "latency_ms": 350.5}
    return {**base, **changes}


def test_text_values_are_stored_byte_for_byte(running):
    # Tabs, newlines and backslashes are COPY's own delimiters in its text format; quotes and commas
    # were the array syntax of the previous unnest path. None of them may change what is stored.
    awkward = "tab\there\nnew line \\N back\\slash 'single' \"double\" {a,b} é 漢字 😀 "
    events = [event(running, event_id=f"id {awkward}", user_id=awkward, model=running.treatment.model_id, quality=0.25,
                    input_tokens=0, output_tokens=7, latency_ms=0.000123456789)]
    assert outcomes_ingest(principal=None, events=events).accepted == 1
    stored = OutcomeEvent.objects.get()
    assert (stored.event_id, stored.user_id, stored.model) == (f"id {awkward}", awkward, running.treatment.model_id)
    assert (stored.quality, stored.latency_ms, stored.input_tokens, stored.output_tokens) == (0.25, 0.000123456789, 0, 7)
    assert Assignment.objects.get().user_id == awkward


def test_a_second_batch_in_the_same_transaction_sees_none_of_the_first(running):
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def rows(*ids: str) -> list[list]:
        return [[running.pk, user_id, "control", None, now] for user_id in ids]

    with transaction.atomic():
        insert_ignoring_conflicts(table=Assignment._meta.db_table, columns=ASSIGNMENT_COLUMNS, rows=rows("a", "b"),
                                  conflict=["experiment_id", "user_id", "variant"])
        returned = insert_ignoring_conflicts(
            table=OutcomeEvent._meta.db_table, columns=OUTCOME_COLUMNS, conflict=["agent_id", "event_id"], returning="event_id",
            rows=[["x-1", running.agent_id, None, "live", "u", "m", True, 1.0, None, None, None, Decimal("0.5"), now, now]],
        )
        assert returned == ["x-1"]
        Assignment.objects.filter(user_id="a").delete()
        # The staging table was emptied by the first insert: "a" must not come back with "c".
        insert_ignoring_conflicts(table=Assignment._meta.db_table, columns=ASSIGNMENT_COLUMNS, rows=rows("c"),
                                  conflict=["experiment_id", "user_id", "variant"])
        assert sorted(Assignment.objects.values_list("user_id", flat=True)) == ["b", "c"]
    assert OutcomeEvent.objects.get().cost_usd == Decimal("0.5")


def test_exposures_come_from_new_outcomes_only_with_the_earliest_sighting(running):
    early = datetime.now(UTC) - timedelta(hours=2)
    late = early + timedelta(hours=1)
    # The stage began before both sightings: an outcome from before the start would be no one's.
    ExperimentStage.objects.filter(pk=running.current_stage_id).update(started_at=early - timedelta(hours=1))
    user_a, user_b = (user_in_arm(running, arm, percent=10, base=base) for arm, base in (("control", "u-a"), ("treatment", "u-b")))
    first = event(running, event_id="same", user_id=user_a, occurred_at=late.isoformat())
    result = outcomes_ingest(principal=None, events=[
        first,
        event(running, user_id=user_a, occurred_at=early.isoformat()),
        event(running, user_id=user_b, model=running.treatment.model_id),
    ])
    assert result.accepted == 3
    exposures = {(a.user_id, a.variant): a for a in Assignment.objects.all()}
    assert set(exposures) == {(user_a, "control"), (user_b, "treatment")}
    assert exposures[(user_a, "control")].first_seen == early
    assert {a.stage_id for a in exposures.values()} == {running.current_stage_id}

    # The same event id again, now claiming another user: a duplicate, so it records nothing.
    again = outcomes_ingest(principal=None, events=[{**first, "user_id": "u-c"}])
    assert (again.accepted, again.duplicates) == (0, 1)
    assert not Assignment.objects.filter(user_id="u-c").exists()
    assert OutcomeEvent.objects.get(event_id="same").user_id == user_a


def test_the_number_of_queries_does_not_grow_with_the_batch(running, django_assert_num_queries):
    from django.test.utils import CaptureQueriesContext

    def batch(n: int) -> list[dict]:
        return [event(running, user_id=f"u-{i}", model=(running.control if i % 2 else running.treatment).model_id,
                      input_tokens=10, output_tokens=20) for i in range(n)]

    outcomes_ingest(principal=None, events=batch(2))  # warm-up: content types, first staging table
    with CaptureQueriesContext(connection) as small:
        assert outcomes_ingest(principal=None, events=batch(10)).accepted == 10
    with django_assert_num_queries(len(small.captured_queries)):
        assert outcomes_ingest(principal=None, events=batch(1000)).accepted == 1000
    if connection.vendor == "postgresql":  # the rows travel by COPY, which Django logs like a statement
        assert any(query["sql"].startswith("COPY ") for query in small.captured_queries)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(st.integers(0, 30), max_size=40), second=st.lists(st.integers(0, 30), max_size=40))
def test_every_event_id_is_stored_once_however_batches_repeat_it(running, first, second):
    # Each example uses its own ids: the examples share the test's transaction.
    prefix = uuid.uuid4().hex[:8]

    def batch(numbers: list[int]) -> list[dict]:
        return [event(running, event_id=f"{prefix}-{n}", user_id=f"{prefix}-user-{n}") for n in numbers]

    one = outcomes_ingest(principal=None, events=batch(first))
    two = outcomes_ingest(principal=None, events=batch(second))
    assert (one.accepted, one.duplicates) == (len(set(first)), len(first) - len(set(first)))
    assert (two.accepted, two.duplicates) == (len(set(second) - set(first)), len(second) - len(set(second) - set(first)))
    stored = OutcomeEvent.objects.filter(event_id__startswith=f"{prefix}-")
    assert sorted(stored.values_list("event_id", flat=True)) == sorted(f"{prefix}-{n}" for n in set(first) | set(second))
    assert Assignment.objects.filter(user_id__startswith=f"{prefix}-").count() == len(set(first) | set(second))


def test_the_keys_the_database_no_longer_checks_are_still_kept_by_django(running):
    # OutcomeEvent's and Assignment's foreign keys have no database constraint (one trigger call per
    # row at the 20 000 events/s target); PROTECT and CASCADE must hold through the ORM all the same.
    from django.db.models import ProtectedError

    from models_app.registry.models import Agent

    assert outcomes_ingest(principal=None, events=[event(running, user_id="u-keys")]).accepted == 1
    with pytest.raises(ProtectedError) as refused:
        Agent.objects.filter(pk=running.agent_id).delete()
    assert any(isinstance(obj, OutcomeEvent) for obj in refused.value.protected_objects)
    assert OutcomeEvent.objects.filter(agent_id=running.agent_id).count() == 1

    running.delete()  # the admin never offers this; the ORM's cascade still reaches both tables
    assert not OutcomeEvent.objects.filter(experiment_id=running.pk).exists()
    assert not Assignment.objects.filter(experiment_id=running.pk).exists()
