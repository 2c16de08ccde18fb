"""Which kind of constraint a write broke.

Services answer a unique violation they expect — a key taken, a row another worker wrote first — as a
conflict or as "written already". Any other integrity error (a NOT NULL, a foreign key, a check) is a
defect and must surface as one: caught as "already exists", a NOT NULL that a rolling deploy's older
code broke was reported as a key conflict, and in a loop that skips rows written already it would
drop rows without a word."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import psycopg.errors
from django.db import IntegrityError


def is_unique_violation(exc: IntegrityError) -> bool:
    """Whether `exc` is a unique constraint's (or unique index's) refusal, on PostgreSQL or SQLite."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.UniqueViolation):
        return True
    # SQLite gives no error class per constraint; its message starts so for a unique one.
    return isinstance(cause, sqlite3.IntegrityError) and str(cause).startswith("UNIQUE constraint failed")


@contextlib.contextmanager
def unique_violation_raises(error: Exception) -> Iterator[None]:
    """Raise `error` instead of a unique violation in the block; any other integrity error as itself.
    Outside the block's savepoint: `with unique_violation_raises(Conflict(…)), transaction.atomic(): …`."""
    try:
        yield
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        raise error from None
