"""Bulk INSERT … ON CONFLICT DO NOTHING for the two high-volume tables (outcome events, assignments).

On PostgreSQL the rows are streamed with COPY into a session-local staging table, then moved with one
INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING. COPY because it is the cheap way in: psycopg
formats COPY rows in C, while any statement with parameters goes through Django's client-side cursor,
which quotes every value into the SQL text in Python — for a 1 000-event batch that quoting (an
`unnest` of 14 text arrays) was over half the CPU time of outcome ingestion (bench/outcomes). COPY
alone cannot skip duplicates, hence the staging table and the INSERT … SELECT that keeps
ON CONFLICT DO NOTHING: the database still decides which rows are new, even when two requests carry
the same row at once. `staged_rows` is that first half on its own, for a statement that does more
with the rows (outcome ingestion also records exposures from them, experiments/outcomes.py).

Elsewhere (SQLite, the embedded dev mode) it is a plain multi-row VALUES list; both return what the
database inserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction


def insert_ignoring_conflicts(
    *,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    conflict: Sequence[str],
    returning: str | None = None,
    chunk: int = 1000,
) -> list[Any]:
    """Insert `rows` (values in the order of `columns`, given as (name, PostgreSQL type)); rows that
    collide on `conflict` are skipped. Returns the `returning` column of the inserted rows."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    names = ", ".join(quote(name) for name, _ in columns)
    tail = f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING"
    if returning:
        tail += f" RETURNING {quote(returning)}"
    if connection.vendor == "postgresql":
        with staged_rows(table=table, columns=columns, rows=rows) as (cursor, staging):
            cursor.execute(f"WITH batch AS (DELETE FROM {staging} RETURNING {names}) "
                           f"INSERT INTO {quote(table)} ({names}) SELECT {names} FROM batch{tail}")
            return [value for (value,) in cursor.fetchall()] if returning else []
    inserted: list[Any] = []
    with connection.cursor() as cursor:
        # SQLite allows at most 32 766 parameters per statement.
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
            params = [_adapt(value) for row in part for value in row]
            cursor.execute(f"INSERT INTO {quote(table)} ({names}) VALUES {', '.join([placeholder] * len(part))}{tail}", params)
            if returning:
                inserted.extend(value for (value,) in cursor.fetchall())
    return inserted


@contextmanager
def staged_rows(
    *, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> Iterator[tuple[Any, str]]:
    """PostgreSQL only: COPY `rows` into this session's staging table for `table` and yield (cursor,
    staging table name) inside a transaction. The statement run there must take the rows out with
    ``DELETE FROM <staging> RETURNING …``, so the next use in the same transaction starts empty."""
    # One staging table per target table and database session, created on first use. Its columns
    # have the types named in `columns`, without constraints, so COPY accepts every row and the
    # INSERT … SELECT applies the real table's checks, casts and conflict rule. ON COMMIT DELETE ROWS
    # empties it in place at each commit (no catalog writes, unlike a table created per batch).
    # COPY and INSERT must share a transaction, hence the atomic block (no savepoint). Django wraps
    # the driver's errors only around execute(); wrap_database_errors does the same for COPY, so
    # callers see IntegrityError, DataError … as from any other statement.
    quote = connection.ops.quote_name
    staging = "pg_temp." + quote(f"bulk_in_{table}")
    definition = ", ".join(f"{quote(name)} {pg_type}" for name, pg_type in columns)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {quote(f'bulk_in_{table}')} ({definition}) ON COMMIT DELETE ROWS")
        # Binary COPY with the column types declared up front: psycopg then encodes each value
        # without looking up a dumper for it (about a third of the CPU of text COPY).
        with cursor.copy(f"COPY {staging} ({', '.join(quote(name) for name, _ in columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in columns])
            for row in rows:
                copy.write_row(row)
        yield cursor, staging


def _adapt(value: Any) -> Any:
    # What Django's SQLite backend stores: naive UTC text for datetimes, text for decimals.
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ")
    if isinstance(value, Decimal):
        return str(value)
    return value
