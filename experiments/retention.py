"""Data retention of online evaluation: the writes that delete end users' data on purpose.

* :func:`outcomes_prune` deletes old outcomes and exposures that no decision still needs, in bounded
  batches (each its own short transaction, so ingestion and the results never wait long on a huge
  table): outcomes outside every experiment ("live") that occurred before a cut-off — their cost is
  already on the ledger, and nothing reads them after the health windows (15 minutes) — and, only when
  asked, everything of the experiments that ended (rolled back or completed) before another cut-off.
  The data of a running or paused experiment is never touched: its results, guardrails and stage holds
  read all of it. An ended experiment's data goes whole or not at all, because a part of it would be
  results that look complete and are not: the time budget is looked at only between experiments, and a
  prune killed inside one (a worker lost) leaves the rest of it to the next run, which finishes it.
* :func:`user_data_erase` deletes one end user's outcomes and exposures (a privacy request).

Both leave a DataDeletion row (who, when, what was asked, how many rows, which experiments changed),
kept in step with the rows it counts; an erased user appears there only as a keyed hash of their id.
The cost ledger is not touched: it holds no user ids, and money records stay (its trigger refuses
DELETE).

What a deletion took must not come back: sent again, a deleted outcome would find no stored copy to be
a repeat of, and would be stored — and charged — a second time, an erased user's data with it. So each
deletion first records the limit it sets on ingestion (a prune's cut-off, an ended experiment's mark,
an erasure's user and time), in a transaction of its own behind the intake fence
(experiments/intake.py), and deletes only after that; :func:`outcome_age_limits` is what ingestion
reads, and the exposure flush (routing.write_exposures) leaves out the exposures of erased users. A deletion that then fails leaves its limit standing: some of what it covers may be gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import QuerySet, Subquery
from django.utils import timezone

from experiments import routing
from experiments.intake import ErasedUsers, erasures_since, limit_recorded, user_id_hash
from experiments.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    MAX_OUTCOME_CLOCK_SKEW,
    Assignment,
    DataDeletion,
    Experiment,
    OutcomeEvent,
    Variant,
)
from genesis.errors import Conflict, InvalidInput
from genesis.permissions import Actor, require_permission
from models_app.registry.models import Agent

logger = logging.getLogger(__name__)

# Rows per DELETE: ~20 ms each on PostgreSQL (bench/retention/run.py), short enough that nothing waits.
DEFAULT_BATCH_SIZE = 10_000
# The newest cut-off a prune accepts: the health windows read the last 15 minutes, and agents report
# outcomes late; a day leaves both alone.
MIN_RETENTION = timedelta(days=1)
# The beat task stops starting batches after this long, below its soft time limit; a backlog (the first
# run on a year of data) is worked off over the following nights, or at once by `prune_outcomes`.
SCHEDULED_MAX_SECONDS = 25 * 60


@dataclass(frozen=True)
class PruneResult:
    live_before: datetime | None
    ended_before: datetime | None
    dry_run: bool
    outcomes: int = 0  # deleted, or that would be with dry_run
    assignments: int = 0
    experiments: list[str] = field(default_factory=list)  # ended experiments whose data went (or would)
    batches: int = 0
    complete: bool = True  # False: the time budget ran out with rows left; the next run goes on


@dataclass(frozen=True)
class ErasureResult:
    subject_hash: str
    agent: str  # slug, "" for every agent
    dry_run: bool
    outcomes: int
    assignments: int
    experiments: list[str]  # experiments whose data changed (or would)
    active_experiments: list[str]  # those of them still running or paused
    earlier_erasures: list[datetime]  # when the same user id was erased before
    dead_letter_batches: int = 0  # exposure batches in Redis's dead-letter list holding the id: not erased


# --- prune ------------------------------------------------------------------------------------------------


def outcomes_prune(
    *,
    live_before: datetime | None,
    ended_before: datetime | None = None,
    actor: Actor,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    max_seconds: float | None = None,
    now: datetime | None = None,
    scheduled: bool = False,
) -> PruneResult:
    """Delete the live outcomes that occurred before `live_before`, and every outcome and exposure of
    the experiments that ended before `ended_before` (None: not that kind). With `dry_run`, count.
    `scheduled`: the beat task's run (recorded on the trail, and named when ingestion refuses an event
    by its cut-off — see outcome_age_limit)."""
    require_permission(actor=actor, permission="experiments.delete_outcomeevent", action="prune outcomes")
    now = now or timezone.now()
    for name, cutoff in (("live_before", live_before), ("ended_before", ended_before)):
        if cutoff is not None and cutoff > now - MIN_RETENTION:
            raise InvalidInput(f"{name}: {cutoff:%Y-%m-%d %H:%M} is less than a day ago; the health windows and late "
                               "outcomes need the last day — give an earlier cut-off")
    if live_before is None and ended_before is None:
        raise InvalidInput("live_before: give a cut-off for live outcomes, for ended experiments, or both")
    if batch_size < 1:
        raise InvalidInput(f"batch_size: {batch_size} must be at least 1")
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    ended = _ended_experiments_with_data(ended_before) if ended_before is not None else []
    live = _live_outcomes(live_before) if live_before is not None else OutcomeEvent.objects.none()
    if dry_run:
        ended_ids = [experiment.pk for experiment in ended]
        return PruneResult(
            live_before=live_before, ended_before=ended_before, dry_run=True,
            outcomes=live.count() + OutcomeEvent.objects.filter(experiment_id__in=ended_ids).count(),
            assignments=Assignment.objects.filter(experiment_id__in=ended_ids).count(),
            experiments=[experiment.key for experiment in ended],
        )
    trail = _PruneTrail(actor=actor, criteria={
        "live_before": live_before.isoformat() if live_before else None,
        "ended_before": ended_before.isoformat() if ended_before else None,
        "batch_size": batch_size, "scheduled": scheduled, "complete": False,
    })
    complete = True
    if live_before is not None:
        complete = _delete_live(live, cut_off=live_before, trail=trail, batch_size=batch_size, deadline=deadline)
    if complete:
        complete = _delete_ended(ended, trail=trail, batch_size=batch_size, deadline=deadline)
    trail.finish(complete=complete)
    logger.info("pruned %s outcomes and %s exposures in %s batches (%s)", trail.outcomes, trail.assignments, trail.batches,
                "complete" if complete else "time budget spent, rows left for the next run")
    return PruneResult(live_before=live_before, ended_before=ended_before, dry_run=False, outcomes=trail.outcomes,
                       assignments=trail.assignments, experiments=trail.experiments, batches=trail.batches, complete=complete)


@dataclass
class _PruneTrail:
    """A prune's DataDeletion row, written ahead of what it deletes and kept in step with it.

    Before its first batch of live outcomes it records the cut-off (`outcomes_before`), and before an
    ended experiment's first batch it marks the experiment (`Experiment.data_deleted_at`) — each in a
    transaction of its own behind the intake fence, so ingestion refuses what they cover before any of
    it is gone (outcome_age_limits). Each batch's transaction then brings the counts up to date, so a
    prune stopped half-way (killed, or an error) leaves every row it deleted on the trail and its limits
    standing — and no row when it had nothing to delete. Its criteria say `complete: false` until the
    prune has run to its end."""

    actor: Actor
    criteria: dict[str, Any]
    row: DataDeletion | None = None
    outcomes: int = 0
    assignments: int = 0
    experiments: list[str] = field(default_factory=list)
    batches: int = 0

    def begin_live(self, cut_off: datetime) -> None:
        """Record the cut-off live outcomes are about to be deleted by (all of them occurred before it)."""
        with limit_recorded():
            row = self._row()
            row.outcomes_before = cut_off
            row.save()

    def begin_experiment(self, experiment: Experiment) -> None:
        """Mark an ended experiment whose outcomes and exposures are about to be deleted."""
        with limit_recorded():
            # Its outcomes occurred by the time it ended (the arm came from a stage window while it ran):
            # ingestion refuses that agent's events from before its end (outcome_age_limits), no other's.
            Experiment.objects.filter(pk=experiment.pk, data_deleted_at__isnull=True).update(data_deleted_at=timezone.now())
            self.experiments.append(experiment.key)
            row = self._row()
            row.experiments = list(self.experiments)
            row.save()

    def record(self, count: int, *, of: type[models.Model]) -> None:
        """Count a batch of `count` rows of `of` deleted; called inside the batch's transaction."""
        self.batches += 1
        if not count:
            return
        if of is OutcomeEvent:
            self.outcomes += count
        else:
            self.assignments += count
        row = self._row()  # begun before the first delete
        row.outcomes_deleted, row.assignments_deleted = self.outcomes, self.assignments
        row.save(update_fields=["outcomes_deleted", "assignments_deleted"])

    def finish(self, *, complete: bool) -> None:
        if self.row is not None:
            self.row.criteria = {**self.criteria, "complete": complete}
            self.row.save(update_fields=["criteria"])

    def _row(self) -> DataDeletion:
        if self.row is None:
            self.row = DataDeletion(kind=DataDeletion.Kind.PRUNE, actor=self.actor, criteria=self.criteria)
        return self.row


def outcomes_prune_scheduled(*, now: datetime | None = None) -> PruneResult | None:
    """The beat task's prune, with the retentions of the settings (None: both keep forever)."""
    now = now or timezone.now()
    live_days, ended_days = settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS
    if not live_days and not ended_days:
        return None
    return outcomes_prune(
        live_before=now - timedelta(days=live_days) if live_days else None,
        ended_before=now - timedelta(days=ended_days) if ended_days else None,
        actor=None, max_seconds=SCHEDULED_MAX_SECONDS, now=now, scheduled=True,
    )


@dataclass(frozen=True)
class OutcomeAgeLimit:
    """The oldest outcome ingestion stores: one that occurred before `oldest` may already have been
    pruned or erased, so its event_id would not be known as a repeat and its tokens would be charged again."""

    oldest: datetime
    reason: str  # why an older event is refused, naming what set the limit (follows "occurred_at: <its time> ")


@dataclass
class OutcomeAgeLimits:
    """The age limits of one batch's events: each agent's, and those of the erasures that could refuse
    some of them."""

    by_agent: dict[int, OutcomeAgeLimit | None]
    agent_slugs: dict[int, str]
    erasures: ErasedUsers[OutcomeAgeLimit]

    def of(self, *, agent_id: int, user_id: str) -> OutcomeAgeLimit | None:
        """The limit of an event of `user_id` at the agent: the latest that applies, None when none does."""
        limit = self.by_agent[agent_id]
        for erased in self.erasures.of(user_id=user_id, agent=self.agent_slugs[agent_id]):
            if limit is None or erased.oldest > limit.oldest:
                limit = erased
        return limit


def outcome_age_limits(*, received_at: datetime, agents: dict[int, str], oldest_event: datetime) -> OutcomeAgeLimits:
    """The age limits of events received at `received_at` from `agents` (id → slug), the oldest of
    which occurred (as sent) at `oldest_event`: for each event the latest of these that applies.

    * The retentions the scheduled prune applies (the shorter when both are set: an ended experiment's
      pruned outcome would come back as live). The prune deletes what occurred before its run less the
      retention, and every run is at or after any earlier receipt, so nothing it will delete is younger.
    * The newest cut-off any prune has deleted live outcomes by (DataDeletion.outcomes_before): a prune
      run by hand with a later cut-off than the retention's (`prune_outcomes --before`), or the scheduled
      prune of a retention since lengthened or turned off — what it deleted is gone for good, whatever
      the settings say now.
    * For an agent, the end of its newest ended experiment whose data a prune deleted
      (Experiment.data_deleted_at, `--ended-before` and the like): sent again, one of its outcomes would
      come back as a live one. Only that agent's: the others' late events are still taken.
    * For a user, when their data was erased (an erasure's DataDeletion: the keyed hash of the id, the
      agent or every agent): events from before it would bring the erased data back. Their later events
      are new data, and taken. Only the erasures that could refuse one of the batch's events are read —
      those since its oldest event (less the skew, below) — so a batch of fresh events reads none and
      hashes no id; a batch reaching back to the retention's limit reads the erasures since then.

    Each deletion's limit is its cut-off (or its time) plus MAX_OUTCOME_CLOCK_SKEW. Ingestion compares
    the time an event is sent with — the same on every copy of it — while a copy is stored at its receipt
    when the agent's clock was ahead, up to the skew earlier: a copy deleted as stored before the cut-off
    may be sent again with a time up to the skew after it, and only from then on can no copy have been
    deleted. (The time stored cannot be compared instead: it depends on when each copy arrives, and a late
    copy is stored at its own, later time.) What the margin refuses for good are events dated within the
    skew after a cut-off — for a prune a day old or more; after an erasure, that user's next 5 minutes.
    The retention's own limit needs none: it only keeps out what the next prune would delete, and that
    prune's recorded cut-off is what refuses the copies it deleted.

    Two queries per call (ingestion: per batch, not per event): the trail (the newest prune's cut-off and
    the erasures since the oldest event, by their indexes) and the agents' pruned experiments."""
    retention_limit = _retention_limit(received_at=received_at)
    erased_since = max(oldest_event, retention_limit.oldest) if retention_limit else oldest_event  # older: refused anyway
    newest_prune, erasures = _trail_limits(erased_since=erased_since - MAX_OUTCOME_CLOCK_SKEW)
    base = max((limit for limit in (retention_limit, newest_prune) if limit is not None),
               key=lambda limit: limit.oldest, default=None)  # on a tie the retention's, as the scheduled prune's own
    by_agent: dict[int, OutcomeAgeLimit | None] = dict.fromkeys(agents, base)
    ended = (Experiment.objects.filter(agent_id__in=list(agents), data_deleted_at__isnull=False, ended_at__isnull=False)
             .values_list("agent_id", "key", "ended_at"))
    for agent_id, key, ended_at in ended:
        if ended_at is None:  # filtered on: for the type checker
            continue
        limit = _after(ended_at, what=f"when this agent's experiment '{key}' ended, whose outcomes a prune has deleted",
                       why="may have been one of them, and one sent again could not be told from it, so it is not "
                           "stored or charged again")
        current = by_agent[agent_id]
        if current is None or limit.oldest > current.oldest:
            by_agent[agent_id] = limit
    return OutcomeAgeLimits(by_agent=by_agent, agent_slugs=agents, erasures=erasures)


def _retention_limit(*, received_at: datetime) -> OutcomeAgeLimit | None:
    retentions = [
        (days, name)
        for days, name in (
            (settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, "GENESIS_RETAIN_LIVE_OUTCOMES_DAYS"),
            (settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS, "GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS"),
        )
        if days
    ]
    if not retentions:
        return None
    days, name = min(retentions)
    return OutcomeAgeLimit(oldest=received_at - timedelta(days=days), reason=(
        f"is older than the {days}-day outcome retention ({name}; received at {received_at.isoformat()}): outcomes "
        "that old are pruned, so it could not be told from one already counted and charged; not stored"
    ))


_TRAIL_LIMIT_FIELDS = ("kind", "outcomes_before", "at", "actor__username", "criteria", "agent", "subject_hash")


def _trail_limits(*, erased_since: datetime) -> tuple[OutcomeAgeLimit | None, ErasedUsers[OutcomeAgeLimit]]:
    """The limit of the newest cut-off a prune deleted live outcomes by (None: none did), and that of each
    erasure since `erased_since`: one query, each half through
    an index (outcomes_before; at)."""
    newest_cut_off = DataDeletion.objects.filter(outcomes_before__isnull=False).order_by("-outcomes_before").values("outcomes_before")[:1]
    prunes = DataDeletion.objects.filter(outcomes_before=Subquery(newest_cut_off)).order_by().values_list(*_TRAIL_LIMIT_FIELDS)
    erasures = erasures_since(erased_since).values_list(*_TRAIL_LIMIT_FIELDS)
    prune: tuple[datetime, OutcomeAgeLimit] | None = None  # (when that prune ran, its limit)
    erased: dict[str, list[tuple[str, OutcomeAgeLimit]]] = {}
    for kind, cut_off, at, username, criteria, scope, subject_hash in prunes.union(erasures, all=True):
        if kind == DataDeletion.Kind.ERASURE:
            erased.setdefault(subject_hash, []).append((scope, _after(
                at, what=f"when this user_id's data at {scope or 'every agent'} was erased (erase_user_data)",
                why="may be one of those erased, and one sent again could not be told from it, so it is not stored "
                    "(nor charged) again; events of this user from after that are taken",
            )))
        elif cut_off is not None and (prune is None or at > prune[0]):  # of prunes with the same cut-off, the last named
            prune = (at, _prune_limit(cut_off, at=at, username=username, criteria=criteria))
    return (prune[1] if prune else None), ErasedUsers(erased)


def _prune_limit(cut_off: datetime, *, at: datetime, username: str | None, criteria: dict[str, Any]) -> OutcomeAgeLimit:
    """The limit a prune's recorded cut-off sets, its reason naming that prune."""
    if "scheduled" not in criteria:  # recorded before prunes said which (migration 0009 filled the cut-off in)
        who = "a prune" + (f" by {username}" if username else "")
    elif criteria["scheduled"]:
        who = "the scheduled prune"
    else:
        who = "a prune run by hand (prune_outcomes" + (f" as {username})" if username else ")")
    return _after(cut_off, what=f"the cut-off of {who} on {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, which deleted live "
                                "outcomes stored before it",
                  why="may already have been deleted, and one sent again could not be told from it, so it is not "
                      "stored or charged again")


def _after(moment: datetime, *, what: str, why: str) -> OutcomeAgeLimit:
    """The limit a deletion at `moment` sets: that moment plus the clock skew allowed (outcome_age_limits)."""
    oldest = moment + MAX_OUTCOME_CLOCK_SKEW
    return OutcomeAgeLimit(oldest=oldest, reason=(
        f"is before {oldest.astimezone(UTC).isoformat()}, {MAX_OUTCOME_CLOCK_SKEW.total_seconds() / 60:g} minutes (the clock "
        f"skew allowed) after {moment.astimezone(UTC).isoformat()}, {what}: an event sent with a time that early {why}"
    ))


def _live_outcomes(before: datetime) -> QuerySet[OutcomeEvent]:
    # Outcomes in no experiment. `variant = 'live'` beside the null experiment lets the
    # (experiment, variant, occurred_at) index find them as one range; ingestion writes no other pair.
    return OutcomeEvent.objects.filter(experiment_id__isnull=True, variant=Variant.LIVE, occurred_at__lt=before)


def _ended_experiments_with_data(before: datetime) -> list[Experiment]:
    """Rolled-back or completed experiments that ended before `before` and still hold data. Their
    status is final (none goes back to running), so nothing can start reading their rows meanwhile."""
    candidates = Experiment.objects.filter(status__in=FINAL_STATUSES, ended_at__lt=before).order_by("ended_at", "pk")
    return [
        experiment for experiment in candidates
        if OutcomeEvent.objects.filter(experiment_id=experiment.pk).exists()
        or Assignment.objects.filter(experiment_id=experiment.pk).exists()
    ]


def _delete_live(rows: QuerySet[OutcomeEvent], *, cut_off: datetime, trail: _PruneTrail, batch_size: int,
                 deadline: float | None) -> bool:
    """Delete the live outcomes `rows` (all that occurred before `cut_off`), the cut-off recorded first;
    whether all of them went."""
    if deadline is not None and time.monotonic() >= deadline:
        return False
    if not rows.exists():  # nothing to delete: no cut-off to record, no trail
        return True
    trail.begin_live(cut_off)
    return _delete_in_batches(rows, trail=trail, batch_size=batch_size, deadline=deadline)


def _delete_ended(ended: list[Experiment], *, trail: _PruneTrail, batch_size: int, deadline: float | None) -> bool:
    """Delete the outcomes, then the exposures, of each ended experiment in turn, each marked first;
    whether all of them went. The time budget is looked at only before an experiment is started: once
    started it is deleted to the end, whole (a part would be results that look complete and are not)."""
    for experiment in ended:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        trail.begin_experiment(experiment)
        for rows in (OutcomeEvent.objects.filter(experiment_id=experiment.pk), Assignment.objects.filter(experiment_id=experiment.pk)):
            _delete_in_batches(rows, trail=trail, batch_size=batch_size, deadline=None)
    return True


def _delete_in_batches(rows: QuerySet, *, trail: _PruneTrail, batch_size: int, deadline: float | None) -> bool:
    """Delete `rows` `batch_size` at a time, each DELETE its own transaction with its line on the trail,
    until none is left (True) or `deadline` (time.monotonic) passes (False)."""
    while deadline is None or time.monotonic() < deadline:
        with transaction.atomic():
            count = _delete_batch(rows, batch_size=batch_size)
            trail.record(count, of=rows.model)
        if count < batch_size:
            return True
    return False


def _delete_batch(rows: QuerySet, *, batch_size: int) -> int:
    ids = rows.values("pk")[:batch_size]
    if connection.vendor != "postgresql":
        # The tables have no cascades or delete signals: Django deletes without reading the rows first.
        return rows.model.objects.filter(pk__in=ids).delete()[0]
    # `id = ANY(ARRAY(…))`, not `id IN (…)`: the ids become one array first, then the primary key index
    # finds each — PostgreSQL planned the IN form as a hash join over a scan of the whole table, every batch.
    select, params = ids.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(rows.model._meta.db_table)} WHERE id = ANY(ARRAY({select}))", params)
        return cursor.rowcount


# --- erasure ----------------------------------------------------------------------------------------------


def user_data_erase(
    *,
    user_id: str,
    agent: Agent | None,
    actor: Actor,
    reason: str = "",
    allow_active_experiments: bool = False,
    dry_run: bool = False,
) -> ErasureResult:
    """Delete the outcomes and exposures of end user `user_id` at `agent` (None: every agent).

    Refused (Conflict) while a running or paused experiment holds some of them, unless
    `allow_active_experiments`: deleting them changes that experiment's results, guardrails and holds
    while it is being decided on, and the user goes on being served in it and reporting new outcomes.
    Ending the experiment first (or waiting for it to end) keeps its numbers whole; a request that
    cannot wait goes ahead with the flag and the changed experiments are named on the trail.

    Checked before anything is written (the usual refusal), and again, for the user's exposures in active
    experiments only (cheap), behind the intake fence in the transaction that writes the trail row: a row
    that reached one after the first check (the user was routed into an experiment started meanwhile)
    refuses the whole erasure there, before anything that refuses the user's events is committed — and
    none can reach one after it, since every writer of those rows holds the fence and reads the erasures.
    Exposure batches in Redis's dead-letter list are not searched by the delete: the result counts
    those that hold the id, for a person to remove (docs/runbooks/exposure-dead-letters.md).

    It sticks: its DataDeletion row is written first, behind the intake fence, and ingestion then refuses
    the user's events (in its scope) from before it, plus the clock skew (outcome_age_limits) — they would
    bring the erased data back, and be charged again. What was stored before it is deleted; later outcomes
    are new data. Failing after that, it leaves the row (`complete: false`) and its limit. The exposures a
    web process still holds in memory, or that a dead-letter batch replayed later brings, are left out
    when they are written (routing.write_exposures)."""
    require_permission(actor=actor, permission="experiments.erase_user_data", action="erase an end user's data")
    if not user_id:
        raise InvalidInput("user_id: give the end user's id, exactly as the agent sends it")
    subject_hash, scope = user_id_hash(user_id), agent.slug if agent is not None else ""
    earlier = list(DataDeletion.objects.filter(kind=DataDeletion.Kind.ERASURE, subject_hash=subject_hash)
                   .order_by("at").values_list("at", flat=True))
    erasure = _Erasure.of(user_id=user_id, agent=agent)
    if dry_run:  # counts what is stored, and writes nothing: the buffered exposures are not drained
        touched = erasure.experiments()
        active = _active(touched)
        return ErasureResult(subject_hash=subject_hash, agent=scope, dry_run=True, outcomes=erasure.outcomes.count(),
                             assignments=erasure.assignments.count(), experiments=list(touched), active_experiments=active,
                             earlier_erasures=earlier, dead_letter_batches=routing.dead_letter_batches_naming(user_id))
    # Exposures buffered by /route are written first, so none of this user's lands after the erasure —
    # waiting for a drain already running (beat's) to finish, not skipping the drain because of it —
    # and every batch queued by now, not a beat drain's share of them.
    routing.drain_exposure_queue(max_batches=None, wait_seconds=routing.EXPOSURE_DRAIN_LOCK_SECONDS)
    if not allow_active_experiments and (active := _active(touched := erasure.experiments())):
        raise _refusal(touched, active)  # before anything is written: the usual refusal refuses no event
    with limit_recorded():  # from its commit on, ingestion refuses the user's events from before it
        if not allow_active_experiments and (arrived := erasure.exposed_in_active_experiments()):
            raise _refusal(arrived, list(arrived))  # reached one since the check: still nothing written
        trail = DataDeletion.objects.create(kind=DataDeletion.Kind.ERASURE, actor=actor, agent=scope, subject_hash=subject_hash,
                                            reason=reason, criteria={"allow_active_experiments": allow_active_experiments, "complete": False})
    active = _erase_before(_Erasure.of(user_id=user_id, agent=agent, before=trail.at), trail=trail)
    return ErasureResult(subject_hash=subject_hash, agent=scope, dry_run=False, outcomes=trail.outcomes_deleted,
                         assignments=trail.assignments_deleted, experiments=trail.experiments, active_experiments=active,
                         earlier_erasures=earlier, dead_letter_batches=routing.dead_letter_batches_naming(user_id))


def _erase_before(erasure: _Erasure, *, trail: DataDeletion) -> list[str]:
    """Delete the erasure's rows (those from before its trail row) and complete that row, in one
    transaction; the active experiments whose data went."""
    with transaction.atomic():
        touched = erasure.experiments()
        active = _active(touched)
        trail.outcomes_deleted, _ = erasure.outcomes.delete()
        trail.assignments_deleted, _ = erasure.assignments.delete()
        trail.experiments = list(touched)
        trail.criteria = {**trail.criteria, "active_experiments": active, "complete": True}
        trail.save(update_fields=["outcomes_deleted", "assignments_deleted", "experiments", "criteria"])
    return active


@dataclass(frozen=True)
class _Erasure:
    """One end user's stored rows in the erasure's scope, and the experiments they are in."""

    outcomes: QuerySet[OutcomeEvent]
    assignments: QuerySet[Assignment]
    scope_experiments: QuerySet[Experiment]

    @classmethod
    def of(cls, *, user_id: str, agent: Agent | None, before: datetime | None = None) -> _Erasure:
        """`before`: only the rows of what happened before then (an outcome stored, an exposure first seen) —
        compared with times the web machines wrote, so their clocks and this one's must agree (NTP), as
        everywhere received_at is compared."""
        experiments = Experiment.objects.filter(agent=agent) if agent is not None else Experiment.objects.all()
        outcomes = OutcomeEvent.objects.filter(user_id=user_id, **({"agent_id": agent.pk} if agent is not None else {}))
        assignments = Assignment.objects.filter(user_id=user_id, experiment_id__in=experiments.values("pk"))
        if before is not None:
            outcomes, assignments = outcomes.filter(occurred_at__lt=before), assignments.filter(first_seen__lt=before)
        return cls(outcomes=outcomes, assignments=assignments, scope_experiments=experiments)

    def experiments(self) -> dict[str, str]:
        """The experiments holding the user's rows, key → status, by key."""
        touched_ids = set(self.assignments.values_list("experiment_id", flat=True))
        active_ids = self.scope_experiments.filter(status__in=ACTIVE_STATUSES).values("pk")
        touched_ids |= set(self.outcomes.filter(experiment_id__in=active_ids).values_list("experiment_id", flat=True).distinct())
        return dict(Experiment.objects.filter(pk__in=touched_ids).order_by("key").values_list("key", "status"))

    def exposed_in_active_experiments(self) -> dict[str, str]:
        """The running or paused experiments the user has an exposure in, key → status, by key. Cheap (the
        unique index of (experiment, user, arm), once per active experiment), so it can run behind the
        fence; and there it finds every row that reached one since experiments() looked: ingestion records
        the exposure of each outcome it stores in an experiment, and the exposure flush writes the rest."""
        active = self.scope_experiments.filter(status__in=ACTIVE_STATUSES)
        exposed = self.assignments.filter(experiment_id__in=active.values("pk")).values("experiment_id")
        return dict(active.filter(pk__in=exposed).order_by("key").values_list("key", "status"))


def _active(statuses: dict[str, str]) -> list[str]:
    return [key for key, status in statuses.items() if status in ACTIVE_STATUSES]


def _refusal(statuses: dict[str, str], active: list[str]) -> Conflict:
    return Conflict(
        f"user_id: this user has data in the {'experiment' if len(active) == 1 else 'experiments'} "
        f"{', '.join(active)}, still {' / '.join(sorted({statuses[key] for key in active}))}; erasing it changes "
        "their results and guardrails while they are decided on — erase after they end, or pass "
        "--allow-active-experiments (the change is recorded)"
    )
