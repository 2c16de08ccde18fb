"""A Redis outage while a worker runs a task does not stop the worker (genesis/broker.py RedisTransport).

With kombu's own Redis transport the worker exited at the outage ("Unrecoverable error:
AttributeError(\"'NoneType' object has no attribute 'hostname'\")") and, had it got past that, when the
task ended ("... no attribute 'client'"). This runs a redis-server of its own (never the shared one), a
real worker on it with a WaltzRL build in progress, kills Redis with SIGKILL and starts it again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from kombu import Connection

from genesis.celery import app
from genesis.locks import WORKER_GONE_AFTER_SECONDS
from models_app.registry.models import Agent
from safety.models import WaltzBuild, WaltzItem
from safety.services import waltz_build_create
from tests.conftest import ROOT, child_environment
from tests.models_app.conftest import point_demo_provider_at, simulator_factory, wait_until  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnRedis:
    """A redis-server of this test's own, without persistence (a SIGKILL loses everything, the worst case)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (CI installs it; see .ci/run)")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


def start_worker_on(redis_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    name = f"outage-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "genesis", "worker", "-Q", "default", "--concurrency", "2",
             "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", name],
            cwd=ROOT, env=child_environment(REDIS_URL=redis_url), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: f"{name} ready." in log_path.read_text(errors="replace"), timeout=60)
    return process


def run_build(redis_url: str, *, target: int, seed: int = 0) -> WaltzBuild:
    build = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=target, seed=seed, enqueue=False)
    with Connection(redis_url) as connection:
        app.send_task("safety.run_waltz_build", args=[build.pk], connection=connection)
    return build


def finished(build: WaltzBuild) -> WaltzBuild | None:
    return WaltzBuild.objects.filter(pk=build.pk, status__in=["succeeded", "failed"]).first()


def sweep_stranded_builds(redis_url: str) -> None:
    """What beat runs every minute, now, in a process whose broker is `redis_url`: a build whose
    task gave up while Redis was away (its retry could not be sent) is sent again; one still running is not."""
    script = ("import django; django.setup(); from safety.services import waltz_builds_resend_stranded; "
              "print(waltz_builds_resend_stranded(older_than_seconds=0))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**child_environment(REDIS_URL=redis_url), "DJANGO_SETTINGS_MODULE": "genesis.settings"})
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_worker_running_a_task_outlives_a_redis_outage_and_the_work_completes(
    seeded_demo, simulator_factory, own_redis, tmp_path  # noqa: F811 - the fixture imported above
) -> None:
    point_demo_provider_at(simulator_factory(latency_ms=100), rate_limit_per_minute=60_000, max_concurrency=2)
    log_path = tmp_path / "worker.log"
    # Two processes, so the worker polls the queue while its task runs (kombu's crash needed a poll in flight).
    worker = start_worker_on(own_redis.url, log_path)
    try:
        build = run_build(own_redis.url, target=60)
        wait_until(lambda: WaltzItem.objects.filter(build=build, done=True).count() >= 3, timeout=60)

        own_redis.kill()  # SIGKILL: the connection breaks while the task (acks_late) runs, and Redis loses its data
        time.sleep(5)
        assert "Unrecoverable error" not in log_path.read_text(errors="replace")
        own_redis.start()

        # The worker takes up the broker again; the build ends, by its running task or (if the provider
        # calls gave up while Redis was away) by the sweep sending it again.
        wait_until(lambda: log_path.read_text(errors="replace").count("Connected to") >= 2, timeout=60)
        # The sweep takes over a running build whose lock is free once it started a minute ago
        # (genesis/locks.py running_without_worker), as beat's next run would.
        started_at = WaltzBuild.objects.get(pk=build.pk).started_at
        time.sleep(max(0.0, (started_at + timedelta(seconds=WORKER_GONE_AFTER_SECONDS + 1) - timezone.now()).total_seconds()))
        sweep_stranded_builds(own_redis.url)
        build = wait_until(lambda: finished(build), timeout=120)
        assert build.status == "succeeded", build.error
        # A task sent after the outage runs too.
        later = run_build(own_redis.url, target=3, seed=1)
        assert wait_until(lambda: finished(later), timeout=60).status == "succeeded"
        assert worker.poll() is None
        assert "Unrecoverable error" not in log_path.read_text(errors="replace")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


def test_a_short_break_in_the_broker_connection_runs_a_task_once_more_not_twice_at_once(own_redis, tmp_path) -> None:
    # Redis stays up, only the worker's connections break: kombu puts the running task's message back
    # at once, and the worker used to run it again beside the first run (two runs 2 s apart).
    runs, log_path = tmp_path / "runs.txt", tmp_path / "worker.log"
    env = {**child_environment(BLIP_BROKER_URL=own_redis.url), "PYTHONPATH": str(ROOT)}
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.genesis.blip_app", "worker", "-Q", "default", "--concurrency", "2",
             "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", f"blip-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: " ready." in log_path.read_text(errors="replace"), timeout=60)
        send = f"from tests.genesis.blip_app import slow; slow.delay({str(runs)!r}, 6)"
        subprocess.run([sys.executable, "-c", send], cwd=ROOT, env=env, check=True, timeout=60)
        wait_until(lambda: runs.exists() and "start" in runs.read_text(), timeout=30)
        time.sleep(1)
        subprocess.run(["redis-cli", "-p", str(own_redis.port), "CLIENT", "KILL", "TYPE", "normal"], check=True, timeout=10)

        def runs_seen() -> tuple[list[float], list[float]]:
            lines = runs.read_text().split()
            times = list(zip(lines[::2], lines[1::2], strict=True))
            return [float(at) for word, at in times if word == "start"], [float(at) for word, at in times if word == "end"]

        # Until the latest run has ended (a run takes 6 s), however long the worker took to notice the
        # break and reconnect on a loaded machine, rather than a fixed 12 s. A run started beside an
        # unfinished one starts before that one's end, so it is seen by then.
        wait_until(lambda: (seen := runs_seen())[1] and any(end >= seen[0][-1] + 5.5 for end in seen[1]), timeout=60)
        starts, ends = runs_seen()
        # Usually the first run is stopped when its connection breaks and the message runs once more,
        # alone (two starts, one end). On a loaded machine the worker may notice the break only after the
        # run ended: it ran once, or once more after it ended (its ack was lost with the connection).
        # Never twice at once: no run starts between another's start and its end.
        assert len(starts) <= 2, runs.read_text()
        for end in ends:
            own_start = max(start for start in starts if start <= end - 5.5)
            assert not any(own_start < start < end for start in starts), f"two runs at once: {runs.read_text()}"
        assert worker.poll() is None
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
