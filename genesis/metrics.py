"""/metrics: the process's own counters, merged across processes, plus figures read at scrape time.

Two kinds of metric, chosen by where the truth lives:

* **Counted as it happens** (outcomes, fallbacks among them, provider calls): prometheus_client counters and
  histograms. Gunicorn runs several worker processes and Celery several pool processes, and a scrape
  reaches only one of them, so with ``PROMETHEUS_MULTIPROC_DIR`` set (scripts/run.sh and the
  deployment do; it must be set before the process starts and emptied when the whole service
  restarts) every process writes its values to files there and this view adds them up
  (prometheus_client's multiprocess mode). Without it (a single process: tests, ``runserver``) the
  process's own registry is served.
* **Read at scrape time** (the ledger, rollout state, job states, queue depths, beat's last tick,
  dead letters): a ``Collector`` registered with :func:`register_scrape_collector`. Rows and Redis
  keys are shared by every process, so any process answers the same, and a restart resets nothing.
  Every web machine scraped exports the same totals, so rules, panels and runbooks take one copy of
  these by their own labels (``max by (agent, operation) (…)``) and ``sum`` only the counted kind.

Celery figures (this module, because genesis owns the Celery app):

- ``genesis_celery_queue_length{queue}``            messages waiting in each declared queue
- ``genesis_celery_workers{queue}``                 workers consuming the queue (heartbeats < 60 s old)
- ``genesis_celery_beat_last_tick_timestamp_seconds``  when beat last sent a periodic task (Unix time;
  beat saves ``last_run_at`` as it sends each task, CELERY_BEAT_SYNC_EVERY = 1, so it lags by seconds)

Background jobs whose sweep resends them (audits, dataset copies, WaltzRL builds), registered by
their apps (:func:`register_job_backlog`; genesis cannot read their rows):

- ``genesis_jobs_stalled{kind}``         jobs of the kind the sweep would send again now: queued past its
  resend time or running with no worker holding its lock (genesis/locks.py ``stranded``); 0 included
- ``genesis_jobs_queued_seconds{kind}``  how long the oldest job of the kind not yet started has waited
  (no series when none waits)

Redis, read at scrape time (queue lengths, worker heartbeats, the exposure dead letters), goes through
one :class:`RedisReads` per scrape, whichever collector reads: one client and one verdict. After the first failure the scrape's other Redis reads are skipped (a Redis that answers
nothing costs one timeout per scrape, not one per read) and their figures are left out, so

- ``genesis_redis_metrics_up``  1 when every Redis read of this scrape succeeded, 0 when one failed

says whether their absence means "Redis unreachable from this machine" rather than "nothing to report"
(the alerts on them go quiet exactly then: RedisMetricsUnavailable). Per machine, like
``genesis_cost_metrics_up``. Not emitted without ``REDIS_URL`` (the embedded mode: file broker, local
cache), where nothing is read from Redis.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db.models import Min, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# + "<node name>:<pid>:<random>" → JSON list of queues, expiring. One key per worker process: two
# workers started without -n on one host are both celery@host, and a key per node name let each
# overwrite the other's queues and the first to stop delete the other's announcement.
WORKER_HEARTBEAT_KEY = "genesis:celery:workers:"
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
    # All of them are served as one collector (ScrapeTimeCollector), registered again with every
    # addition so that the registry checks the new names against the others.
    try:
        REGISTRY.unregister(_SCRAPE_TIME)
    except KeyError:  # the first one
        pass
    REGISTRY.register(_SCRAPE_TIME)


def scrape_time_metric_labels() -> dict[str, tuple[str, ...]]:
    """The sample names every registered scrape-time collector exports (a counter's with ``_total``),
    each with its own label names: the same on every process and machine, so a query over several
    scraped instances must take one copy by those labels (``max by (agent, operation) (…)``), not add
    them up — and not ``max without (instance)`` either, which keeps any other per-target label (a
    Kubernetes ``pod``) and so as many copies as targets (tests/ops/test_instance_aggregation.py) —
    except the per-machine verdicts on reading them (``genesis_redis_metrics_up``,
    ``genesis_cost_metrics_up``), which that test sets apart."""
    register_metrics()
    return {family.name + ("_total" if family.type == "counter" else ""): tuple(getattr(family, "_labelnames", ()))
            for family in _SCRAPE_TIME.describe()}


def scrape_time_metric_names() -> set[str]:
    """The names of `scrape_time_metric_labels`."""
    return set(scrape_time_metric_labels())


def exposition() -> bytes:
    """The /metrics body."""
    register_metrics()
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    # The live counters of this process are in the files too: serving REGISTRY as well would count
    # them twice. The scrape-time collectors read shared state and are added once.
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry)
    registry.register(_SCRAPE_TIME)
    return generate_latest(registry)


# GET and HEAD only: genesis/urls.py wraps it (genesis.middleware.get_and_head_only, a JSON 405 otherwise).
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


# --- Redis, read at scrape time ----------------------------------------------------------------------


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)


T = TypeVar("T")


class RedisReads:
    """The Redis reads of one scrape: one client, one verdict (see the module's docstring)."""

    def __init__(self) -> None:
        self._client: Any = None
        self.failure = ""  # the first read that failed, and why

    def read(self, what: str, read: Callable[[Any], T]) -> T | None:
        """`read(client)`; None without Redis, once a read of this scrape has failed, or when this one
        fails (logged, naming `what`)."""
        if not settings.REDIS_URL or self.failure:
            return None
        try:
            if self._client is None:
                self._client = redis_client()
            return read(self._client)
        except Exception as exc:  # noqa: BLE001 - a scrape answers even when Redis does not
            self.failure = f"{what}: {type(exc).__name__}: {exc}"
            logger.warning("metrics: cannot read %s from Redis (%s: %s); this scrape reads nothing more from Redis",
                           what, type(exc).__name__, exc)
            return None

    def up_family(self) -> GaugeMetricFamily:
        family = _redis_up_family()
        if settings.REDIS_URL:
            family.add_metric([], 0 if self.failure else 1)
        return family

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # noqa: BLE001
                logger.debug("metrics: closing the Redis client: %s", exc)
            self._client = None


_current_reads: ContextVar[RedisReads | None] = ContextVar("genesis_metrics_redis_reads", default=None)


@contextmanager
def redis_reads() -> Iterator[RedisReads]:
    """The Redis reads of the scrape in progress (shared by every collector it runs), or of this
    collection alone when a collector is asked outside a scrape. Yield figures after leaving the
    block, not inside it: a collector is a generator."""
    current = _current_reads.get()
    if current is not None:
        yield current
        return
    reads = RedisReads()
    token = _current_reads.set(reads)
    try:
        yield reads
    finally:
        _current_reads.reset(token)
        reads.close()


def _redis_up_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "genesis_redis_metrics_up",
        "1 if every Redis read of this scrape (Celery queues and workers, dead letters) succeeded, 0 if one failed",
    )


class ScrapeTimeCollector(Collector):
    """Every registered scrape-time collector, collected as one scrape: they share its RedisReads, and
    its verdict comes after all of them (registration order cannot put it before a reader)."""

    def describe(self) -> Iterator[Metric]:
        for collector in list(_scrape_collectors):
            yield from collector.describe()
        yield _redis_up_family()

    def collect(self) -> Iterator[Metric]:
        with redis_reads() as reads:
            families = [family for collector in list(_scrape_collectors) for family in collector.collect()]
            up = reads.up_family()
        yield from families
        if up.samples:
            yield up


_SCRAPE_TIME = ScrapeTimeCollector()


# --- Celery ------------------------------------------------------------------------------------------


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
        lengths: dict[str, int] | None = None
        if settings.REDIS_URL:
            with redis_reads() as reads:
                lengths = reads.read("the Celery queue lengths", _redis_queue_lengths)
                workers = reads.read("the worker heartbeats", _worker_counts)
            for queue, count in sorted((workers or {}).items()):
                families["workers"].add_metric([queue], count)
        else:
            try:
                lengths = _file_queue_lengths()
            except OSError as exc:
                logger.warning("metrics: cannot read the embedded broker's queues: %s: %s", type(exc).__name__, exc)
        for queue, length in sorted((lengths or {}).items()):
            families["queue"].add_metric([queue], length)
        add_unlabelled(families["beat"], read=_beat_last_tick, what="beat's last tick")
        yield from families.values()


class WorkerHeartbeat:
    """A Celery worker's announcement, in Redis, of the queues it consumes, so /metrics can count workers
    per queue without pinging them during a scrape: written every 15 s under a key of its own (the node
    name, the process id and a random part, so workers sharing a node name on one host are each
    counted), removed by `stop` — only this key —, and expiring within a minute if the worker is killed."""

    def __init__(self, *, hostname: str, queues: list[str]) -> None:
        self.key = f"{WORKER_HEARTBEAT_KEY}{hostname or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._payload = json.dumps(sorted(queues))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="genesis-worker-heartbeat", daemon=True)

    def start(self) -> WorkerHeartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        client = None
        while not self._stopped.is_set():
            try:
                client = client or redis_client()
                client.set(self.key, self._payload, ex=WORKER_HEARTBEAT_TTL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next time
                logger.warning("worker heartbeat not written: %s: %s", type(exc).__name__, exc)
                client = None
            self._stopped.wait(WORKER_HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)  # a write in flight must not land after the delete
        client = redis_client()
        try:
            client.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - the key expires by itself
            logger.warning("worker heartbeat not removed: %s: %s", type(exc).__name__, exc)
        finally:
            client.close()


_heartbeat: WorkerHeartbeat | None = None  # this worker process's own


def start_worker_heartbeat(*, hostname: str, queues: list[str]) -> WorkerHeartbeat | None:
    """In a Celery worker's main process (worker_ready): announce its queues until stop_worker_heartbeat."""
    global _heartbeat
    if not settings.REDIS_URL:
        return None
    _heartbeat = WorkerHeartbeat(hostname=hostname, queues=queues).start()
    return _heartbeat


def stop_worker_heartbeat() -> None:
    """In the same process (worker_shutdown): withdraw this worker's announcement, and no other's."""
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


# --- background jobs resent by their sweeps -----------------------------------------------------------


@dataclass(frozen=True)
class JobBacklog:
    """One kind of background job, as its app hands it to /metrics: the selectors its sweep reads."""

    stranded: Callable[..., list[int]]  # (now=) what the sweep would send again now (genesis/locks.py `stranded`)
    queued: Callable[[], QuerySet[Any]]  # the jobs not started yet (rows with a `created_at`)

    def read(self) -> tuple[int, float | None]:
        """(stalled, seconds the oldest job not started has waited — None when none waits)."""
        now = timezone.now()
        oldest = self.queued().aggregate(oldest=Min("created_at"))["oldest"]
        return len(self.stranded(now=now)), None if oldest is None else max(0.0, (now - oldest).total_seconds())


_job_backlogs: dict[str, JobBacklog] = {}


def register_job_backlog(kind: str, *, stranded: Callable[..., list[int]], queued: Callable[[], QuerySet[Any]]) -> None:
    """Export the `kind` series of genesis_jobs_stalled and genesis_jobs_queued_seconds from the sweep's own
    selectors. Called by the app that owns the rows (its AppConfig.ready): genesis sits below the apps and
    cannot read them."""
    _job_backlogs[kind] = JobBacklog(stranded=stranded, queued=queued)


class BackgroundJobsCollector(Collector):
    """genesis_jobs_stalled and genesis_jobs_queued_seconds of every registered kind. Like the sweep,
    the read tries the lock of each job running for over a minute (a query or two per such job, per
    scrape, per web machine): a worker taking the job over at that very instant finds the lock taken
    and leaves it, and the next sweep sends it again — a minute's delay, as with the sweep itself."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "genesis_jobs_stalled",
                "Background jobs their sweep would send again: queued past its resend time, or running with no worker",
                labels=["kind"],
            ),
            GaugeMetricFamily(
                "genesis_jobs_queued_seconds",
                "How long the oldest background job of the kind not yet started has waited (seconds)",
                labels=["kind"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stalled, queued = self._families()
        for kind, backlog in sorted(_job_backlogs.items()):
            try:
                stalled_jobs, oldest_queued_seconds = backlog.read()
            except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
                logger.warning("metrics: cannot read the %s jobs: %s: %s", kind, type(exc).__name__, exc)
                continue
            stalled.add_metric([kind], stalled_jobs)
            if oldest_queued_seconds is not None:
                queued.add_metric([kind], oldest_queued_seconds)
        yield from (stalled, queued)


def register_metrics() -> None:
    register_scrape_collector(CeleryCollector())
    register_scrape_collector(BackgroundJobsCollector())
