"""genesis.integrity: the unique violation a service expects — one named constraint — is told apart from
every other integrity error, which must surface as the defect it is (found upgrading: older code
breaking a NOT NULL on a migrated table was told "an experiment with that key already exists"), and
from a violation of another unique constraint or index, which is no more "taken" than a NOT NULL is."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from experiments.models import Experiment
from experiments.services import experiment_create
from genesis.errors import Conflict
from genesis.integrity import UniqueKey, is_unique_violation
from models_app.benchmarks.answers import Answer
from models_app.benchmarks.models import BenchmarkResult
from models_app.benchmarks.services import benchmark_run_create, write_unscored_results
from models_app.registry.models import Agent
from tests.conftest import on_migrated_sqlite
from tests.experiments.factories import draft_experiment

pytestmark = pytest.mark.django_db

AGENT_SLUG = UniqueKey.field(Agent, "slug")


def integrity_error(statement: str, params: list[object]) -> IntegrityError:
    with pytest.raises(IntegrityError) as exc, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
    return exc.value


def add_constraint(model, definition: str) -> None:
    # Before any row of the test: PostgreSQL alters no table with deferred checks pending.
    with connection.cursor() as cursor:
        if definition.startswith("UNIQUE"):
            cursor.execute(f"CREATE UNIQUE INDEX integrity_test_unique ON {model._meta.db_table} {definition[6:]}")
        else:
            cursor.execute(f"ALTER TABLE {model._meta.db_table} ADD CONSTRAINT integrity_test_check {definition}")


def test_the_named_unique_violation_is_told_apart_from_other_unique_not_null_and_check_violations():
    add_constraint(Agent, "UNIQUE (name)")
    add_constraint(Agent, "CHECK (name <> 'refused')")
    agent = Agent.objects.create(slug="integrity_agent", name="Integrity agent")
    Agent.objects.create(slug="other_agent", name="Other agent")
    table = Agent._meta.db_table
    assert is_unique_violation(integrity_error(f"UPDATE {table} SET slug = %s WHERE id = %s",
                                               ["other_agent", agent.pk]), AGENT_SLUG)
    other_unique = integrity_error(f"UPDATE {table} SET name = %s WHERE id = %s", ["Other agent", agent.pk])
    assert not is_unique_violation(other_unique, AGENT_SLUG)
    assert is_unique_violation(other_unique, AGENT_SLUG, UniqueKey(name="integrity_test_unique", table=table, columns=("name",)))
    assert not is_unique_violation(integrity_error(f"UPDATE {table} SET slug = NULL WHERE id = %s", [agent.pk]), AGENT_SLUG)
    assert not is_unique_violation(integrity_error(f"UPDATE {table} SET name = 'refused' WHERE id = %s", [agent.pk]), AGENT_SLUG)


def test_an_experiment_key_taken_is_a_conflict_and_any_other_refusal_is_not():
    add_constraint(Experiment, "CHECK (description <> 'refused')")
    add_constraint(Experiment, "UNIQUE (description) WHERE description <> ''")
    first = draft_experiment("qa_agent", key="taken", description="first")

    def create(key: str, description: str = "") -> Experiment:
        return experiment_create(agent=first.agent, treatment=first.treatment, key=key, description=description)

    with pytest.raises(Conflict, match="'taken' already exists"):
        create("taken")
    with pytest.raises(IntegrityError, match="integrity_test_check"):
        create("free", description="refused")
    # Another unique index refusing the row is a defect to see, not the key taken.
    with pytest.raises(IntegrityError, match="integrity_test_unique"):
        create("free", description="first")


def test_a_benchmark_pair_written_already_is_skipped_and_another_unique_refusal_is_not(seeded_demo):
    add_constraint(BenchmarkResult, "UNIQUE (output) WHERE output <> ''")
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), requested_via="test")
    first, second = list(run.suite.cases.order_by("position")[:2])

    def answer(case, output: str) -> Answer:
        return Answer(model_version_id=run.candidate_id, case_id=case.pk, kind="unscored", output=output, error="judge down")

    assert write_unscored_results(run.pk, [answer(first, "same words")])[1] == []
    # Written already: whichever of its two unique constraints PostgreSQL reports, the pair is skipped.
    again = answer(first, "other words")
    assert write_unscored_results(run.pk, [again])[1] == [again]
    # A different pair refused by another unique index was dropped as "written already" before.
    with pytest.raises(IntegrityError, match="integrity_test_unique"):
        write_unscored_results(run.pk, [answer(second, "same words")])


def declared_unique_keys() -> list[tuple[str, UniqueKey]]:
    """Every UniqueKey a module of the project declares at module level (alone or in a tuple)."""
    root = Path(settings.BASE_DIR)
    declared = []
    for path in sorted(root.glob("*/**/*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in {".venv", "tests", "var", "bench"} or "migrations" in parts or "UniqueKey." not in path.read_text():
            continue
        module = importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts))
        for name, value in vars(module).items():
            for key in value if isinstance(value, tuple) else (value,):
                if isinstance(key, UniqueKey):
                    declared.append((f"{module.__name__}.{name}", key))
    return declared


def test_every_declared_unique_key_is_a_unique_constraint_of_the_migrated_schema():
    declared = declared_unique_keys()
    assert {where.rsplit(".", 1)[1] for where, _ in declared} >= {
        "EXPERIMENT_KEY_TAKEN", "AGENT_ALREADY_EXPERIMENTING", "STAGE_ALREADY_REQUESTED", "ENTRY_KEY_TAKEN",
        "ENTRY_REVERSED_ALREADY", "ALERT_RAISED_ALREADY", "PROVIDER_JOB_TRACKED", "RESULT_WRITTEN_ALREADY",
        "NOTICE_CLAIMED",
    }
    for where, key in declared:
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, key.table)
        assert key.name in constraints, f"{where}: {key.table} has no constraint or index '{key.name}'"
        assert constraints[key.name]["unique"] and tuple(constraints[key.name]["columns"]) == key.columns, where
        # SQLite names only the columns: no other unique constraint of the table may share them.
        same_columns = [name for name, each in constraints.items()
                        if each["unique"] and set(each["columns"]) == set(key.columns)]
        assert same_columns == [key.name], f"{where}: {same_columns} cannot be told apart on SQLite"


def sqlite_error(statements: list[str]) -> IntegrityError:
    """The IntegrityError Django raises for SQLite's refusal of the last statement."""
    database = sqlite3.connect(":memory:")
    for statement in statements[:-1]:
        database.execute(statement)
    with pytest.raises(sqlite3.IntegrityError) as refused:
        database.execute(statements[-1])
    error = IntegrityError(*refused.value.args)
    error.__cause__ = refused.value
    return error


def test_on_sqlite_a_key_is_recognised_by_its_table_and_columns():
    schema = ["CREATE TABLE t (id integer PRIMARY KEY, k text NOT NULL UNIQUE, a int, b int, s text, UNIQUE (a, b))",
              "CREATE UNIQUE INDEX t_lower_s ON t (lower(s))", "INSERT INTO t VALUES (1, 'x', 1, 1, 'S')"]
    k, ab = UniqueKey("t_k_key", "t", ("k",)), UniqueKey("t_ab", "t", ("b", "a"))
    assert is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'x', 2, 2, '')"]), k)
    assert not is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'x', 2, 2, '')"]), ab)
    assert is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'y', 1, 1, '')"]), ab)
    assert not is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'y', 1, 1, '')"]), k)
    assert not is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (1, 'y', 2, 2, '')"]), k, ab)
    assert not is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'y', 2, 2, 's')"]), k, ab)
    assert is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, 'y', 2, 2, 's')"]),
                               UniqueKey("t_lower_s", "t", ()))
    assert not is_unique_violation(sqlite_error([*schema, "INSERT INTO t VALUES (2, NULL, 2, 2, '')"]), k)


def test_the_embedded_sqlite_answers_a_taken_experiment_key_as_a_conflict_and_another_unique_index_as_itself(tmp_path):
    script = """
import json
from django.db import IntegrityError, connection
from genesis.errors import Conflict
from experiments.services import experiment_create
from tests.experiments.factories import draft_experiment
with connection.cursor() as cursor:
    cursor.execute("CREATE UNIQUE INDEX integrity_test_unique ON experiments_experiment (description)")
first = draft_experiment("qa_agent", key="taken", description="first")
outcomes = []
for key, description in [("taken", "second"), ("free", "first")]:
    try:
        experiment_create(agent=first.agent, treatment=first.treatment, key=key, description=description)
        outcomes.append("created")
    except (Conflict, IntegrityError) as exc:
        outcomes.append(type(exc).__name__)
print(json.dumps(outcomes))
"""
    assert on_migrated_sqlite(tmp_path, script) == ["Conflict", "IntegrityError"]
