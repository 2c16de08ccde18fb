"""The routing hot path: an in-process, versioned copy of every agent's routing config, and the
exposure buffer. `POST /route` and `GET /agents/{agent}/config` answer from here without touching
the database in steady state.

How the copy stays fresh
------------------------
* Every service that changes a routing decision (start, stage approval, pause, resume, rollback,
  completion) calls :func:`publish_change` on commit: it INCRs a generation counter in Redis and
  marks this process's copy stale.
* A request looks at the Redis counter at most once per ``CHECK_INTERVAL_SECONDS`` (one GET,
  ~0.1 ms); when the generation moved, the copy is rebuilt from the database (five queries).
* Changes made outside these services (say, a person puts an agent's first baseline live in the
  registry admin) do not bump the counter, so the copy is also rebuilt when it is older than
  ``MAX_AGE_SECONDS`` — such a change reaches every process within that time.
* Without Redis (the embedded dev mode) there is no shared counter: the copy is rebuilt every
  ``CHECK_INTERVAL_SECONDS`` instead.
* When Redis or the database fails, the last copy keeps answering and a warning is logged (at most
  once a minute); the next check tries again.

Decisions use :func:`experiments.client.decide_route` on the same config JSON that
``GET /agents/{agent}/config`` serves, so the server and an in-process client cannot disagree.

Exposures
---------
Each decision inside an experiment is remembered in a process-local buffer (deduplicated per
experiment, user and arm). At most every ``EXPOSURE_FLUSH_SECONDS`` or ``EXPOSURE_FLUSH_SIZE``
entries, the request that notices pushes the whole buffer to a Redis list as one JSON blob — one
Redis call per batch, none per request; a timer does it when no request comes — and the
``experiments.flush_exposures`` task writes the
rows in bulk (``Assignment``, idempotent on (experiment, user, arm)). Without Redis the batch is
written to the database directly (dev mode). A process that dies loses at most its unflushed
buffer; the outcomes path also records the exposure of every user it sees, so no user with an
outcome lacks an assignment row.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Max
from redis.exceptions import LockError

from experiments import intake
from experiments.bulk import insert_ignoring_conflicts
from experiments.client import AgentRouteConfig, RouteDecision, decide_route
from experiments.models import (
    ACTIVE_STATUSES,
    ASSIGNMENT_COLUMNS,
    Assignment,
    Experiment,
    ExperimentStage,
    ExperimentStatus,
)
from genesis.logging import Throttled
from genesis.redis_clients import fail_fast_redis
from models_app.registry.models import Agent, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0
MAX_AGE_SECONDS = 30.0
GENERATION_KEY = "genesis:experiments:routing_generation"
EXPOSURE_LIST_KEY = "genesis:experiments:exposures"
# Batches the drain could not write because of what they hold (not because the database is away):
# kept for a person to look at instead of blocking every batch queued behind them.
EXPOSURE_DEAD_LETTER_KEY = "genesis:experiments:exposures:dead"
# One drain at a time (drain_exposure_queue): each drain reads the head batch, writes it and only then
# removes it, so concurrent drains wrote the same batches over again (4 drains: ~5 row-writes a row).
# Renewed after every batch; a drain that died frees it when it expires.
EXPOSURE_DRAIN_LOCK_KEY = "genesis:experiments:exposures:drain"
EXPOSURE_DRAIN_LOCK_SECONDS = 60
EXPOSURE_FLUSH_SECONDS = 2.0
EXPOSURE_FLUSH_SIZE = 500
EXPOSURE_BUFFER_CAP = 100_000  # beyond this, while Redis is down, new exposures are dropped (and counted)
REDIS_TIMEOUT_SECONDS = 0.2
REDIS_RETRY_AFTER_SECONDS = 5.0
_WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class ExperimentRuntime:
    """What the server needs besides the public config: ids for the exposure rows."""

    experiment_id: int
    stage_id: int | None


@dataclass(frozen=True)
class AgentEntry:
    config: AgentRouteConfig
    config_json: dict[str, Any]
    etag: str
    runtime: ExperimentRuntime | None
    problem: str | None = None  # why this agent cannot be routed (no live model), else None


@dataclass
class RoutingTable:
    agents: dict[str, AgentEntry]
    generation: int | None
    loaded_at: float
    known_agents: frozenset[str] = field(default_factory=frozenset)


_lock = threading.Lock()
_table: RoutingTable | None = None
_stale = False
_last_check = 0.0
# Each kind of failure once a minute at most per process: every route meets it while it lasts.
_warnings = Throttled(_WARN_EVERY_SECONDS)
_redis_client: Any = None
_redis_retry_at = 0.0


def _warn(kind: str, message: str, *args: Any) -> None:
    _warnings.log(logger, logging.WARNING, kind, message, *args)


def _redis() -> Any:
    global _redis_client
    if not settings.REDIS_URL:
        return None
    if _redis_client is None:
        # The routing path would rather answer from its last config and try again later.
        _redis_client = fail_fast_redis(settings.REDIS_URL, timeout=REDIS_TIMEOUT_SECONDS)
    return _redis_client


def _read_generation() -> int | None:
    client = _redis()
    if client is None:
        return None
    if time.monotonic() < _redis_retry_at:
        raise ConnectionError("Redis failed moments ago; not trying again yet")
    try:
        value = client.get(GENERATION_KEY)
    except Exception:
        _redis_failed()
        raise
    return int(value) if value is not None else 0


def _redis_failed() -> None:
    # A circuit breaker: after a failure, requests do not pay for a connection attempt again for a while.
    global _redis_retry_at
    _redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_SECONDS


# --- building the table --------------------------------------------------------------------------


def _epoch_ms(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment else 0


def _model_ref(version: Any) -> dict[str, str]:
    return {"model": version.model_id, "provider": version.provider.name}


def _etag(config_json: dict[str, Any]) -> str:
    canonical = json.dumps(config_json, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def build_routing_table(*, generation: int | None) -> RoutingTable:
    """Every agent's routing config from the database (five queries, whatever the number of agents)."""
    slugs = dict(Agent.objects.values_list("id", "slug"))
    live = {
        version.agent_id: version
        for version in ModelVersion.objects.filter(status=ModelStatus.LIVE).select_related("provider")
    }
    active = {
        experiment.agent_id: experiment
        for experiment in Experiment.objects.filter(status__in=ACTIVE_STATUSES).select_related(
            "control__provider", "treatment__provider", "current_stage"
        )
    }
    # config_version: the newest change among the agent's model versions and experiments, in
    # milliseconds. Derived from the data, so every process computes the same number and ETag.
    version_changes = dict(
        ModelVersion.objects.values("agent_id").annotate(latest=Max("status_changed_at")).values_list("agent_id", "latest")
    )
    experiment_changes = dict(
        Experiment.objects.values("agent_id").annotate(latest=Max("routing_changed_at")).values_list("agent_id", "latest")
    )

    entries = {
        slug: _agent_entry(
            slug,
            live_version=live.get(agent_id),
            experiment=active.get(agent_id),
            config_version=max(_epoch_ms(version_changes.get(agent_id)), _epoch_ms(experiment_changes.get(agent_id))),
        )
        for agent_id, slug in slugs.items()
    }
    return RoutingTable(agents=entries, generation=generation, loaded_at=time.monotonic(), known_agents=frozenset(entries))


def _agent_entry(slug: str, *, live_version: ModelVersion | None, experiment: Experiment | None, config_version: int) -> AgentEntry:
    """One agent's routing config: its live model, and the running experiment's split if it has one."""
    if live_version is None:
        return AgentEntry(
            config=None,  # type: ignore[arg-type]
            config_json={},
            etag="",
            runtime=None,
            problem=f"agent '{slug}' has no live model version: make one live in the registry first",
        )
    experiment_json = None
    runtime = None
    if experiment is not None and experiment.status == ExperimentStatus.RUNNING and experiment.current_stage:
        experiment_json = {
            "key": experiment.key,
            "seed": experiment.seed,
            "stage_percent": experiment.current_stage.percent,
            "control": _model_ref(experiment.control),
            "treatment": _model_ref(experiment.treatment),
        }
        runtime = ExperimentRuntime(experiment_id=experiment.pk, stage_id=experiment.current_stage_id)
    config_json = {
        "agent": slug,
        "config_version": config_version,
        "live": _model_ref(live_version),
        "experiment": experiment_json,
    }
    return AgentEntry(
        config=AgentRouteConfig.from_json(config_json),
        config_json=config_json,
        etag=_etag(config_json),
        runtime=runtime,
    )


def current_table(*, agent: str | None = None) -> RoutingTable:
    """The routing table, refreshed as the module docstring says. Raises only when there has never
    been a table and the database cannot give one.

    `agent`: the agent being asked for. One the table does not know may have been created since it
    was loaded (agents are not announced through Redis), so the table is reloaded — at most once per
    CHECK_INTERVAL_SECONDS, so asking for made-up agents cannot hammer the database."""
    global _table, _stale, _last_check
    table = _table
    now = time.monotonic()
    if agent is not None and table is not None and agent not in table.known_agents and now - table.loaded_at >= CHECK_INTERVAL_SECONDS:
        _stale = True
    if table is not None and not _stale and now - _last_check < CHECK_INTERVAL_SECONDS:
        return table
    # One thread refreshes; the others keep answering from the current table meanwhile.
    if table is not None and not _lock.acquire(blocking=False):
        return table
    if table is None:
        _lock.acquire()
    try:
        table = _table
        now = time.monotonic()
        if table is not None and not _stale and now - _last_check < CHECK_INTERVAL_SECONDS:
            return table
        _last_check = now
        redis_failed = False
        try:
            generation = _read_generation()
        except Exception as exc:  # noqa: BLE001 - any Redis failure: keep the last config
            redis_failed, generation = True, None
            if table is not None:
                _warn("redis", "routing: Redis unavailable (%s); answering from the config loaded %.0f s ago",
                      exc, now - table.loaded_at)
        must_reload = (
            table is None
            or _stale  # this process made a change: reload even while Redis is away
            or now - table.loaded_at >= MAX_AGE_SECONDS
            or (not redis_failed and (generation is None or generation != table.generation))
        )
        if table is not None and not must_reload:
            return table
        stale_before = _stale
        _stale = False
        try:
            fresh = build_routing_table(generation=generation)
        except DatabaseError as exc:
            _stale = stale_before
            if table is None:
                raise
            _warn("database", "routing: cannot reload the routing config (%s); answering from the last one", exc)
            return table
        _table = fresh
        return fresh
    finally:
        _lock.release()


def publish_change() -> None:
    """Tell every process that a routing decision changed. Call inside the changing transaction:
    the signal goes out only once it commits."""

    def signal() -> None:
        global _stale
        _stale = True
        try:
            client = _redis()
            if client is not None:
                client.incr(GENERATION_KEY)
        except Exception as exc:  # noqa: BLE001 - other processes catch up within MAX_AGE_SECONDS
            _warn("redis-publish", "routing: could not publish a config change to Redis (%s); other processes "
                  "will pick it up within %.0f s", exc, MAX_AGE_SECONDS)

    transaction.on_commit(signal)


def reset() -> None:
    """Forget the table, the buffer and the Redis client (tests; after settings change)."""
    global _table, _stale, _last_check, _redis_client, _redis_retry_at
    with _lock:
        _table, _stale, _last_check, _redis_client, _redis_retry_at = None, False, 0.0, None, 0.0
    with _exposure_lock:
        if _flush_timer is not None:
            _flush_timer.cancel()
        _exposures.clear()
        _exposure_state["started"] = time.monotonic()
        _exposure_state["dropped"] = 0


# --- deciding --------------------------------------------------------------------------------------


class AgentNotRoutable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decide(*, entry: AgentEntry, user_id: str) -> RouteDecision:
    """The decision for one user, recording the exposure in the buffer. No I/O but, at most every
    EXPOSURE_FLUSH_SECONDS, one Redis push of the buffered exposures."""
    if entry.problem:
        raise AgentNotRoutable(entry.problem)
    decision = decide_route(config=entry.config, user_id=user_id)
    if entry.runtime is not None:
        record_exposure(
            experiment_id=entry.runtime.experiment_id,
            stage_id=entry.runtime.stage_id,
            user_id=user_id,
            variant=decision.variant,
        )
    return decision


# --- the exposure buffer ---------------------------------------------------------------------------

_exposure_lock = threading.Lock()
_exposures: dict[tuple[int, str, str], tuple[int | None, float]] = {}
_exposure_state: dict[str, float] = {"started": time.monotonic(), "dropped": 0}


_flush_timer: threading.Timer | None = None


def record_exposure(*, experiment_id: int, stage_id: int | None, user_id: str, variant: str) -> None:
    key = (experiment_id, user_id, variant)
    with _exposure_lock:
        first_in_buffer = not _exposures
        if key not in _exposures:
            if len(_exposures) >= EXPOSURE_BUFFER_CAP:
                _exposure_state["dropped"] += 1
            else:
                _exposures[key] = (stage_id, time.time())
        due = (
            len(_exposures) >= EXPOSURE_FLUSH_SIZE
            or time.monotonic() - _exposure_state["started"] >= EXPOSURE_FLUSH_SECONDS
        )
    if due:
        flush_exposure_buffer()
    if first_in_buffer or due:
        # After a flush that failed or was skipped (Redis away) the exposures are back in the buffer:
        # the timer keeps trying when no later request comes (nothing is armed twice).
        with _exposure_lock:
            buffered = bool(_exposures)
        if buffered:
            _arm_flush_timer()


def _arm_flush_timer() -> None:
    """Flush EXPOSURE_FLUSH_SECONDS from now even if no request comes to notice it is due: a web process
    that gets no more requests after a burst would otherwise hold those exposures until its next one."""
    global _flush_timer
    with _exposure_lock:
        if _flush_timer is not None and _flush_timer.is_alive():
            return
        # At least half a second: while Redis is away each try fails at once, and the timer must not spin.
        _flush_timer = threading.Timer(max(EXPOSURE_FLUSH_SECONDS, 0.5), _flush_when_idle)
        _flush_timer.daemon = True
        _flush_timer.start()


def _flush_when_idle() -> None:
    global _flush_timer
    with _exposure_lock:
        _flush_timer = None
    try:
        flush_exposure_buffer()
    except Exception as exc:  # noqa: BLE001 - the next request or timer tries again
        _warn("exposures", "routing: timed flush of exposures failed (%s)", exc)
    finally:
        if not settings.REDIS_URL:
            connections.close_all()  # this timer thread's own connection (the embedded mode writes rows)
    with _exposure_lock:
        still_buffered = bool(_exposures)  # Redis is failing: keep trying, as requests would
    if still_buffered:
        _arm_flush_timer()


def _take_buffer() -> list[list[Any]]:
    with _exposure_lock:
        batch = [[exp_id, user_id, variant, stage_id, seen] for (exp_id, user_id, variant), (stage_id, seen) in _exposures.items()]
        _exposures.clear()
        _exposure_state["started"] = time.monotonic()
        return batch


def _return_to_buffer(batch: list[list[Any]]) -> None:
    with _exposure_lock:
        for exp_id, user_id, variant, stage_id, seen in batch:
            if len(_exposures) >= EXPOSURE_BUFFER_CAP:
                _exposure_state["dropped"] += 1
                continue
            _exposures.setdefault((exp_id, user_id, variant), (stage_id, seen))


def flush_exposure_buffer() -> int:
    """Push this process's buffered exposures to Redis (or, without Redis, to the database)."""
    client = _redis()
    if client is not None and time.monotonic() < _redis_retry_at:
        return 0  # Redis failed moments ago; keep buffering
    batch = _take_buffer()
    if not batch:
        return 0
    try:
        if client is not None:
            client.rpush(EXPOSURE_LIST_KEY, json.dumps(batch, separators=(",", ":")))
        else:
            write_exposures(rows=batch)
    except Exception as exc:  # noqa: BLE001 - keep them for the next flush
        if client is not None:
            _redis_failed()
        _return_to_buffer(batch)
        _warn("exposures", "routing: could not flush %d exposures (%s); keeping them in memory", len(batch), exc)
        return 0
    return len(batch)


def write_exposures(*, rows: list[list[Any]]) -> int:
    """Insert exposure rows [experiment_id, user_id, variant, stage_id, first_seen_epoch] in bulk;
    rows already stored are skipped (unique per experiment, user and arm).

    Only exposures the database can have produced are written: of an experiment that has started, in a
    stage of it that has started. Routing records an exposure only in a running experiment's current
    stage, so any other row comes from a future the database does not know — a backup restored to an
    earlier point while Redis kept the exposures routed after it (a draft experiment, a stage still
    pending; docs/runbooks/backup-restore.md). Nor are those of an erased user from before the erasure
    (intake.erased_since; at every agent or the experiment's): the erasure drained Redis's queue, but a web
    process's buffer and a dead-letter batch replayed later are written after it, and would bring the
    exposure back. Such rows are left out and counted in a warning.

    One transaction behind the intake fence, like an /outcomes batch: an erasure records itself only
    once this has committed (and then deletes what it wrote), or this reads it."""
    if not rows:
        return 0
    # Earliest sighting per (experiment, user, arm) wins within the batch.
    earliest: dict[tuple[int, str, str], tuple[int | None, float]] = {}
    for exp_id, user_id, variant, stage_id, seen in rows:
        key = (int(exp_id), str(user_id), str(variant))
        if key not in earliest or seen < earliest[key][1]:
            earliest[key] = (stage_id, seen)
    with transaction.atomic(savepoint=False):  # the drain's own transaction when it has one
        intake.intake_fence_hold()
        started_experiments = dict(
            Experiment.objects.filter(pk__in={key[0] for key in earliest}, started_at__isnull=False).values_list("pk", "agent__slug")
        )
        started_stages = set(ExperimentStage.objects.filter(
            experiment_id__in=started_experiments, started_at__isnull=False,
            pk__in={stage_id for stage_id, _ in earliest.values() if stage_id is not None},
        ).values_list("pk", "experiment_id"))
        erased = intake.erased_since(datetime.fromtimestamp(min(seen for _, seen in earliest.values()), tz=UTC))
        values, unknown, of_erased = [], 0, 0
        for (exp_id, user_id, variant), (stage_id, seen) in earliest.items():
            first_seen = datetime.fromtimestamp(seen, tz=UTC)
            if exp_id not in started_experiments or (stage_id is not None and (stage_id, exp_id) not in started_stages):
                unknown += 1
            elif any(at >= first_seen for at in erased.of(user_id=user_id, agent=started_experiments[exp_id])):
                of_erased += 1
            else:
                values.append([exp_id, user_id, variant, stage_id, first_seen])
        if unknown or of_erased:
            logger.warning(
                "exposures: %d of %d left out — %d of an experiment or stage that does not exist or has not started in "
                "the database (restored from a backup older than the exposures?), %d of users erased since",
                unknown + of_erased, len(earliest), unknown, of_erased,
            )
        insert_ignoring_conflicts(
            table=Assignment._meta.db_table, columns=ASSIGNMENT_COLUMNS, rows=values,
            conflict=["experiment_id", "user_id", "variant"],
        )
    return len(values)


def drain_exposure_queue(*, max_batches: int | None = 200, wait_seconds: float = 0) -> int:
    """Move exposure batches from Redis into the database, one drain at a time (a Redis lock,
    EXPOSURE_DRAIN_LOCK_KEY): a drain that finds another running returns 0 at once — that one drains
    the queue — unless `wait_seconds` is given, when it waits that long for the lock and then drains
    anyway (the erasure, which must see every buffered exposure written before it deletes). Safe
    however it runs: the insert ignores rows already stored, and a batch is removed from Redis only
    after it is written. A batch that cannot be written because of its content goes to
    EXPOSURE_DEAD_LETTER_KEY (logged), so it never blocks the batches behind it; when the database
    itself is unreachable the batch stays at the head and the next run tries again. `max_batches=None`
    drains every batch queued when the drain began, however many (the erasure: a user's exposure behind
    a backlog longer than a beat drain's share was written after the erasure had committed), and goes on
    if the lock expires under it (a batch that took over a minute): two drains at once are safe."""
    client = _redis()
    if client is None:
        return 0
    lock = client.lock(EXPOSURE_DRAIN_LOCK_KEY, timeout=EXPOSURE_DRAIN_LOCK_SECONDS, thread_local=False)
    held = bool(lock.acquire(blocking=wait_seconds > 0, blocking_timeout=wait_seconds or None))
    if not held and not wait_seconds:
        return 0
    try:
        return _drain(client, lock if held else None, max_batches=max_batches)
    finally:
        if held:
            try:
                lock.release()
            except LockError:
                pass  # expired (and maybe taken by another drain): nothing of ours to release


def _drain(client: Any, lock: Any, *, max_batches: int | None) -> int:
    written = 0
    complete = max_batches is None
    # The backlog as it stands: batches /route pushes meanwhile come after the ones that mattered, and
    # leaving them to beat keeps the drain bounded while /route goes on queueing.
    for _ in range(int(client.llen(EXPOSURE_LIST_KEY)) if max_batches is None else max_batches):
        raw = client.lindex(EXPOSURE_LIST_KEY, 0)
        if raw is None:
            break
        try:
            # wrap_database_errors: the bulk insert's COPY talks to the driver directly; this turns the
            # driver's errors into Django's, so the two kinds below can be told apart.
            with transaction.atomic(), connection.wrap_database_errors:
                written += write_exposures(rows=json.loads(raw))
        except (OperationalError, InterfaceError):
            raise  # the database is away, not the batch at fault: keep it for the next run
        except (DatabaseError, ValueError, TypeError) as exc:
            logger.error("exposures: a batch of %d bytes cannot be written (%s: %s); moved to Redis list %s",
                         len(raw), type(exc).__name__, exc, EXPOSURE_DEAD_LETTER_KEY)
            client.pipeline(transaction=True).rpush(EXPOSURE_DEAD_LETTER_KEY, raw).lrem(EXPOSURE_LIST_KEY, 1, raw).execute()
        else:
            # Remove exactly the batch we wrote; if another drainer already took it, this is a no-op.
            client.lrem(EXPOSURE_LIST_KEY, 1, raw)
        if lock is not None:
            try:
                lock.reacquire()
            except LockError:
                if complete:  # the caller needs every batch written: go on beside whichever drain took it
                    logger.warning("exposures: the drain lock expired during a batch; draining on without it")
                    lock = None
                    continue
                logger.warning("exposures: the drain lock expired during a batch; leaving the queue to the next drain")
                break
    return written


def dead_letter_batches_naming(user_id: str) -> int:
    """How many exposure batches in the dead-letter list hold `user_id` — read, never changed: a person
    handles that list (docs/runbooks/exposure-dead-letters.md). A batch is searched as the text it was
    pushed as (json.dumps), so one that is not the JSON the flush expects is searched too."""
    client = _redis()
    if client is None:
        return 0  # embedded mode: exposures go straight to the database, and there is no such list
    needle = json.dumps(user_id).encode()
    return sum(needle in raw for raw in client.lrange(EXPOSURE_DEAD_LETTER_KEY, 0, -1))


@atexit.register
def _flush_on_exit() -> None:  # pragma: no cover - process shutdown
    try:
        flush_exposure_buffer()
    except Exception:  # noqa: BLE001 - nothing left to tell at exit
        pass
