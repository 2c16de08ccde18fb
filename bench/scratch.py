"""A bench's own database, so a bench never writes into the one DATABASE_URL names (a developer's, or
staging's): `<that database>_<suffix>`, made and migrated as Django's test runner makes its test
database, and dropped at the end — also when the bench fails. The one place for the rule: every bench
that writes builds its world inside `scratch_database`, and its world builders call `require_scratch`
first, so one called on its own refuses before writing anything. A database is a bench's only if it
carries the mark (`COMMENT ON DATABASE … IS 'genesis bench scratch'`, SCRATCH_MARK), set when
`scratch_database` makes it: an existing `<name>_<suffix>` without it is someone's (a developer's
copy, a restore) and is refused, never dropped nor reused.

Redis has no database to make, so a bench that uses it claims REDIS_URL's index (`redis=True`) for
the run only: one holding keys without a live mark (a developer's cache, a running installation's
queues) is refused, never flushed; an empty or marked one gets the mark (REDIS_MARK), which expires
after REDIS_MARK_SECONDS, so a crashed run's claim lapses; at the end of the `scratch_database` that
claimed it the index is emptied, mark included — every key in a claimed index is a bench's.

A DATABASE_URL whose options pick the database themselves (`?dbname=`, `?service=`) is refused: libpq
lets them win over the name, so the "scratch" connection would reach the configured database. Other
options (sslmode, `options=-c search_path=…`) are carried to the scratch database and to the URL the
bench's processes get."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

SCRATCH_MARK = "genesis bench scratch"  # the comment on a database scratch_database made

# Set in a Redis index claimed by a bench; an index without it that holds keys is someone else's.
REDIS_MARK = "genesis:bench-scratch"
REDIS_MARK_SECONDS = 6 * 3600  # longer than any bench; a crashed run's claim lapses after it

# Connection options that make libpq connect to a database other than NAME (Django passes OPTIONS
# after NAME, so they win).
REDIRECTING_OPTIONS = ("dbname", "service")
# OPTIONS Django reads itself, not libpq: not part of a postgres:// URL.
_DJANGO_OPTIONS = ("isolation_level", "server_side_binding", "pool", "assume_role")

_active: str | None = None  # the scratch database the default connection points at, while one does
_claimed: set[str] = set()  # the Redis URLs claimed by the scratch_database calls under way


class NotAScratchDatabase(RuntimeError):
    """A bench's world builder called outside `scratch_database` (it would write into DATABASE_URL's
    database), or a database the bench would use that is not a bench's."""


@contextmanager
def scratch_database(suffix: str, *, keep: bool = False, redis: bool = False) -> Iterator[str]:
    """Point Django's default connection at a fresh, migrated `<DATABASE_URL's name>_<suffix>` (an old
    one of that name, left by a killed run, is dropped first) and yield its postgres:// URL, also set as
    DATABASE_URL meanwhile for the processes the bench starts. Sets Django up if it is not. Connections
    to it still open at the end (a server's threads, a worker the bench forgot) are the bench's own, and
    are ended so that it can be dropped.

    `keep`: a database worth keeping between runs (bench/admin_scale's year of history): reused and
    migrated if it exists, left in place at the end (`dropdb` it when done). `redis`: claim REDIS_URL's
    index for the run (`claim_redis`; emptied at the end, `release_redis`)."""
    global _active
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    given = connection.settings_dict["NAME"]
    redirecting = [key for key in REDIRECTING_OPTIONS if key in connection.settings_dict["OPTIONS"]]
    if redirecting:
        raise NotAScratchDatabase(
            f"DATABASE_URL's {', '.join(redirecting)} option chooses the database itself, over its name {given!r}: "
            "a bench's connections would reach that database, not a scratch one; name the database in the URL's path only")
    name = f"{given}_{suffix}"
    existed = _refuse_unmarked(name)
    claim = bool(redis and settings.REDIS_URL and settings.REDIS_URL not in _claimed)  # else an enclosing call's
    if claim:
        claim_redis(settings.REDIS_URL)
        _claimed.add(settings.REDIS_URL)
    try:
        test_settings = connection.settings_dict["TEST"]
        configured_test_name, test_settings["NAME"] = test_settings.get("NAME"), name
        try:
            connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=keep, serialize=False)
        except BaseException:
            # Half built (a migration failed, Ctrl-C): neither left behind nor the connection pointed at it.
            # The name was free or a scratch database's (_refuse_unmarked); a kept one is kept.
            _point_at(given)
            if not (keep and existed):
                _drop(name)
            raise
        finally:
            test_settings["NAME"] = configured_test_name
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"COMMENT ON DATABASE {connection.ops.quote_name(name)} IS %s", [SCRATCH_MARK])
        url = database_url(connection.settings_dict, name)
        configured_url = os.environ.get("DATABASE_URL")
        os.environ["DATABASE_URL"] = url
        previous, _active = _active, name  # an enclosing scratch_database's, back when this one ends
        try:
            yield url
        finally:
            _active = previous
            if configured_url is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = configured_url
            _point_at(given)
            if not keep:
                _drop(name)
    finally:
        if claim:
            _claimed.discard(settings.REDIS_URL)
            release_redis(settings.REDIS_URL)


def _point_at(name: str) -> None:
    """Point the default connection (closed first) at database `name`, as Django's test runner does."""
    from django.conf import settings
    from django.db import connection

    connection.close()
    settings.DATABASES[connection.alias]["NAME"] = connection.settings_dict["NAME"] = name


def _drop(name: str) -> None:
    """Drop scratch database `name`, ending the bench's own connections to it first."""
    from django.db import connection

    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                       "AND pid <> pg_backend_pid()", [name])
        cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")


def _scratch_mark(name: str) -> str | None:
    """The comment on database `name` ('' for none), None if there is no such database."""
    from django.db import connection

    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", [name])
        found = cursor.fetchone()
    return None if found is None else found[0]


def _refuse_unmarked(name: str) -> bool:
    """Whether database `name` exists; refused (NotAScratchDatabase) if it does without SCRATCH_MARK."""
    mark = _scratch_mark(name)
    if mark is not None and mark != SCRATCH_MARK:
        raise NotAScratchDatabase(
            f"database {name!r} exists and is not a bench's scratch database (no comment {SCRATCH_MARK!r}): a bench "
            f"would drop or reuse it. Drop or rename it if it is not needed (dropdb {name}); if it is a bench's own, "
            f"made before the mark existed: psql -c \"COMMENT ON DATABASE {name} IS '{SCRATCH_MARK}'\"")
    return mark is not None


def database_url(settings_dict: Mapping[str, Any], name: str) -> str:
    """A postgres:// URL for database `name` with `settings_dict`'s user, password, host, port and
    libpq options, which dj_database_url parses back to the same. An empty host stays empty: libpq's
    Unix socket, as for Django."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    userinfo = user + (f":{password}" if password else "")
    host = quote(settings_dict.get("HOST") or "", safe="")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    options = {key: value for key, value in (settings_dict.get("OPTIONS") or {}).items()
               if key not in _DJANGO_OPTIONS and isinstance(value, str | int) and not isinstance(value, bool)}
    query = f"?{urlencode(options, quote_via=quote)}" if options else ""
    return f"postgres://{userinfo}{'@' if userinfo else ''}{host}{port}/{quote(name, safe='')}{query}"


def require_scratch() -> None:
    """Refuse (NotAScratchDatabase) unless the default connection is connected to a `scratch_database`
    (asked of the server: what the settings name is not necessarily what it reached): what a bench's
    world builder calls before its first write."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        connected = cursor.fetchone()[0]
    if _active is None or connected != _active:
        raise NotAScratchDatabase(f"a bench writes only inside bench.scratch.scratch_database, never into {connected!r}")


def claim_redis(url: str | None) -> None:
    """Make REDIS_URL's index the benches' own for REDIS_MARK_SECONDS: an empty one is marked, a marked
    one is accepted (its mark renewed), one holding keys without the mark is refused (SystemExit) — the
    bench would mix its keys with, or flush, someone else's."""
    if not url:
        return
    import redis

    client = redis.Redis.from_url(url)
    if not client.exists(REDIS_MARK) and client.dbsize():
        raise SystemExit(f"{url} holds {client.dbsize()} keys and no bench's mark (no bench made them, or one that "
                         f"crashed over {REDIS_MARK_SECONDS // 3600} h ago): give the bench a Redis database of its own")
    client.set(REDIS_MARK, "1", ex=REDIS_MARK_SECONDS)


def flush_redis(url: str | None) -> None:
    """Empty a claimed Redis index (`claim_redis`'s rule first), keeping it claimed."""
    if not url:
        return
    import redis

    claim_redis(url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set(REDIS_MARK, "1", ex=REDIS_MARK_SECONDS)


def release_redis(url: str | None) -> None:
    """End a run's claim: empty the index, the mark with the rest. An index that lost its mark meanwhile
    (the run outlived REDIS_MARK_SECONDS) is left alone: it may be someone's by now."""
    if not url:
        return
    import redis

    client = redis.Redis.from_url(url)
    if client.exists(REDIS_MARK):
        client.flushdb()
