"""Data retention (experiments/retention.py): prunes delete only what no decision needs — never a
running or paused experiment's data — in batches, and leave a trace; an erasure deletes one end user's
data, names them only by a keyed hash, and will not silently change a running experiment."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from costs.models import CostEntry
from costs.services import price_upsert
from experiments import retention, routing
from experiments.models import MAX_OUTCOME_CLOCK_SKEW, Assignment, DataDeletion, Experiment, OutcomeEvent
from experiments.outcomes import IngestResult, outcomes_ingest
from experiments.services import experiment_pause, experiment_rollback, experiment_start
from genesis.errors import Conflict, InvalidInput, PermissionDenied
from genesis.schedules import DEFAULT_SCHEDULES
from models_app.registry.models import Agent
from tests.experiments.factories import draft_experiment, person
from tests.factories import AgentFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()
OLD = NOW - timedelta(days=200)
_ids = itertools.count()


def outcomes(*, agent_id: int, n: int, at: datetime, experiment: Experiment | None = None, variant: str = "",
             user: str = "") -> None:
    """`n` stored outcomes (and, in an experiment, their exposures) that occurred at `at`."""
    variant = variant or ("control" if experiment else "live")
    OutcomeEvent.objects.bulk_create(
        OutcomeEvent(event_id=f"e{next(_ids)}", agent_id=agent_id, experiment=experiment, variant=variant,
                     user_id=user or f"u{i}", model="m", success=True, latency_ms=100.0, occurred_at=at, received_at=at)
        for i in range(n)
    )
    if experiment is not None:
        Assignment.objects.bulk_create(
            [Assignment(experiment=experiment, user_id=user or f"u{i}", variant=variant, first_seen=at) for i in range(n)],
            ignore_conflicts=True,
        )


@pytest.fixture
def world() -> dict[str, Any]:
    """Four agents: one experiment running, one paused, one rolled back 200 days ago, one completed
    yesterday; each with 200-day-old data, plus old and recent live outcomes."""
    running = experiment_start(experiment=draft_experiment("qa_agent"))
    paused = experiment_pause(experiment=experiment_start(experiment=draft_experiment("legal_agent")), reason="test")
    rolled_back = experiment_rollback(experiment=experiment_start(experiment=draft_experiment("content_agent")), reason="test")
    completed = experiment_rollback(experiment=experiment_start(experiment=draft_experiment("support_agent")), reason="test")
    Experiment.objects.filter(pk=rolled_back.pk).update(ended_at=OLD)
    Experiment.objects.filter(pk=completed.pk).update(status="completed", ended_at=NOW - timedelta(days=1, hours=1))
    for experiment in (running, paused, rolled_back, completed):
        outcomes(agent_id=experiment.agent_id, n=30, at=OLD, experiment=experiment)
    outcomes(agent_id=running.agent_id, n=25, at=OLD)  # live, old
    outcomes(agent_id=running.agent_id, n=5, at=NOW - timedelta(hours=1))  # live, recent
    return {"running": running, "paused": paused, "rolled_back": rolled_back, "completed": completed}


def counts(experiment: Experiment | None) -> tuple[int, int]:
    if experiment is None:
        return OutcomeEvent.objects.filter(experiment__isnull=True).count(), 0
    return (OutcomeEvent.objects.filter(experiment=experiment).count(),
            Assignment.objects.filter(experiment=experiment).count())


def test_prune_never_touches_running_or_paused_experiments_even_with_the_latest_cut_offs(world):
    cutoff = NOW - retention.MIN_RETENTION  # the newest the service accepts: takes everything else it may
    result = retention.outcomes_prune(live_before=cutoff, ended_before=cutoff, actor=None, batch_size=7, now=NOW)
    assert counts(world["running"]) == (30, 30)
    assert counts(world["paused"]) == (30, 30)
    # The ended experiments go whole; the recent live outcomes stay.
    assert counts(world["rolled_back"]) == (0, 0) and counts(world["completed"]) == (0, 0)
    assert counts(None) == (5, 0)
    assert (result.outcomes, result.assignments) == (25 + 60, 60)
    assert result.experiments == ["content_agent-exp", "support_agent-exp"] and result.complete
    trace = DataDeletion.objects.get()
    assert (trace.kind, trace.outcomes_deleted, trace.assignments_deleted) == ("prune", 85, 60)
    assert trace.experiments == ["content_agent-exp", "support_agent-exp"]


def test_ended_experiments_are_kept_unless_asked_and_then_only_those_ended_before_the_cut_off(world):
    retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, now=NOW)
    assert counts(world["rolled_back"]) == (30, 30) and counts(world["completed"]) == (30, 30)
    assert counts(None) == (5, 0)
    retention.outcomes_prune(live_before=None, ended_before=NOW - timedelta(days=30), actor=None, now=NOW)
    assert counts(world["rolled_back"]) == (0, 0)
    assert counts(world["completed"]) == (30, 30)  # ended yesterday: within the retention


def test_batches_delete_bounded_rows_one_statement_each(world):
    outcomes(agent_id=world["running"].agent_id, n=100, at=OLD)  # 125 old live outcomes now
    with CaptureQueriesContext(connection) as queries:
        result = retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, batch_size=10, now=NOW)
    assert result.outcomes == 125 and result.batches == 13  # 12 full batches and one of 5
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 13 and all("LIMIT 10" in sql for sql in deletes)
    assert not any(q["sql"].startswith('SELECT "experiments_outcomeevent"."id", "experiments_outcomeevent"."event_id"')
                   for q in queries.captured_queries)  # rows are never read into Python first


def test_a_spent_time_budget_stops_between_batches_and_the_next_run_goes_on(world):
    result = retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, batch_size=10, max_seconds=0, now=NOW)
    assert (result.outcomes, result.complete) == (0, False)
    assert retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, batch_size=10, now=NOW).outcomes == 25


def test_a_time_budget_never_stops_inside_an_ended_experiment(world, monkeypatch):
    """Second review: the budget ran out between two batches of one ended experiment and left it half
    deleted — results that look complete and are not. It is looked at only before an experiment starts."""
    rolled_back = world["rolled_back"]
    outcomes(agent_id=rolled_back.agent_id, n=20, at=OLD, experiment=rolled_back, variant="treatment")  # 50 now
    ticks = itertools.count()
    monkeypatch.setattr(retention.time, "monotonic", lambda: float(next(ticks)))  # each look at the clock: 1 s
    result = retention.outcomes_prune(live_before=None, ended_before=NOW - timedelta(days=30), actor=None,
                                      batch_size=10, max_seconds=3, now=NOW)
    assert counts(rolled_back) == (0, 0)  # begun within the budget, so finished past it
    assert (result.outcomes, result.assignments, result.experiments, result.complete) == (50, 50, ["content_agent-exp"], True)

    experiment_rollback(experiment=world["running"], reason="test")  # a second ended experiment, ended now
    Experiment.objects.filter(pk=world["running"].pk).update(ended_at=OLD)
    result = retention.outcomes_prune(live_before=None, ended_before=NOW - timedelta(days=30), actor=None,
                                      batch_size=10, max_seconds=0, now=NOW)
    assert counts(world["running"]) == (30, 30) and (result.outcomes, result.complete) == (0, False)  # not begun


@pytest.mark.django_db(transaction=True)
def test_a_prune_stopped_half_way_leaves_what_it_deleted_on_the_trail(monkeypatch):
    """Second review: the DataDeletion row was written after the last batch, and each batch commits
    alone — a prune killed or failing half-way had deleted rows that no trail named."""

    agent = Agent.objects.create(slug="trail_agent", name="t")
    outcomes(agent_id=agent.pk, n=30, at=OLD)
    real, calls = retention._delete_batch, itertools.count()

    def failing_second(rows, *, batch_size):
        if next(calls) == 1:
            raise RuntimeError("worker lost")
        return real(rows, batch_size=batch_size)

    monkeypatch.setattr(retention, "_delete_batch", failing_second)
    with pytest.raises(RuntimeError):
        retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, batch_size=10, now=NOW)
    assert OutcomeEvent.objects.filter(agent=agent).count() == 20
    trace = DataDeletion.objects.get()
    assert (trace.outcomes_deleted, trace.criteria["complete"]) == (10, False)

    monkeypatch.setattr(retention, "_delete_batch", real)
    retention.outcomes_prune(live_before=NOW - timedelta(days=90), actor=None, batch_size=10, now=NOW)
    assert [(t.outcomes_deleted, t.criteria["complete"]) for t in DataDeletion.objects.order_by("pk")] == [(10, False), (20, True)]


def test_dry_run_counts_and_deletes_nothing(world):
    result = retention.outcomes_prune(live_before=NOW - timedelta(days=90), ended_before=NOW - timedelta(days=30),
                                      actor=None, dry_run=True, now=NOW)
    assert (result.outcomes, result.assignments, result.experiments) == (55, 30, ["content_agent-exp"])
    assert OutcomeEvent.objects.count() == 150 and not DataDeletion.objects.exists()


def test_cut_offs_within_the_last_day_and_people_without_permission_are_refused(world):
    with pytest.raises(InvalidInput, match="live_before: .* less than a day ago"):
        retention.outcomes_prune(live_before=NOW - timedelta(hours=23), actor=None, now=NOW)
    with pytest.raises(PermissionDenied, match="experiments.delete_outcomeevent"):
        retention.outcomes_prune(live_before=OLD, actor=person("nobody"), now=NOW)
    assert OutcomeEvent.objects.count() == 150


def test_scheduled_prune_follows_the_settings(world, settings):
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 0, 0
    assert retention.outcomes_prune_scheduled(now=NOW) is None
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS = 90
    assert retention.outcomes_prune_scheduled(now=NOW).outcomes == 25
    assert counts(world["rolled_back"]) == (30, 30)
    settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 180
    assert retention.outcomes_prune_scheduled(now=NOW).experiments == ["content_agent-exp"]
    tasks = {entry.task: entry.crontab for entry in DEFAULT_SCHEDULES}
    assert tasks["experiments.prune_outcomes"] == "30 3 * * *"
    assert tasks["genesis.clear_expired_sessions"] == "45 3 * * *"


def test_an_event_resent_after_the_prune_deleted_it_is_rejected_not_charged_again(settings):
    """Money review: e1 and e2, 1M tokens at $1/M each, were stored and charged ($2); the scheduled
    prune deleted them (older than GENESIS_RETAIN_LIVE_OUTCOMES_DAYS); e1 sent again was accepted and
    charged again ($3) — "a repeated event_id is counted once" held only while the first was stored.
    Ingestion now refuses events older than the retention, so nothing the prune deleted comes back.
    (Sent once the clock skew allowed has passed since the prune: until then its cut-off plus the skew is
    the limit — tests/experiments/test_retention_resends.py.)"""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    agent = AgentFactory(slug="qa_agent")
    ModelVersionFactory(agent=agent, model_id="open-mistral-7b", kind="baseline", base_model="open-mistral-7b")
    price_upsert(model="open-mistral-7b", effective_from=date(2020, 1, 1), input_usd_per_million="1",
                 output_usd_per_million="1", source="test price list", source_date=date(2020, 1, 1))

    def send(event_id: str, *, occurred_at: datetime, received_at: datetime) -> IngestResult:
        return outcomes_ingest(principal=None, received_at=received_at, events=[{
            "event_id": event_id, "agent": "qa_agent", "user_id": "u", "model": "open-mistral-7b", "success": True,
            "latency_ms": 10, "input_tokens": 1_000_000, "output_tokens": 0, "occurred_at": occurred_at.isoformat(),
        }])

    def ledger() -> Decimal:
        return CostEntry.objects.filter(operation="inference").aggregate(total=Sum("amount_usd"))["total"]

    occurred = NOW - timedelta(days=100)
    # Sent 20 days ago, when they were 80 days old: stored and charged.
    for event_id in ("e1", "e2"):
        assert send(event_id, occurred_at=occurred, received_at=NOW - timedelta(days=20)).accepted == 1
    assert ledger() == Decimal("2")
    assert retention.outcomes_prune_scheduled(now=NOW).outcomes == 2

    later = NOW + MAX_OUTCOME_CLOCK_SKEW
    again = send("e1", occurred_at=occurred, received_at=later)
    assert (again.accepted, again.duplicates) == (0, 0)
    assert again.rejected == [{"index": 0, "detail": (
        f"occurred_at: {occurred.isoformat()} is older than the 90-day outcome retention "
        f"(GENESIS_RETAIN_LIVE_OUTCOMES_DAYS; received at {later.isoformat()}): outcomes that old are pruned, so it could "
        "not be told from one already counted and charged; not stored")}]
    assert ledger() == Decimal("2") and not OutcomeEvent.objects.exists()
    # At the limit exactly an event is still taken; the shorter of two retentions is the limit.
    assert send("e3", occurred_at=later - timedelta(days=90), received_at=later).accepted == 1
    settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 30
    late = send("e4", occurred_at=NOW - timedelta(days=31), received_at=NOW)
    assert late.accepted == 0 and "older than the 30-day outcome retention (GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS;" in late.rejected[0]["detail"]
    # Keeping outcomes forever sets no retention limit; but what the prune deleted (before NOW - 90
    # days) is gone whatever the settings say now, so its cut-off still is one.
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 0, 0
    assert "the cut-off of the scheduled prune on" in send("e5", occurred_at=NOW - timedelta(days=3650), received_at=NOW).rejected[0]["detail"]
    assert send("e6", occurred_at=NOW - timedelta(days=89), received_at=NOW).accepted == 1
    DataDeletion.objects.all().delete()  # no prune ever deleted outcomes: no limit at all
    assert send("e7", occurred_at=NOW - timedelta(days=3650), received_at=NOW).accepted == 1


def _priced_qa_agent() -> None:
    """qa_agent serving open-mistral-7b at $1 per million tokens (its experiment's candidate too)."""
    price_upsert(model="open-mistral-7b", effective_from=date(2020, 1, 1), input_usd_per_million="1",
                 output_usd_per_million="1", source="test price list", source_date=date(2020, 1, 1))


def _send(event_id: str, *, occurred_at: datetime, received_at: datetime = NOW, user: str = "u") -> IngestResult:
    return outcomes_ingest(principal=None, received_at=received_at, events=[{
        "event_id": event_id, "agent": "qa_agent", "user_id": user, "model": "open-mistral-7b", "success": True,
        "latency_ms": 10, "input_tokens": 1_000_000, "output_tokens": 0, "occurred_at": occurred_at.isoformat(),
    }])


def _ledger() -> Decimal:
    return CostEntry.objects.filter(operation="inference").aggregate(total=Sum("amount_usd"))["total"]


def test_an_event_a_prune_by_hand_deleted_within_the_retention_is_rejected_when_sent_again(settings):
    """Known gap closed: `prune_outcomes --before` with a cut-off later than the retention's deleted e1
    (40 days old, within the 90-day retention); e1 sent again was taken as new and charged a second
    time. Each prune now records its cut-off, and ingestion refuses events older than the newest one."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id="open-mistral-7b", kind="baseline")
    _priced_qa_agent()
    occurred = NOW - timedelta(days=40)
    assert _send("e1", occurred_at=occurred, received_at=occurred).accepted == 1
    assert _ledger() == Decimal("1")
    cut_off_day = (NOW - timedelta(days=30)).date()
    call_command("prune_outcomes", "--before", cut_off_day.isoformat(), stdout=io.StringIO())
    assert not OutcomeEvent.objects.exists()
    trace = DataDeletion.objects.get()
    cut_off = timezone.make_aware(datetime.combine(cut_off_day, datetime.min.time())).astimezone(UTC)
    assert trace.outcomes_before == cut_off and trace.criteria["scheduled"] is False

    again = _send("e1", occurred_at=occurred)
    assert (again.accepted, again.duplicates) == (0, 0)
    assert again.rejected == [{"index": 0, "detail": (
        f"occurred_at: {occurred.isoformat()} is before {(cut_off + MAX_OUTCOME_CLOCK_SKEW).isoformat()}, 5 minutes (the "
        f"clock skew allowed) after {cut_off.isoformat()}, the cut-off of a prune run by hand (prune_outcomes) on "
        f"{trace.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, which deleted live outcomes stored before it: an event sent with "
        "a time that early may already have been deleted, and one sent again could not be told from it, so it is not "
        "stored or charged again")}]
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()
    # From the cut-off plus the clock skew allowed an event is taken and charged, as before (the skew:
    # tests/experiments/test_retention_resends.py).
    assert _send("e2", occurred_at=cut_off + MAX_OUTCOME_CLOCK_SKEW).accepted == 1
    assert _ledger() == Decimal("2")


def test_an_ended_experiments_outcome_a_prune_by_hand_deleted_does_not_come_back_as_live(settings):
    """`prune_outcomes --ended-older-than-days 30` deleted an outcome of an experiment that ended 40
    days ago; sent again, the experiment no longer running, it was stored as live and charged twice."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    _priced_qa_agent()
    experiment = experiment_start(experiment=draft_experiment("qa_agent"))
    experiment.stages.update(started_at=NOW - timedelta(days=60))
    occurred = NOW - timedelta(days=50)
    assert _send("e1", occurred_at=occurred, received_at=occurred).accepted == 1
    assert OutcomeEvent.objects.get().experiment_id == experiment.pk and _ledger() == Decimal("1")
    experiment_rollback(experiment=experiment, reason="test")
    Experiment.objects.filter(pk=experiment.pk).update(ended_at=NOW - timedelta(days=40))
    call_command("prune_outcomes", "--ended-older-than-days", "30", stdout=io.StringIO())
    assert not OutcomeEvent.objects.exists()

    again = _send("e1", occurred_at=occurred)
    assert again.accepted == 0 and f"when this agent's experiment '{experiment.key}' ended" in again.rejected[0]["detail"]
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()
    # The cut-off is when the experiment ended, not the option's 30 days: a live event since is taken.
    assert _send("e2", occurred_at=NOW - timedelta(days=35)).accepted == 1
    # And it is this agent's alone: another agent's late event from before that end is still taken
    # (a second reviewer: one prune of one agent's ended experiment refused every agent's).
    AgentFactory(slug="other_agent")
    late = outcomes_ingest(principal=None, received_at=NOW, events=[{
        "event_id": "o1", "agent": "other_agent", "user_id": "u", "model": "open-mistral-7b", "success": True,
        "latency_ms": 10, "occurred_at": occurred.isoformat(),
    }])
    assert (late.accepted, late.rejected) == (1, [])


def test_the_scheduled_prunes_own_cut_off_leaves_the_retention_limit_as_it_was(settings):
    """The scheduled prune records its cut-off too (run at NOW - 1 day: NOW - 91 days), but that is
    never later than the retention's limit of a later receipt: events are refused by the retention,
    as before — the limit exactly still taken — at one query of the trail per batch, not per event."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id="open-mistral-7b", kind="baseline")
    _priced_qa_agent()
    outcomes(agent_id=Agent.objects.get(slug="qa_agent").pk, n=3, at=OLD)
    assert retention.outcomes_prune_scheduled(now=NOW - timedelta(days=1)).outcomes == 3
    assert DataDeletion.objects.get().outcomes_before == NOW - timedelta(days=91)

    assert _send("e1", occurred_at=NOW - timedelta(days=90)).accepted == 1
    late = _send("e2", occurred_at=NOW - timedelta(days=90, seconds=1))
    assert late.accepted == 0 and "is older than the 90-day outcome retention (GENESIS_RETAIN_LIVE_OUTCOMES_DAYS;" in late.rejected[0]["detail"]
    events = [{"event_id": f"b{i}", "agent": "qa_agent", "user_id": "u", "model": "open-mistral-7b", "success": True,
               "latency_ms": 10, "occurred_at": (NOW - timedelta(days=i)).isoformat()} for i in range(0, 100)]
    with CaptureQueriesContext(connection) as queries:
        batch = outcomes_ingest(principal=None, received_at=NOW, events=events)
    assert (batch.accepted, len(batch.rejected)) == (91, 9)
    assert sum('"experiments_datadeletion"' in q["sql"] for q in queries.captured_queries) == 1


def run(command: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


def test_prune_outcomes_command(world):
    assert run("prune_outcomes")[0] == 2
    assert run("prune_outcomes", "--before", "yesterday")[0] == 2
    code, _, err = run("prune_outcomes", "--before", f"{NOW + timedelta(days=1):%Y-%m-%d}")
    assert code == 2 and "--before/--older-than-days:" in err and "less than a day ago" in err
    assert run("prune_outcomes", "--older-than-days", "90", "--as", "nobody")[0] == 2  # no such user
    person("nobody")
    assert run("prune_outcomes", "--older-than-days", "90", "--as", "nobody")[0] == 1
    code, out, _ = run("prune_outcomes", "--older-than-days", "90", "--dry-run")
    assert (code, out.splitlines()[0]) == (0, "would delete 25 outcomes and 0 exposures")
    code, out, _ = run("prune_outcomes", "--older-than-days", "90", "--ended-older-than-days", "30", "--batch-size", "4", "--json")
    assert code == 0
    assert {k: v for k, v in json.loads(out).items() if k in ("outcomes", "assignments", "experiments", "batches")} == {
        "outcomes": 55, "assignments": 30, "experiments": ["content_agent-exp"], "batches": 7 + 8 + 8,
    }


def test_erasure_deletes_one_users_data_and_keeps_only_a_keyed_hash(world):
    rolled_back = world["rolled_back"]
    outcomes(agent_id=rolled_back.agent_id, n=3, at=OLD, experiment=rolled_back, user="alice@example.com")
    outcomes(agent_id=rolled_back.agent_id, n=2, at=NOW, user="alice@example.com")  # live
    outcomes(agent_id=world["running"].agent_id, n=2, at=NOW, user="alice@example.com")  # live, another agent
    eraser = person("dpo", "erase_user_data")
    with pytest.raises(PermissionDenied, match="experiments.erase_user_data"):
        retention.user_data_erase(user_id="alice@example.com", agent=None, actor=person("nobody"))
    result = retention.user_data_erase(user_id="alice@example.com", agent=rolled_back.agent, actor=eraser, reason="ticket 12")
    assert (result.outcomes, result.assignments, result.experiments) == (5, 1, ["content_agent-exp"])
    assert OutcomeEvent.objects.filter(user_id="alice@example.com").count() == 2  # the other agent's stay
    assert OutcomeEvent.objects.filter(experiment=rolled_back).count() == 30  # other users untouched
    trace = DataDeletion.objects.get(kind="erasure")
    assert trace.subject_hash == retention.user_id_hash("alice@example.com") != retention.user_id_hash("bob@example.com")
    assert (trace.actor, trace.agent, trace.reason) == (eraser, "content_agent", "ticket 12")
    stored = json.dumps([trace.subject_hash, trace.criteria, trace.experiments, trace.reason, trace.agent])
    assert "alice" not in stored
    again = retention.user_data_erase(user_id="alice@example.com", agent=None, actor=eraser, dry_run=True)
    assert (again.outcomes, again.earlier_erasures) == (2, [trace.at])


def test_erasure_refuses_to_change_a_running_experiment_unless_allowed(world):
    running = world["running"]
    outcomes(agent_id=running.agent_id, n=1, at=NOW, experiment=running, user="carol", variant="treatment")
    eraser = person("dpo", "erase_user_data")
    with pytest.raises(Conflict, match="qa_agent-exp, still running"):
        retention.user_data_erase(user_id="carol", agent=None, actor=eraser)
    assert OutcomeEvent.objects.filter(user_id="carol").count() == 1 and not DataDeletion.objects.exists()
    code, _, err = run("erase_user_data", "--user-id", "carol", "--as", "dpo")
    assert code == 1 and "--allow-active-experiments" in err
    assert run("erase_user_data", "--user-id", "carol")[0] == 2  # --as is required
    code, out, _ = run("erase_user_data", "--user-id", "carol", "--agent", "qa_agent", "--as", "dpo", "--allow-active-experiments")
    assert code == 0 and out.startswith("erased 1 outcomes and 1 exposures of user #") and "qa_agent-exp" in out
    assert not OutcomeEvent.objects.filter(user_id="carol").exists()
    assert DataDeletion.objects.get().criteria == {"allow_active_experiments": True, "active_experiments": ["qa_agent-exp"],
                                                   "complete": True}
    assert counts(running) == (30, 30)


needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="the exposure queue and its dead letters live in Redis")


@needs_redis
def test_a_dry_run_erasure_writes_nothing_and_counts_the_dead_letters_that_hold_the_id(world):
    """Second review: --dry-run drained the exposures /route buffered in Redis into the database, and
    the dead-letter list of exposures — which can hold the user's id — was mentioned nowhere."""
    rolled_back = world["rolled_back"]
    outcomes(agent_id=rolled_back.agent_id, n=1, at=OLD, experiment=rolled_back, user="dave")
    client = redis.Redis.from_url(settings.REDIS_URL)
    buffered = json.dumps([[world["running"].pk, "dave", "treatment", world["running"].current_stage_id, time.time()]])
    client.rpush(routing.EXPOSURE_LIST_KEY, buffered)
    client.rpush(routing.EXPOSURE_DEAD_LETTER_KEY, json.dumps([[rolled_back.pk, "dave", "nul\x00", None, 0]]),
                 json.dumps([[rolled_back.pk, "davey", "control", None, 0]]), b"not json, naming \"dave\"")
    person("dpo", "erase_user_data")

    code, out, _ = run("erase_user_data", "--user-id", "dave", "--as", "dpo", "--dry-run")
    assert code == 0 and out.startswith("would erase 1 outcomes and 1 exposures")
    assert "not erased: 2 exposure batch(es) in the Redis list genesis:experiments:exposures:dead" in out
    assert client.llen(routing.EXPOSURE_LIST_KEY) == 1 and not Assignment.objects.filter(user_id="dave", experiment=world["running"]).exists()
    assert not DataDeletion.objects.exists()

    # The real erasure writes the buffered exposure first: it is in a running experiment, so it refuses.
    code, _, err = run("erase_user_data", "--user-id", "dave", "--as", "dpo")
    assert code == 1 and "qa_agent-exp, still running" in err
    assert client.llen(routing.EXPOSURE_LIST_KEY) == 0 and OutcomeEvent.objects.filter(user_id="dave").count() == 1
    result = retention.user_data_erase(user_id="dave", agent=None, actor=None, allow_active_experiments=True)
    assert (result.outcomes, result.assignments, result.dead_letter_batches) == (1, 2, 2)
    client.close()


@needs_redis
def test_an_erasure_writes_the_users_buffered_exposure_behind_a_backlog_longer_than_a_beat_drain(world):
    """Third review: the erasure drained at most 200 batches, so the user's exposure queued behind a
    longer backlog was written after the erasure had committed (which reported 0 exposures deleted)."""
    running = world["running"]
    client = redis.Redis.from_url(settings.REDIS_URL)
    now = time.time()
    backlog = [json.dumps([[running.pk, f"other{b}", "control", running.current_stage_id, now]]) for b in range(250)]
    client.rpush(routing.EXPOSURE_LIST_KEY, *backlog, json.dumps([[running.pk, "frank", "control", running.current_stage_id, now]]))

    result = retention.user_data_erase(user_id="frank", agent=None, actor=None, allow_active_experiments=True)
    assert result.assignments == 1
    assert client.llen(routing.EXPOSURE_LIST_KEY) == 0
    routing.drain_exposure_queue()  # beat's next drain finds nothing of frank's left to write
    assert not Assignment.objects.filter(user_id="frank").exists()
    assert Assignment.objects.filter(experiment=running, user_id__startswith="other").count() == 250
    client.close()


def test_an_erased_users_exposure_written_after_the_erasure_is_left_out(world, caplog):
    """Review: an erasure did not stick for exposures. It drains Redis's exposure queue, but a web
    process's in-memory buffer (flushed every 2 s; up to 100 000 rows while Redis is away) and
    dead-letter batches replayed later are written by write_exposures, which did not look at erasures:
    the erased user's exposure from before the erasure was stored again. Her exposures from after it,
    and those at an agent the erasure did not cover, are new data and written."""
    running, paused = world["running"], world["paused"]
    routed_at = time.time() - 1  # /route answered alice a second before the erasure; still in a web buffer
    retention.user_data_erase(user_id="alice", agent=running.agent, actor=None)
    erased_at = DataDeletion.objects.get().at
    written = routing.write_exposures(rows=[
        [running.pk, "alice", "control", running.current_stage.pk, routed_at],
        [running.pk, "alice", "treatment", running.current_stage.pk, erased_at.timestamp() + 1],
        [paused.pk, "alice", "control", paused.current_stage.pk, routed_at],
    ])
    assert written == 2
    assert set(Assignment.objects.filter(user_id="alice").values_list("experiment_id", "variant")) == {
        (running.pk, "treatment"), (paused.pk, "control")}
    assert any("1 of 3 left out" in r.getMessage() and "1 of users erased since" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_an_erasure_refuses_rows_that_reached_a_running_experiment_after_its_check_before_it_refuses_any_event(
        world, monkeypatch):
    """Second review: the active-experiment check ran outside the delete's transaction, so a row that
    reached a running experiment in between was deleted without --allow-active-experiments. Third review:
    refused only after its row was committed, the erasure refused the user's events meanwhile (those
    dated up to 5 minutes after it), for good — now the row that arrived refuses it before anything is
    committed: the limits ingestion reads at the moment of the refusal hold none for the user."""
    rolled_back, running = world["rolled_back"], world["running"]
    outcomes(agent_id=rolled_back.agent_id, n=1, at=OLD, experiment=rolled_back, user="erin")
    checks = itertools.count()
    real = retention._Erasure.experiments

    def check_then_erin_is_served(erasure):
        seen = real(erasure)
        if next(checks) == 0:  # a request of erin's, committed between the check and the delete
            outcomes(agent_id=running.agent_id, n=1, at=NOW, experiment=running, user="erin", variant="treatment")
        return seen

    limits_at_refusal: list[Any] = []
    real_refusal = retention._refusal

    def refusal_seen_by_ingestion(statuses, active):
        def read_limits() -> None:  # another session, as an /outcomes batch would read them
            try:
                a_minute_ago = timezone.now() - timedelta(minutes=1)  # an event of erin's sent meanwhile
                limits = retention.outcome_age_limits(received_at=timezone.now(), agents={running.agent_id: "qa_agent"},
                                                      oldest_event=a_minute_ago)
                limit = limits.of(agent_id=running.agent_id, user_id="erin")
                limits_at_refusal.append("refused" if limit is not None and a_minute_ago < limit.oldest else "taken")
            finally:
                connection.close()
        reader = threading.Thread(target=read_limits)
        reader.start()
        reader.join(60)
        return real_refusal(statuses, active)

    monkeypatch.setattr(retention._Erasure, "experiments", check_then_erin_is_served)
    monkeypatch.setattr(retention, "_refusal", refusal_seen_by_ingestion)
    with pytest.raises(Conflict, match="qa_agent-exp, still running"):
        retention.user_data_erase(user_id="erin", agent=None, actor=None)
    assert limits_at_refusal == ["taken"], "ingestion refused erin's events while the refused erasure was recorded"
    # Nothing erased: the ended experiment's row is still there, beside the one that arrived; no trail.
    assert sorted(OutcomeEvent.objects.filter(user_id="erin").values_list("experiment", flat=True)) == sorted([rolled_back.pk, running.pk])
    assert not DataDeletion.objects.exists()


def test_a_prune_recorded_before_prunes_said_which_kind_is_named_as_a_prune(settings):
    """A trail row of a prune from before the cut-off was recorded (filled in by migration 0009, whose
    criteria do not say whether it was scheduled) still limits ingestion, named without guessing."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    AgentFactory(slug="qa_agent")
    cut_off = NOW - timedelta(days=10)
    DataDeletion.objects.create(kind=DataDeletion.Kind.PRUNE, outcomes_deleted=1, outcomes_before=cut_off,
                                criteria={"live_before": cut_off.isoformat(), "ended_before": None, "complete": True})
    detail = _send("e1", occurred_at=NOW - timedelta(days=11)).rejected[0]["detail"]
    assert f"after {cut_off.isoformat()}, the cut-off of a prune on " in detail
    assert "which deleted live outcomes stored before it" in detail
