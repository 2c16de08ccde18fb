"""/metrics: the process's own counters, merged across processes, plus figures read at scrape time.

Two kinds of metric, chosen by where the truth lives:

* **Counted as it happens** (outcomes, provider calls, fallbacks): prometheus_client counters and
  histograms. Gunicorn runs several worker processes and Celery several pool processes, and a scrape
  reaches only one of them, so with ``PROMETHEUS_MULTIPROC_DIR`` set (scripts/run.sh and the
  deployment do; it must be set before the process starts and emptied when the whole service
  restarts) every process writes its values to files there and this view adds them up
  (prometheus_client's multiprocess mode). Without it (a single process: tests, ``runserver``) the
  process's own registry is served.
* **Read at scrape time** (the ledger, rollout state, job states, queue depths, beat's last tick,
  dead letters): a ``Collector`` registered with :func:`register_scrape_collector`. Rows and Redis
  keys are shared by every process, so any process answers the same, and a restart resets nothing.
  Every web machine scraped exports the same totals, so rules, panels and runbooks take
  ``max without (instance)`` of these and ``sum`` only the counted kind.

Celery figures (this module, because genesis owns the Celery app):

- ``genesis_celery_queue_length{queue}``            messages waiting in each declared queue
- ``genesis_celery_workers{queue}``                 workers consuming the queue (heartbeats < 60 s old)
- ``genesis_celery_beat_last_tick_timestamp_seconds``  when beat last sent a periodic task (Unix time;
  django-celery-beat writes ``last_run_at`` back every few minutes, so the figure lags by up to that)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_KEY = "genesis:celery:workers:"  # + hostname → JSON list of queues, expiring
WORKER_HEARTBEAT_SECONDS = 15
WORKER_HEARTBEAT_TTL_SECONDS = 60


class ScrapeCollector(Collector, Protocol):
    def describe(self) -> Iterable[Metric]:
        """The families it exports, without reading anything (registration and the names below ask)."""
        ...


_scrape_collectors: list[ScrapeCollector] = []


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def register_scrape_collector(collector: ScrapeCollector) -> None:
    """Serve `collector` at /metrics. Registered once per process (AppConfig.ready may run twice)."""
    if any(type(existing) is type(collector) for existing in _scrape_collectors):
        return
    _scrape_collectors.append(collector)
    REGISTRY.register(collector)


def scrape_time_metric_names() -> set[str]:
    """The sample names every registered scrape-time collector exports (a counter's with ``_total``):
    the same on every process and machine, so a query over several scraped instances must take one
    copy (``max without (instance)``), not add them up (tests/ops/test_instance_aggregation.py)."""
    register_metrics()
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for collector in _scrape_collectors
        for family in collector.describe()
    }


def exposition() -> bytes:
    """The /metrics body."""
    register_metrics()
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    # The live counters of this process are in the files too: serving REGISTRY as well would count
    # them twice. The scrape-time collectors read shared state and are added once.
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry)
    for collector in _scrape_collectors:
        registry.register(collector)
    return generate_latest(registry)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def add_unlabelled(family: GaugeMetricFamily, *, read: Callable[[], float | None], what: str) -> None:
    """Add `read()` to a gauge without labels; nothing when it reads None or fails (logged: a scrape
    must answer when the database or Redis does not)."""
    try:
        value = read()
    except Exception as exc:  # noqa: BLE001
        logger.warning("metrics: cannot read %s: %s: %s", what, type(exc).__name__, exc)
        return
    if value is not None:
        family.add_metric([], value)


# --- Celery ------------------------------------------------------------------------------------------


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)


def _queue_names() -> list[str]:
    return [queue.name for queue in settings.CELERY_TASK_QUEUES]


# kombu's Redis transport keeps a queue's messages of priority p > 0 in a list of its own.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def _redis_queue_lengths(client: Any) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    queues = _queue_names()
    for queue in queues:
        for step in _PRIORITY_STEPS:
            pipe.llen(queue if step == 0 else f"{queue}{_PRIORITY_SEPARATOR}{step}")
    lengths = pipe.execute()
    per = len(_PRIORITY_STEPS)
    return {queue: sum(lengths[i * per:(i + 1) * per]) for i, queue in enumerate(queues)}


def _file_queue_lengths() -> dict[str, int]:
    # The embedded broker writes one file per message, named `<time>_<uuid>.<queue>.msg`.
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in")
    names = os.listdir(str(folder)) if folder and os.path.isdir(str(folder)) else []
    return {queue: sum(1 for name in names if name.endswith(f".{queue}.msg")) for queue in _queue_names()}


def _worker_counts(client: Any) -> dict[str, int]:
    counts = {queue: 0 for queue in _queue_names()}
    keys = list(client.scan_iter(match=f"{WORKER_HEARTBEAT_KEY}*", count=100))
    for raw in client.mget(keys) if keys else []:
        if raw is None:
            continue
        for queue in json.loads(raw):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def _beat_last_tick() -> float | None:
    from django.db.models import Max
    from django_celery_beat.models import PeriodicTask

    last = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
    return last.timestamp() if last else None


class CeleryCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "queue": GaugeMetricFamily("genesis_celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"]),
            "workers": GaugeMetricFamily(
                "genesis_celery_workers", "Celery workers consuming a queue (heartbeat under 60 s old)", labels=["queue"]
            ),
            "beat": GaugeMetricFamily(
                "genesis_celery_beat_last_tick_timestamp_seconds", "When Celery beat last sent a periodic task (Unix time)"
            ),
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        try:
            if settings.REDIS_URL:
                client = redis_client()
                try:
                    lengths, workers = _redis_queue_lengths(client), _worker_counts(client)
                finally:
                    client.close()
                for queue, count in sorted(workers.items()):
                    families["workers"].add_metric([queue], count)
            else:
                lengths = _file_queue_lengths()
            for queue, length in sorted(lengths.items()):
                families["queue"].add_metric([queue], length)
        except Exception as exc:  # noqa: BLE001 - a scrape answers even when Redis does not
            logger.warning("metrics: cannot read Celery queues: %s: %s", type(exc).__name__, exc)
        add_unlabelled(families["beat"], read=_beat_last_tick, what="beat's last tick")
        yield from families.values()


_stop_heartbeat = threading.Event()


def start_worker_heartbeat(*, hostname: str, queues: list[str]) -> threading.Thread | None:
    """In a Celery worker's main process: say every 15 s, in Redis, which queues it consumes, so
    /metrics can count workers per queue without pinging them during a scrape. A worker that stops
    cleanly removes its key (stop_worker_heartbeat); a killed one's expires within a minute."""
    if not settings.REDIS_URL:
        return None
    key = f"{WORKER_HEARTBEAT_KEY}{hostname or socket.gethostname()}"
    payload = json.dumps(sorted(queues))
    _stop_heartbeat.clear()

    def beat() -> None:
        client = None
        while not _stop_heartbeat.is_set():
            try:
                client = client or redis_client()
                client.set(key, payload, ex=WORKER_HEARTBEAT_TTL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next time
                logger.warning("worker heartbeat not written: %s: %s", type(exc).__name__, exc)
                client = None
            _stop_heartbeat.wait(WORKER_HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="genesis-worker-heartbeat", daemon=True)
    thread.start()
    return thread


def stop_worker_heartbeat(*, hostname: str) -> None:
    _stop_heartbeat.set()
    if not settings.REDIS_URL:
        return
    client = redis_client()
    try:
        client.delete(f"{WORKER_HEARTBEAT_KEY}{hostname or socket.gethostname()}")
    except Exception as exc:  # noqa: BLE001 - the key expires by itself
        logger.warning("worker heartbeat not removed: %s: %s", type(exc).__name__, exc)
    finally:
        client.close()


def register_metrics() -> None:
    register_scrape_collector(CeleryCollector())
