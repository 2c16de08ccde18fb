"""genesis.integrity: a unique violation a service expects is told apart from every other integrity error,
which must surface as the defect it is (found upgrading: older code breaking a NOT NULL on a migrated
table was told "an experiment with that key already exists")."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from experiments.models import Experiment
from experiments.services import experiment_create
from genesis.errors import Conflict
from genesis.integrity import is_unique_violation
from models_app.registry.models import Agent
from tests.experiments.factories import draft_experiment

pytestmark = pytest.mark.django_db


def integrity_error(statement: str, params: list[object]) -> IntegrityError:
    with pytest.raises(IntegrityError) as exc, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
    return exc.value


def test_a_unique_violation_is_told_apart_from_not_null_and_check_violations():
    agent = Agent.objects.create(slug="integrity_agent", name="Integrity agent")
    Agent.objects.create(slug="other_agent", name="Other agent")
    table = Agent._meta.db_table
    assert is_unique_violation(integrity_error(f"UPDATE {table} SET slug = %s WHERE id <> %s",
                                               ["integrity_agent", agent.pk]))
    assert not is_unique_violation(integrity_error(f"UPDATE {table} SET slug = NULL WHERE id = %s", [agent.pk]))
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT integrity_test_check CHECK (name <> 'refused')")
    assert not is_unique_violation(integrity_error(f"UPDATE {table} SET name = 'refused' WHERE id = %s", [agent.pk]))


def test_an_experiment_key_taken_is_a_conflict_and_any_other_refusal_is_not():
    # Added first: PostgreSQL alters no table with deferred checks pending.
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {Experiment._meta.db_table} ADD CONSTRAINT integrity_test_check "
                       "CHECK (description <> 'refused')")
    first = draft_experiment("qa_agent", key="taken")

    def create(key: str, description: str = "") -> Experiment:
        return experiment_create(agent=first.agent, treatment=first.treatment, key=key, description=description)

    with pytest.raises(Conflict, match="'taken' already exists"):
        create("taken")
    with pytest.raises(IntegrityError, match="integrity_test_check"):
        create("free", description="refused")
