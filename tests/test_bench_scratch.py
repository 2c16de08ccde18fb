"""bench/scratch.py: a bench builds its world in a database of its own, beside the one DATABASE_URL names,
and drops it — the one named is never written (bench/a11y once seeded it and reset its budget)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
import pytest
from django.conf import settings
from django.db import connection

import bench.scratch
from bench.scratch import REDIS_MARK, NotAScratchDatabase, flush_redis, require_scratch, scratch_database
from models_app.registry.models import Agent

ROOT = Path(__file__).resolve().parents[1]


def _database_exists(name: str) -> bool:
    with connection.creation._nodb_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the benches run on PostgreSQL only")
@pytest.mark.django_db(transaction=True)  # no transaction around the test: the helper closes the connection
def test_a_bench_writes_into_a_scratch_database_and_drops_it():
    given = connection.settings_dict["NAME"]
    scratch = f"{given}_bench_scratch_test"
    with scratch_database("bench_scratch_test") as url:
        assert connection.settings_dict["NAME"] == scratch
        parsed = dj_database_url.parse(url)  # what the bench's processes connect with: the same database, options and all
        assert {key: parsed.get(key) for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")} == {
            key: connection.settings_dict[key] or parsed.get(key) for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")}
        Agent.objects.create(slug="only_in_scratch", name="Only in the scratch database")  # migrated
        assert _database_exists(scratch)
        assert bench.scratch._scratch_mark(scratch) == bench.scratch.SCRATCH_MARK
        with scratch_database("n"):  # a nested one gives the outer one back when it ends
            require_scratch()
        assert connection.settings_dict["NAME"] == scratch and not _database_exists(f"{scratch}_n")
        require_scratch()  # once refused: the inner one's end forgot the outer one
    assert connection.settings_dict["NAME"] == given
    assert not _database_exists(scratch)
    assert not Agent.objects.filter(slug="only_in_scratch").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the benches run on PostgreSQL only")
@pytest.mark.django_db
@pytest.mark.parametrize("option", ["dbname", "service"])
def test_a_database_url_whose_options_choose_the_database_is_refused(monkeypatch, option):
    """`postgres://…/name?dbname=name`: libpq connects to OPTIONS' dbname whatever NAME says, so the
    scratch database would be made but the real one migrated and written."""
    given = connection.settings_dict["NAME"]
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**connection.settings_dict["OPTIONS"], option: given})
    with pytest.raises(NotAScratchDatabase, match=option), scratch_database("bench_scratch_redirect"):
        pass
    monkeypatch.undo()
    assert not _database_exists(f"{given}_bench_scratch_redirect")
    assert connection.settings_dict["NAME"] == given


@pytest.mark.django_db
def test_require_scratch_asks_the_server_which_database_it_reached(monkeypatch):
    """The settings may name the scratch database while the connection reached another (OPTIONS'
    dbname): require_scratch believes the server, not the settings."""
    connection.ensure_connection()  # to the test database, whatever NAME says next
    monkeypatch.setitem(connection.settings_dict, "NAME", "a_scratch_database")
    monkeypatch.setattr(bench.scratch, "_active", "a_scratch_database")
    with pytest.raises(NotAScratchDatabase):
        require_scratch()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the benches run on PostgreSQL only")
@pytest.mark.django_db
@pytest.mark.parametrize("keep", [False, True])
def test_a_database_of_the_scratch_name_without_the_mark_is_neither_dropped_nor_reused(keep):
    """`<name>_<suffix>` made by someone else (a copy, a restore) was dropped (autoclobber) or, with keep,
    written into."""
    name = f"{connection.settings_dict['NAME']}_bench_scratch_theirs"
    with connection.creation._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        with pytest.raises(NotAScratchDatabase, match=f"{name}.*dropdb"), scratch_database("bench_scratch_theirs", keep=keep):
            pass
        assert _database_exists(name)
        assert bench.scratch._scratch_mark(name) == ""
    finally:
        with connection.creation._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.skipif(not settings.REDIS_URL or connection.vendor != "postgresql", reason="needs Redis and PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_bench_claims_redis_for_its_run_only(settings):
    """The claim once stayed for ever: an index a bench had used was taken for a bench's afterwards,
    whatever was later put in it, and a later flush_redis emptied it."""
    import redis

    # The suite's own index holds its keys, which a bench rightly refuses: the bench gets an empty index of
    # the same server (the highest one free), as a person running a bench would give it.
    def index_url(index: int) -> str:
        return urlsplit(settings.REDIS_URL)._replace(path=f"/{index}").geturl()

    own = redis.Redis.from_url(settings.REDIS_URL).connection_pool.connection_kwargs.get("db", 0)
    free = next((index for index in range(15, -1, -1)
                 if index != own and not redis.Redis.from_url(index_url(index)).dbsize()), None)
    if free is None:
        pytest.fail("no empty Redis index on REDIS_URL's server for a bench's claim")
    settings.REDIS_URL = index_url(free)
    client = redis.Redis.from_url(settings.REDIS_URL)
    with scratch_database("bench_scratch_redis", redis=True):
        assert client.ttl(REDIS_MARK) > 0  # a crashed run's claim lapses
        client.set("bench:left-behind", "1")
    assert client.dbsize() == 0  # the bench's keys and the mark: the index is no bench's any more


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the benches run on PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_a_scratch_database_whose_migrations_fail_is_not_left_behind(monkeypatch):
    """A migration failing midway (or Ctrl-C) left the half-built database, the connection pointed at it
    and the changed TEST NAME behind."""
    import django.core.management

    def failing_migrate(command: str, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{command} failed")

    given, test_name = connection.settings_dict["NAME"], connection.settings_dict["TEST"].get("NAME")
    monkeypatch.setattr(django.core.management, "call_command", failing_migrate)
    with pytest.raises(RuntimeError, match="migrate failed"), scratch_database("bench_scratch_half"):
        pass
    monkeypatch.undo()
    assert (connection.settings_dict["NAME"], connection.settings_dict["TEST"].get("NAME")) == (given, test_name)
    assert not _database_exists(f"{given}_bench_scratch_half")


def test_the_url_handed_to_a_bench_s_processes_keeps_what_connects():
    """It once dropped the query (sslmode, options), did not encode the user and password, and turned an
    empty host (a Unix socket) into 127.0.0.1."""
    settings_dict = {"USER": "bench user", "PASSWORD": "p@ss:w/rd?#%", "HOST": "", "PORT": "",
                     "OPTIONS": {"sslmode": "require", "options": "-c search_path=genesis,public", "connect_timeout": 5,
                                 "isolation_level": 2}}
    parsed = dj_database_url.parse(bench.scratch.database_url(settings_dict, "genesis_bench"))
    assert (parsed["NAME"], parsed["USER"], parsed["PASSWORD"], parsed["HOST"]) == ("genesis_bench", "bench user", "p@ss:w/rd?#%", "")
    assert parsed["OPTIONS"] == {"sslmode": "require", "options": "-c search_path=genesis,public", "connect_timeout": 5}


# Each bench world builder: what it writes (seed_demo, starting every draft rollout, API keys, outcomes).
WORLD_BUILDERS = {
    "bench/launch/board.py (and bench/metrics, bench/admin_scale/fill.py)": lambda: _bench("bench.launch.board").setup(1),
    "bench/admin_scale/fill.py": lambda: _bench("bench.admin_scale.fill").fill(0.0001),
    "bench/admin_scale/run.py": lambda: _bench("bench.admin_scale.run").measure(1, "nothing"),
    "bench/route/run.py (and bench/outcomes)": lambda: _bench("bench.route.run").setup_world(),
    "bench/results/run.py": lambda: _bench("bench.results.run").setup(1),
    "bench/retention/run.py": lambda: _bench("bench.retention.run").setup(1),
    "bench/memory/run.py": lambda: _bench("bench.memory.run").setup_world(),
}


def _bench(module: str) -> Any:
    return importlib.import_module(module)


@pytest.mark.django_db
@pytest.mark.parametrize("bench", WORLD_BUILDERS)
def test_a_bench_world_builder_refuses_the_configured_database(bench):
    """Called outside scratch_database, a world builder refuses before its first write: the database
    DATABASE_URL names (here the test database) keeps what it held. They once migrated and seeded it."""
    from experiments.models import Experiment
    from models_app.registry.models import ApiKey

    before = (Agent.objects.count(), Experiment.objects.count(), ApiKey.objects.count())
    with pytest.raises(NotAScratchDatabase):
        WORLD_BUILDERS[bench]()
    assert (Agent.objects.count(), Experiment.objects.count(), ApiKey.objects.count()) == before


def test_no_bench_migrates_or_flushes_on_its_own():
    """Making, migrating and flushing are bench/scratch.py's: a bench that calls migrate or flushdb
    itself does it to whatever DATABASE_URL / REDIS_URL name. Purging Celery's queues (REDIS_URL is the
    broker) is allowed only in a bench whose scratch database claims Redis."""
    offenders = []
    for path in (ROOT / "bench").rglob("*.py"):
        text = path.read_text()
        if path.name == "scratch.py":
            continue
        if re.search(r"""call_command\(\s*["']migrate|\.flushdb\(|\.flushall\(""", text):
            offenders.append(str(path.relative_to(ROOT)))
        if re.search(r"\.purge\(", text) and not _claims_redis(text):
            offenders.append(f"{path.relative_to(ROOT)} (purges an unclaimed Redis)")
    assert offenders == []


def _claims_redis(text: str) -> bool:
    calls = re.findall(r"scratch_database\(((?:[^()]|\([^()]*\))*)\)", text)  # arguments may hold a call
    return bool(calls) and all("redis=True" in arguments for arguments in calls)


def test_every_bench_with_a_scratch_database_claims_redis():
    """A bench's world is built through the services, which enqueue Celery tasks and cache in REDIS_URL:
    bench/a11y and bench/benchmark_runner (which also purges the queues) once did so unclaimed."""
    unclaimed = [str(path.relative_to(ROOT)) for path in (ROOT / "bench").rglob("*.py")
                 if path.name != "scratch.py" and "scratch_database(" in path.read_text() and not _claims_redis(path.read_text())]
    assert unclaimed == []


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
def test_a_bench_refuses_a_redis_database_holding_keys_it_did_not_make():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(REDIS_MARK)
    client.set("someone:else", "1")
    try:
        with pytest.raises(SystemExit, match="no bench made"):
            flush_redis(settings.REDIS_URL)
        assert client.get("someone:else") == b"1"  # not flushed
    finally:
        client.delete("someone:else")
