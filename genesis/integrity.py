"""Which constraint a write broke.

Services answer a unique violation they expect — a key taken, a row another worker wrote first — as a
conflict or as "written already". Any other integrity error must surface as the defect it is: caught as
"already exists", a NOT NULL that a rolling deploy's older code broke was reported as a key conflict,
and in a loop that skips rows written already it would drop rows without a word. That holds for a
unique violation too: the one a service expects is a named constraint, and another unique constraint
or index of the same table (or of a table a trigger or a history record writes in the same statement)
refused is not "taken" but a defect. So a caller names the `UniqueKey`s it expects, and only those are
recognised."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg.errors
from django.db import IntegrityError, models

# PostgreSQL cuts longer identifiers (NAMEDATALEN - 1).
_POSTGRES_MAX_NAME = 63


@dataclass(frozen=True)
class UniqueKey:
    """A unique constraint or unique index as the database knows it: its name (what PostgreSQL
    reports) and its table and columns (all SQLite reports). Declared once, beside the service that
    expects it; tests/genesis/test_integrity.py checks every declared key against the migrated schema."""

    name: str
    table: str
    columns: tuple[str, ...]

    @classmethod
    def constraint(cls, model: type[models.Model], name: str) -> UniqueKey:
        """The model's `UniqueConstraint` called `name` (its name is the database's)."""
        for constraint in model._meta.constraints:
            if isinstance(constraint, models.UniqueConstraint) and constraint.name == name and constraint.fields:
                columns = tuple(_column(model, field) for field in constraint.fields)
                return cls(name=name, table=model._meta.db_table, columns=columns)
        raise ValueError(f"{model.__name__} has no UniqueConstraint over fields named '{name}'")

    @classmethod
    def field(cls, model: type[models.Model], field_name: str) -> UniqueKey:
        """The unique constraint of the model's `unique=True` (or one-to-one) field. Django writes it as
        an inline UNIQUE when it creates the column, which PostgreSQL names <table>_<column>_key; a
        field made unique later by AlterField gets a hashed name instead — the schema test catches it."""
        field = model._meta.get_field(field_name)
        if not isinstance(field, models.Field) or not field.unique or field.primary_key:
            raise ValueError(f"{model.__name__}.{field_name} is not a unique field")
        column = _column(model, field_name)
        name = f"{model._meta.db_table}_{column}_key"
        if len(name) > _POSTGRES_MAX_NAME:
            raise ValueError(f"PostgreSQL shortens the name of {model.__name__}.{field_name}'s constraint; "
                             "declare it with its name in the schema")
        return cls(name=name, table=model._meta.db_table, columns=(column,))


def _column(model: type[models.Model], field_name: str) -> str:
    field = model._meta.get_field(field_name)
    if not isinstance(field, models.Field) or not isinstance(field.column, str):
        raise ValueError(f"{model.__name__}.{field_name} is no column")
    return field.column


# "UNIQUE constraint failed: table.a, table.b", or "…: index 'name'" for an index on expressions.
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>[^']+)'|(?P<columns>.+))\Z")


def is_unique_violation(exc: IntegrityError, key: UniqueKey, *keys: UniqueKey) -> bool:
    """Whether `exc` is the refusal of one of the unique constraints named. PostgreSQL names the
    constraint (or index) refused. SQLite (the embedded `make run` mode) names only the table and
    columns of an index on columns, so there a key is recognised by its table and column set: two unique
    constraints over the same columns of one table (a partial index beside a full one) are not told
    apart on SQLite — the schema test checks that no declared key shares its columns with another."""
    expected = (key, *keys)
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.UniqueViolation):
        return cause.diag.constraint_name in {each.name for each in expected}
    if not isinstance(cause, sqlite3.IntegrityError):
        return False
    match = _SQLITE_UNIQUE.match(str(cause))
    if match is None:
        return False
    if match["index"] is not None:
        return match["index"] in {each.name for each in expected}
    refused = {tuple(column.strip().rsplit(".", 1)) for column in match["columns"].split(",")}
    return any(refused == {(each.table, column) for column in each.columns} for each in expected)


@contextlib.contextmanager
def unique_violation_raises(error: Exception, key: UniqueKey, *keys: UniqueKey) -> Iterator[None]:
    """Raise `error` instead of a violation of the unique constraints named in the block; any other
    integrity error as itself. Outside the block's savepoint:
    `with unique_violation_raises(Conflict(…), KEY), transaction.atomic(): …`."""
    try:
        yield
    except IntegrityError as exc:
        if not is_unique_violation(exc, key, *keys):
            raise
        raise error from None
