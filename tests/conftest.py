"""Fixtures shared by every test: real services, a real Celery worker process, API keys."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from models_app.registry.services import api_key_cache_clear
from tests.http_servers import WebhookRecorder, serving

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _redis_left_as_found() -> Iterator[None]:
    """A test run leaves its Redis database as it found it: every key the run created (judge cache,
    routing generations, kombu bindings and queues of tasks no worker took …) is deleted at the end;
    keys that were there before the run are not touched (REDIS_URL may be a developer's own db)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        yield
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        before = set(client.scan_iter(count=1000))
    except redis.RedisError:
        yield
        return
    yield
    created = [key for key in client.scan_iter(count=1000) if key not in before]
    for start in range(0, len(created), 500):
        client.delete(*created[start:start + 500])
    client.close()


@pytest.fixture(autouse=True)
def _fresh_api_key_cache() -> Iterator[None]:
    # Keys are cached per process; a test must not see a key a previous test's database held.
    api_key_cache_clear()
    yield
    api_key_cache_clear()


def test_database_url() -> str:
    """The URL of the database this test run uses, for processes started by the tests."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{settings_dict.get('HOST') or '127.0.0.1'}:{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def child_environment(**extra: str) -> dict[str, str]:
    """Environment for a process the tests start: same services, the test database."""
    env = {**os.environ, "DATABASE_URL": test_database_url(), "PYTHONUNBUFFERED": "1", **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def on_migrated_sqlite(tmp_path: Path, script: str, *, timeout: float = 120) -> Any:
    """Run `script` (Python, in `manage.py shell`) on a freshly migrated SQLite database — the embedded
    `make run` — in a child process, and return the JSON it prints last."""
    env = child_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'embedded.sqlite3'}")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0", "--noinput"], cwd=ROOT, env=env, check=True, timeout=180)
    shell = subprocess.run([*manage, "shell", "-v0", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
    assert shell.returncode == 0, shell.stderr
    return json.loads(shell.stdout.strip().splitlines()[-1])


# The tests read Celery's routine lines of each task ("[id] succeeded", beat's "Sending due task"), which are
# DEBUG for the every-minute sweeps (genesis/logging.py QuietHousekeeping): the test processes log at DEBUG.
CELERY_TEST_LOGGING = {"GENESIS_LOG_LEVEL": "DEBUG"}


class WorkerProcess:
    """A real `celery worker` subprocess on the test database and the test broker."""

    def __init__(self, *, queues: str = "default,benchmarks", concurrency: int = 2, log_path: Path, name: str = "",
                 include: str = "", env: dict[str, str] | None = None) -> None:
        self.queues, self.concurrency, self.log_path = queues, concurrency, log_path
        self.include, self.env = include, env or {}  # extra modules of tasks (-I), extra environment
        self.name = name  # the node name (-n); by default one of its own
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> WorkerProcess:
        from genesis.celery import app

        self.log = self.log_path.open("ab")
        self.name = self.name or f"test-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "genesis", "worker", "-Q", self.queues,
             "--concurrency", str(self.concurrency), "--pool", "prefork", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "-n", self.name, *(["-I", self.include] if self.include else [])],
            cwd=ROOT, env=child_environment(**CELERY_TEST_LOGGING, **self.env), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early; see {self.log_path}")
            # Ask this worker by name: another worker on the same broker must not count as ready.
            if app.control.ping(timeout=0.5, destination=[self.name]):
                return self
        self.stop()
        raise RuntimeError(f"celery worker did not answer a ping within {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


class BeatProcess:
    """A real `celery beat` subprocess on the test database and the test broker, ticking every second."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "genesis", "beat", "--loglevel", "INFO", "--pidfile=",
             "--max-interval", "1"],
            cwd=ROOT, env=child_environment(**CELERY_TEST_LOGGING), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def celery_worker(transactional_db, tmp_path) -> Iterator[WorkerProcess]:
    """A running worker. Tests using it write committed rows (transactional_db) so the worker sees them."""
    worker = WorkerProcess(log_path=tmp_path / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Factory for tests that kill and restart workers."""
    workers: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = WorkerProcess(log_path=tmp_path / f"worker-{len(workers)}.log", **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def api_key_for():
    """`api_key_for("qa_agent")` → a raw bearer key allowed for that agent (created through the service)."""
    from models_app.registry.models import Agent
    from models_app.registry.services import api_key_create

    def make(*slugs: str, all_agents: bool = False) -> str:
        agents = list(Agent.objects.filter(slug__in=slugs))
        _, raw = api_key_create(label=f"test {'all' if all_agents else ','.join(slugs)}", agents=agents, all_agents=all_agents)
        return raw

    return make


@pytest.fixture
def seeded_demo(db):
    """The demo world `seed_demo` builds."""
    import io

    from django.core.management import call_command

    call_command("seed_demo", stdout=io.StringIO())


@pytest.fixture
def webhook() -> Iterator[WebhookRecorder]:
    """A Slack-compatible webhook receiver on loopback, recording what it is sent (tests/http_servers.py)."""
    recorder = WebhookRecorder()
    with serving(recorder.server):
        yield recorder


class LogClock:
    """genesis.logging's `time`, moved by hand: monotonic and wall clock (from 2026-12-07 10:00:00 UTC) together."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1796637600.0 + self.now


@pytest.fixture
def log_clock(monkeypatch) -> LogClock:
    """The clock genesis.logging.Throttled reads, at 0 s and moved by setting `.now`."""
    from genesis import logging as genesis_logging

    clock = LogClock()
    monkeypatch.setattr(genesis_logging, "time", clock)
    return clock


class ReloadClock:
    """Time passing for genesis.auto_refresh, moved by hand: the page knows when it was last rendered only
    by how much of its record's time to live (in Redis, by Redis's clock) is left, so a test makes
    `seconds` pass by taking them off every such record — those run out, as they would — instead of
    waiting them."""

    def advance(self, seconds: float) -> None:
        import redis

        from genesis import auto_refresh

        client = auto_refresh._redis()
        if client is None:
            return
        try:
            keys = list(client.scan_iter(match=auto_refresh._KEY_PREFIX + "*"))
        except redis.RedisError:  # a test of Redis unreachable: no record to age
            return
        for key in keys:
            left = client.pttl(key) - int(seconds * 1000)
            if left > 0:
                client.pexpire(key, left)
            else:
                client.delete(key)


@pytest.fixture
def reload_clock() -> ReloadClock:
    """The clock a self-reloading page tells its reload from a visit by (genesis/auto_refresh.py): a test
    moves it by the seconds the browser would wait instead of waiting them."""
    return ReloadClock()
