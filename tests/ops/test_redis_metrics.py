"""genesis_redis_metrics_up: the figures /metrics reads from Redis (Celery queues and workers, the
exposure dead letters) are judged together, once per scrape. With Redis answering the gauge is 1 beside
them; with a Redis that is not there (a closed port) or that answers nothing (a port that accepts and
stays silent) the scrape still answers, says 0, keeps the figures it reads from the database — the
rollout state included — and tries Redis once, not once per reader."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from genesis.metrics import exposition
from tests.experiments.factories import agent_with_candidate
from tests.ops.conftest import free_port, running_genesis_server

pytestmark = pytest.mark.django_db(transaction=True)

READ_FROM_REDIS = {"genesis_celery_queue_length", "genesis_celery_workers", "genesis_exposure_dead_letter_batches"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def names(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {name for name, _ in found}


class SilentRedis:
    """A port that completes connections and never answers: a hung Redis, or one behind a firewall
    that drops its replies. Counts the connections made to it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.socket.setblocking(False)
        self.url = f"redis://127.0.0.1:{self.socket.getsockname()[1]}/0"
        self.held: list[socket.socket] = []

    def connections(self) -> int:
        """Connections made so far (the kernel queued them; taking them here keeps them open)."""
        while True:
            try:
                self.held.append(self.socket.accept()[0])
            except BlockingIOError:
                return len(self.held)

    def close(self) -> None:
        for held in self.held:
            held.close()
        self.socket.close()


@pytest.fixture
def silent_redis(settings) -> Iterator[SilentRedis]:
    silent = SilentRedis()
    # This process's Redis, everywhere: our own clients (REDIS_URL) and Django's cache.
    settings.REDIS_URL = silent.url
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": silent.url,
                                   "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
    try:
        yield silent
    finally:
        silent.close()


def test_with_redis_answering_the_gauge_is_1_beside_the_figures_it_vouches_for() -> None:
    found = samples(exposition().decode())
    assert found[("genesis_redis_metrics_up", ())] == 1
    assert READ_FROM_REDIS <= names(found)


def test_a_redis_that_is_not_there_is_reported_and_the_database_figures_stay(tmp_path) -> None:
    agent_with_candidate("qa_agent")
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running_genesis_server(tmp_path, REDIS_URL=closed) as server:
        found = samples(server.metrics_text())
        log = server.log.read_text()
    assert found[("genesis_redis_metrics_up", ())] == 0
    assert not READ_FROM_REDIS & names(found)
    # What comes from the database is all there: the ledger, the jobs, and the rollout state.
    assert found[("genesis_cost_metrics_up", ())] == 1
    assert found[("genesis_benchmark_runs", (("state", "queued"),))] == 0
    assert found[("genesis_rollout_experiment", (("agent", "qa_agent"), ("status", "none")))] == 1
    assert "metrics: cannot read" in log and "from Redis" in log


def test_a_silent_redis_is_tried_once_per_scrape_not_once_per_reader(silent_redis) -> None:
    agent_with_candidate("qa_agent")
    found = samples(exposition().decode())
    assert found[("genesis_redis_metrics_up", ())] == 0
    assert not READ_FROM_REDIS & names(found)
    assert found[("genesis_rollout_experiment", (("agent", "qa_agent"), ("status", "none")))] == 1
    # The first read to time out settles the scrape: the dead letters, the Celery queues and the
    # worker heartbeats would otherwise each wait out their own timeout on a connection of their own.
    assert silent_redis.connections() == 1
    exposition()
    assert silent_redis.connections() == 2  # the next scrape judges afresh
