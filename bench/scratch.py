"""A bench's own database, so a bench never writes into the one DATABASE_URL names (a developer's, or
staging's): `<that database>_<suffix>`, made and migrated as Django's test runner makes its test
database, and dropped at the end — also when the bench fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scratch_database(suffix: str) -> Iterator[str]:
    """Point Django's default connection at a fresh, migrated `<DATABASE_URL's name>_<suffix>` (an old
    one of that name, left by a killed run, is dropped first) and yield its postgres:// URL, for the
    processes the bench starts. Call after django.setup(); close every other connection to it (server
    threads, workers) before leaving, or Postgres refuses to drop it."""
    from django.db import connection

    given = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{given}_{suffix}"
    scratch = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False, serialize=False)
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    try:
        yield (f"postgres://{settings['USER'] or 'postgres'}{password}@{settings['HOST'] or '127.0.0.1'}"
               f":{settings['PORT'] or 5432}/{scratch}")
    finally:
        connection.close()
        connection.creation.destroy_test_db(given, verbosity=0)
