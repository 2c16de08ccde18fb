"""Celery figures at /metrics: a real worker announces the queues it consumes and withdraws when it
stops cleanly — each worker for itself, even two sharing a node name on one host; queue lengths come
from the broker."""

from __future__ import annotations

import re
import socket
import time

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from genesis.metrics import CeleryCollector, exposition
from tests.conftest import ROOT, WorkerProcess
from tests.ops.test_prometheus_e2e import forget_killed_workers

pytestmark = pytest.mark.django_db(transaction=True)


def gauges(name: str) -> dict[str, float]:
    return {sample.labels["queue"]: sample.value for family in CeleryCollector().collect()
            for sample in family.samples if sample.name == name}


def test_a_worker_is_counted_on_its_queues_while_it_runs(tmp_path) -> None:
    forget_killed_workers()
    assert gauges("genesis_celery_workers") == {"default": 0, "benchmarks": 0}
    worker = WorkerProcess(queues="default", concurrency=1, log_path=tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 20
        while gauges("genesis_celery_workers")["default"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gauges("genesis_celery_workers") == {"default": 1, "benchmarks": 0}
    finally:
        worker.stop()
    assert gauges("genesis_celery_workers") == {"default": 0, "benchmarks": 0}


def wait_for_workers(expected: dict[str, int], *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while gauges("genesis_celery_workers") != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gauges("genesis_celery_workers") == expected


def test_two_workers_with_one_node_name_on_one_host_are_both_counted(tmp_path) -> None:
    # Started without -n, two workers on one host are both celery@<host>: their heartbeats shared a
    # key, so the benchmarks worker's announcement was overwritten by the default one's (the
    # benchmarks queue read 0 workers while one ran), and the first to stop deleted the other's.
    forget_killed_workers()
    shared_name = f"celery-{time.monotonic_ns()}@{socket.gethostname()}"
    default = WorkerProcess(queues="default", concurrency=1, log_path=tmp_path / "default.log", name=shared_name).start()
    benchmarks = WorkerProcess(queues="benchmarks", concurrency=1, log_path=tmp_path / "benchmarks.log", name=shared_name)
    try:
        benchmarks.start()
        wait_for_workers({"default": 1, "benchmarks": 1})
        default.stop()
        wait_for_workers({"default": 0, "benchmarks": 1}, timeout=5)  # its own key only: gone at once
    finally:
        default.stop()
        benchmarks.stop()
    assert gauges("genesis_celery_workers") == {"default": 0, "benchmarks": 0}


def test_queue_lengths_count_waiting_messages() -> None:
    from genesis.celery import app

    app.control.purge()
    before = gauges("genesis_celery_queue_length")
    assert before == {"default": 0, "benchmarks": 0}
    with app.producer_or_acquire() as producer:
        for _ in range(3):
            app.send_task("genesis.no_such_task", queue="benchmarks", producer=producer)
    assert gauges("genesis_celery_queue_length") == {"default": 0, "benchmarks": 3}
    app.control.purge()


def emitted_names() -> set[str]:
    return {sample.name for family in text_string_to_metric_families(exposition().decode()) for sample in family.samples}


def test_the_readme_names_exactly_what_the_embedded_mode_does_not_emit() -> None:
    # README › Monitoring: without REDIS_URL (a bare `make run`) the worker count, the exposure dead
    # letters and the verdict on reading Redis are never emitted; everything else is.
    readme = (ROOT / "README.md").read_text()
    paragraph = readme.split("\nWithout `REDIS_URL` (the embedded mode", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(genesis_[a-z_]+)`", paragraph))
    with_redis = emitted_names()
    with override_settings(REDIS_URL=""):
        embedded = emitted_names()
    assert documented == with_redis - embedded == {
        "genesis_celery_workers", "genesis_exposure_dead_letter_batches", "genesis_redis_metrics_up"}
    assert embedded <= with_redis
