"""What a deletion took stays gone: an event sent again after a prune or an erasure deleted its stored
copy is refused — not stored, not charged a second time, and an erased user's data does not come back —
however the resend and the deletion interleave (each prune or erasure records its limit before it
deletes, behind the intake fence: experiments/retention.py), and whatever the agent's clock said (a
copy is stored at most MAX_OUTCOME_CLOCK_SKEW earlier than the time it was sent with).

Three gaps the earlier retention tests (tests/experiments/test_retention.py) left open, each shown
here to charge an event twice or bring erased data back on the code before it was closed."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from experiments import intake, retention, tasks
from experiments.models import MAX_OUTCOME_CLOCK_SKEW, DataDeletion, Experiment, OutcomeEvent
from experiments.outcomes import IngestResult, outcomes_ingest
from experiments.services import experiment_rollback, experiment_start
from genesis.errors import Conflict
from models_app.registry.models import Agent
from tests.experiments.factories import draft_experiment, person
from tests.experiments.test_retention import _ledger, _priced_qa_agent
from tests.factories import AgentFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

SKEW = MAX_OUTCOME_CLOCK_SKEW


def send(event_id: str, *, occurred_at: datetime | None, received_at: datetime | None = None, user: str = "u",
         agent: str = "qa_agent") -> IngestResult:
    """One event of 1M input tokens ($1 at the test price) of `user` at `agent`."""
    event = {"event_id": event_id, "agent": agent, "user_id": user, "model": "open-mistral-7b", "success": True,
             "latency_ms": 10, "input_tokens": 1_000_000, "output_tokens": 0}
    if occurred_at is not None:
        event["occurred_at"] = occurred_at.isoformat()
    return outcomes_ingest(principal=None, received_at=received_at, events=[event])


def qa_agent() -> None:
    ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id="open-mistral-7b", kind="baseline")
    _priced_qa_agent()


# --- 1. a resend racing the deletion ----------------------------------------------------------------------


def _deletion_runs_while_ingestion_checks(monkeypatch, deletion: Callable[[], Any]) -> Callable[[], Any]:
    """Make the next ingestion run `deletion` in a thread of its own (its own database session) right
    after it has read its limits — the moment a prune's batch or an erasure could slip in before the
    insert — and go on once the deletion has finished or waits on a lock. Returns a function that waits
    for the deletion and gives its result."""
    real = retention.outcome_age_limits
    thread_result: list[Any] = []
    backend: list[int] = []
    threads: list[threading.Thread] = []

    def run() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend.append(cursor.fetchone()[0])
            thread_result.append(deletion())
        except BaseException as exc:  # handed to the test
            thread_result.append(exc)
        finally:
            connection.close()

    def blocked() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND NOT granted)", backend)
            return cursor.fetchone()[0]

    def limits_then_deletion(**kwargs: Any) -> Any:
        limits = real(**kwargs)
        monkeypatch.setattr(retention, "outcome_age_limits", real)  # once
        thread = threading.Thread(target=run)
        threads.append(thread)
        thread.start()
        deadline = time.monotonic() + 120  # a generous bound: the wait ends on an event, not a time
        while thread.is_alive() and not (backend and blocked()):
            assert time.monotonic() < deadline, "the deletion neither finished nor waited"
            time.sleep(0.01)
        return limits

    monkeypatch.setattr(retention, "outcome_age_limits", limits_then_deletion)

    def finished() -> Any:
        threads[0].join(timeout=120)
        assert not threads[0].is_alive()
        if isinstance(thread_result[0], BaseException):
            raise thread_result[0]
        return thread_result[0]

    return finished


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deletion", ["prune by hand", "prune of an ended experiment", "erasure"])
def test_an_event_resent_while_a_deletion_deletes_it_is_not_stored_again(settings, monkeypatch, deletion):
    """The race (gap 1): ingestion read its limits, a prune's batch (or an erasure) then deleted the
    stored copy and recorded its cut-off, and the insert that followed found no copy: the resend was
    stored again and charged a second time. Now a deletion records its limit before it deletes, behind
    the intake fence, which waits for every ingestion that read the limits without it to commit — so
    the resend meets its stored copy (a duplicate), and the deletion then deletes that copy."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    now = timezone.now()
    if deletion == "prune of an ended experiment":
        _priced_qa_agent()
        experiment = experiment_start(experiment=draft_experiment("qa_agent"))
        experiment.stages.update(started_at=now - timedelta(days=60))
        occurred = now - timedelta(days=50)
        assert send("e1", occurred_at=occurred, received_at=occurred).accepted == 1
        assert OutcomeEvent.objects.get().experiment_id == experiment.pk
        experiment_rollback(experiment=experiment, reason="test")
        Experiment.objects.filter(pk=experiment.pk).update(ended_at=now - timedelta(days=40))

        def run() -> Any:
            return retention.outcomes_prune(live_before=None, ended_before=now - timedelta(days=30), actor=None)
    elif deletion == "prune by hand":
        qa_agent()
        occurred = now - timedelta(days=40)
        assert send("e1", occurred_at=occurred, received_at=occurred).accepted == 1

        def run() -> Any:
            return retention.outcomes_prune(live_before=now - timedelta(days=30), actor=None)
    else:
        qa_agent()
        occurred = now - timedelta(hours=1)
        assert send("e1", occurred_at=occurred, received_at=occurred).accepted == 1

        def run() -> Any:
            return retention.user_data_erase(user_id="u", agent=None, actor=None)
    assert _ledger() == Decimal("1")

    finished = _deletion_runs_while_ingestion_checks(monkeypatch, run)
    again = send("e1", occurred_at=occurred)
    assert finished().outcomes == 1  # the deletion ran to its end, and deleted e1's stored copy
    assert (again.accepted, again.rejected) == (0, [])  # the resend met that copy: a duplicate
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()
    # And from then on the deletion's limit refuses it.
    third = send("e1", occurred_at=occurred)
    assert third.accepted == 0 and third.rejected[0]["detail"].startswith(f"occurred_at: {occurred.isoformat()} is before ")
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_prune_that_fails_before_it_deletes_anything_has_recorded_its_cut_off(monkeypatch, settings):
    """A prune records its cut-off, in its own transaction, before its first batch: a prune that then
    fails (a worker lost) leaves an incomplete DataDeletion whose cut-off still holds — the batches it
    did run are gone, and a resend of what they took must stay refused."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    qa_agent()
    now = timezone.now()
    occurred = now - timedelta(days=40)
    assert send("e1", occurred_at=occurred, received_at=occurred).accepted == 1

    def worker_lost(rows, *, batch_size):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(retention, "_delete_batch", worker_lost)
    with pytest.raises(RuntimeError):
        retention.outcomes_prune(live_before=now - timedelta(days=30), actor=None)
    trace = DataDeletion.objects.get()
    assert (trace.outcomes_before, trace.outcomes_deleted, trace.criteria["complete"]) == (now - timedelta(days=30), 0, False)
    assert send("e2", occurred_at=occurred).accepted == 0


def _waiting_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN "
                       "(SELECT pid FROM pg_stat_activity WHERE datname = current_database())")
        return cursor.fetchone()[0]


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60  # generous: the wait ends on an event, not a time
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class _Threads:
    """Functions run in threads of their own (each its own database session): when each finished, and
    what each raised."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def run(self, name: str, function: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                function()
                self.done[name] = time.monotonic()
            except BaseException as exc:  # handed to the test
                self.errors.append(exc)
            finally:
                connection.close()
        thread = threading.Thread(target=target, name=name)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)
        assert not self.errors, self.errors


@pytest.mark.django_db(transaction=True)
def test_a_deletion_waiting_for_the_fence_stalls_other_agents_batches_only_for_one_try(settings):
    """Review: a batch holds the fence shared for its whole transaction, row-lock waits included — a
    suite import holds qa_agent's row FOR UPDATE, and qa_agent's batch waits for it (CostEntry → agent).
    An erasure asking for the fence exclusively queued behind that batch, and every later batch of ANY
    agent queued behind the erasure (PostgreSQL grants a lock only when it conflicts with no earlier
    waiter): other_agent's batch waited as long as the suite import (5.04 s). Now the erasure waits for
    the fence one lock_timeout at a time (FENCE_TRY_TIMEOUT_MS, which applies to advisory locks) and lets
    the queued batches through between tries: other_agent's batch is taken while qa_agent's row is still
    held, and the erasure gets the fence once it is released."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    _priced_qa_agent()
    experiment_start(experiment=draft_experiment("qa_agent"))
    ModelVersionFactory(agent=AgentFactory(slug="other_agent"), model_id="open-mistral-7b", kind="baseline")
    assert send("z1", occurred_at=timezone.now() - timedelta(hours=1), user="zed", agent="other_agent").accepted == 1
    release = threading.Event()
    threads = _Threads()

    def suite_import_of_qa_agent() -> None:  # benchmark_suite_import: Agent FOR UPDATE while it creates the cases
        with transaction.atomic():
            Agent.objects.select_for_update().filter(slug="qa_agent").first()
            release.wait(120)

    threads.run("suite import", suite_import_of_qa_agent)
    _until(lambda: "suite import" in threads.done or _agent_row_locked(), "the suite import should hold qa_agent's row")
    before = _waiting_locks()
    threads.run("qa_agent batch", lambda: send("x1", occurred_at=None, user="u", agent="qa_agent"))
    _until(lambda: _waiting_locks() > before, "qa_agent's batch should wait for the agent row (CostEntry FK)")
    threads.run("erasure", lambda: retention.user_data_erase(user_id="zed", agent=None, actor=None))
    _until(lambda: _waiting_locks() > before + 1, "the erasure should wait for the fence")
    started = time.monotonic()
    threads.run("other_agent batch", lambda: send("y1", occurred_at=None, user="v", agent="other_agent"))
    _until(lambda: "other_agent batch" in threads.done or threads.errors, "other_agent's batch should finish")
    held_meanwhile = "qa_agent batch" not in threads.done
    release.set()
    threads.join()
    print(f"\nother_agent's batch took {threads.done['other_agent batch'] - started:.2f} s while qa_agent's row was held")
    assert held_meanwhile, "other_agent's batch waited until qa_agent's row was released"
    assert DataDeletion.objects.get().criteria["complete"] and not OutcomeEvent.objects.filter(user_id="zed").exists()


def _agent_row_locked() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND granted AND pid <> pg_backend_pid() "
                       "AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())")
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_deletion_that_cannot_get_the_fence_gives_up_saying_what_to_do(settings, monkeypatch, caplog):
    """A batch holding the fence longer than a deletion waits for it in all (FENCE_GIVE_UP_SECONDS):
    the erasure is refused naming the fence, having recorded nothing; the scheduled prune logs it and
    leaves the rest to its next run."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 30, 0
    qa_agent()
    occurred = timezone.now() - timedelta(days=20)
    assert send("e1", occurred_at=occurred, received_at=occurred).accepted == 1
    monkeypatch.setattr(intake, "FENCE_GIVE_UP_SECONDS", 2.5)
    held, release = threading.Event(), threading.Event()
    threads = _Threads()

    def batch_holding_the_fence() -> None:
        with transaction.atomic():
            intake.intake_fence_hold()
            held.set()
            release.wait(120)

    threads.run("batch", batch_holding_the_fence)
    assert held.wait(60)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="refused: the intake fence: POST /outcomes batches held it") as refused:
        call_command("erase_user_data", "--user-id", "u", "--as", person("dpo", "erase_user_data").username,
                     stdout=out, stderr=err)
    assert refused.value.returncode == 1 and "run it again when that lock is gone" in str(refused.value)
    assert not DataDeletion.objects.exists()
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS = 10  # the scheduled prune now has e1 to delete
    assert tasks.prune_outcomes() == 0
    assert any("prune: stopped, to try again at the next run: the intake fence" in r.getMessage() for r in caplog.records)
    assert OutcomeEvent.objects.count() == 1
    release.set()
    threads.join()
    assert tasks.prune_outcomes() == 1


# --- 2. the agent's clock ahead ---------------------------------------------------------------------------


def test_an_event_stored_at_receipt_and_pruned_is_refused_by_its_own_later_time(settings):
    """Clock skew (gap 2): e1 was sent 4 minutes ahead of the server's clock and stored at its receipt;
    a prune by cut-off C between the two deleted it (its stored time is before C); sent again, its own
    time is after C, so it was taken and charged a second time. A stored copy is at most the skew
    allowed (5 minutes) earlier than the time it was sent with, so a deletion's limit is its cut-off
    plus that skew: an event sent with a time before it may have been deleted, one after it cannot."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    qa_agent()
    now = timezone.now()
    received = now - timedelta(days=10)
    ahead = received + timedelta(minutes=4)
    assert send("e1", occurred_at=ahead, received_at=received).accepted == 1
    assert OutcomeEvent.objects.get().occurred_at == received  # stored at receipt
    cut_off = received + timedelta(minutes=2)
    assert retention.outcomes_prune(live_before=cut_off, actor=None).outcomes == 1

    again = send("e1", occurred_at=ahead)
    trace = DataDeletion.objects.get()
    assert again.rejected == [{"index": 0, "detail": (
        f"occurred_at: {ahead.isoformat()} is before {(cut_off + SKEW).astimezone(UTC).isoformat()}, 5 minutes (the "
        f"clock skew allowed) after {cut_off.astimezone(UTC).isoformat()}, the cut-off of a prune run by hand "
        f"(prune_outcomes) on {trace.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, which deleted live outcomes stored before it: an event sent "
        "with a time that early may already have been deleted, and one sent again could not be told from it, so it is "
        "not stored or charged again")}]
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()
    # From the cut-off plus the skew on, no copy can have been deleted: taken (and charged).
    assert send("e2", occurred_at=cut_off + SKEW).accepted == 1


def test_an_ended_experiments_outcome_from_a_clock_ahead_does_not_come_back_as_live(settings):
    """The same with an ended experiment: its outcome, sent 4 minutes ahead just before it ended, was
    stored at receipt (in the experiment), deleted with the experiment's data, and, sent again with its
    own time after the end, taken as live and charged twice."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    _priced_qa_agent()
    now = timezone.now()
    experiment = experiment_start(experiment=draft_experiment("qa_agent"))
    experiment.stages.update(started_at=now - timedelta(days=60))
    received = now - timedelta(days=50)
    ahead = received + timedelta(minutes=4)
    assert send("e1", occurred_at=ahead, received_at=received).accepted == 1
    assert OutcomeEvent.objects.get().experiment_id == experiment.pk
    experiment_rollback(experiment=experiment, reason="test")
    ended = received + timedelta(minutes=1)
    Experiment.objects.filter(pk=experiment.pk).update(ended_at=ended)
    call_command("prune_outcomes", "--ended-older-than-days", "30", stdout=io.StringIO())
    assert not OutcomeEvent.objects.exists()

    again = send("e1", occurred_at=ahead)
    assert again.accepted == 0 and again.rejected[0]["detail"].startswith(
        f"occurred_at: {ahead.isoformat()} is before {(ended + SKEW).astimezone(UTC).isoformat()}, 5 minutes (the clock "
        f"skew allowed) after {ended.astimezone(UTC).isoformat()}, when this agent's experiment '{experiment.key}' ended")
    assert _ledger() == Decimal("1") and not OutcomeEvent.objects.exists()
    assert send("e2", occurred_at=ended + SKEW).accepted == 1


def test_right_after_the_scheduled_prune_its_cut_off_plus_the_skew_is_the_limit(settings):
    """The scheduled prune's cut-off is its run less the retention, as the retention limit of a receipt
    at that moment; within the skew after the run an event sent ahead and deleted by it would pass the
    retention's limit, so the recorded cut-off (plus the skew) refuses it; once the skew has passed, the
    retention decides again, to the limit exactly."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    qa_agent()
    now = timezone.now()
    received = now - timedelta(days=90, minutes=1)
    ahead = received + timedelta(minutes=4)
    assert send("e1", occurred_at=ahead, received_at=received).accepted == 1
    assert retention.outcomes_prune_scheduled(now=now).outcomes == 1

    assert send("e1", occurred_at=ahead, received_at=now + timedelta(seconds=1)).accepted == 0
    assert _ledger() == Decimal("1")
    later = now + SKEW
    assert send("e3", occurred_at=later - timedelta(days=90), received_at=later).accepted == 1


# --- 3. erasure --------------------------------------------------------------------------------------------


def test_an_erased_users_events_sent_again_are_refused_and_their_new_ones_taken(settings):
    """Erasure (gap 3): erase_user_data deleted alice's outcomes but recorded nothing ingestion reads:
    her events sent again were stored again — her data back, and charged twice. Now the erasure's row
    (the keyed hash of her id, and when) refuses her events from before it — plus the clock skew, as
    for a prune — at that agent or every agent as erased; her events after it, and everyone else's,
    are taken."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    qa_agent()
    ModelVersionFactory(agent=AgentFactory(slug="other_agent"), model_id="open-mistral-7b", kind="baseline")
    now = timezone.now()
    an_hour_ago = now - timedelta(hours=1)
    assert send("a1", occurred_at=an_hour_ago, user="alice@example.com").accepted == 1
    assert send("b1", occurred_at=an_hour_ago, user="bob").accepted == 1
    assert send("o1", occurred_at=an_hour_ago, user="alice@example.com", agent="other_agent").accepted == 1
    ahead = timezone.now() + timedelta(minutes=4)  # alice's agent's clock is fast: stored at receipt
    assert send("a2", occurred_at=ahead, user="alice@example.com").accepted == 1
    assert _ledger() == Decimal("4")

    result = retention.user_data_erase(user_id="alice@example.com", agent=Agent.objects.get(slug="qa_agent"),
                                       actor=person("dpo", "erase_user_data"), reason="ticket 7")
    assert result.outcomes == 2
    erased_at = DataDeletion.objects.get(kind="erasure").at

    for event_id, occurred_at in (("a1", an_hour_ago), ("a2", ahead), ("a3", erased_at + SKEW - timedelta(seconds=1))):
        again = send(event_id, occurred_at=occurred_at, user="alice@example.com")
        assert again.rejected == [{"index": 0, "detail": (
            f"occurred_at: {occurred_at.isoformat()} is before {(erased_at + SKEW).astimezone(UTC).isoformat()}, 5 minutes "
            f"(the clock skew allowed) after {erased_at.astimezone(UTC).isoformat()}, when this user_id's data at qa_agent "
            "was erased (erase_user_data): an event sent with a time that early may be one of those erased, and one "
            "sent again could not be told from it, so it is not stored (nor charged) again; events of this user from "
            "after that are taken")}]
    assert _ledger() == Decimal("4") and not OutcomeEvent.objects.filter(agent__slug="qa_agent", user_id="alice@example.com").exists()
    # Bob's, and alice's at the other agent, are not hers to refuse: still stored, so duplicates.
    assert send("b1", occurred_at=an_hour_ago, user="bob").duplicates == 1
    assert send("o1", occurred_at=an_hour_ago, user="alice@example.com", agent="other_agent").duplicates == 1
    # Her events from after the erasure (plus the skew) are new data: taken and charged.
    after = erased_at + SKEW
    assert send("a4", occurred_at=after, received_at=after, user="alice@example.com").accepted == 1
    assert _ledger() == Decimal("5")
    assert "alice" not in repr(DataDeletion.objects.values_list("subject_hash", "criteria", "reason", "agent"))


def test_an_erasure_at_every_agent_refuses_the_user_at_each_and_reads_the_trail_once_a_batch(settings, monkeypatch):
    """The lookup costs a batch no more queries of the trail than before (one), and a batch whose events
    all came after the erasures (plus the skew) — the usual fresh batch — reads none and hashes no id."""
    settings.GENESIS_RETAIN_LIVE_OUTCOMES_DAYS, settings.GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = 90, 0
    qa_agent()
    AgentFactory(slug="other_agent")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    assert send("a1", occurred_at=an_hour_ago, user="alice").accepted == 1
    retention.user_data_erase(user_id="alice", agent=None, actor=None)
    events = [{"event_id": f"b{i}", "agent": agent, "user_id": user, "model": "open-mistral-7b", "success": True,
               "latency_ms": 10, "occurred_at": an_hour_ago.isoformat()}
              for i, (agent, user) in enumerate([("qa_agent", "alice"), ("other_agent", "alice"), ("qa_agent", "bob")])]
    with CaptureQueriesContext(connection) as queries:
        batch = outcomes_ingest(principal=None, events=events)
    assert (batch.accepted, [rejected["index"] for rejected in batch.rejected]) == (1, [0, 1])
    assert "when this user_id's data at every agent was erased" in batch.rejected[1]["detail"]
    # The prunes' newest cut-off and the erasures since the batch's oldest event: one query of the trail.
    assert sum('"experiments_datadeletion"' in q["sql"] for q in queries.captured_queries) == 1

    hashed: list[str] = []
    real_hash = intake.user_id_hash
    monkeypatch.setattr(intake, "user_id_hash", lambda user_id: hashed.append(user_id) or real_hash(user_id))
    later = DataDeletion.objects.get().at + SKEW + timedelta(seconds=1)
    fresh = outcomes_ingest(principal=None, received_at=later, events=[
        {**event, "event_id": f"f{i}", "occurred_at": later.isoformat()} for i, event in enumerate(events)])
    assert (fresh.accepted, fresh.rejected, hashed) == (3, [], [])
    assert send("a2", occurred_at=an_hour_ago, user="alice").accepted == 0 and hashed == ["alice"]


def test_a_refused_erasure_leaves_nothing_that_refuses_the_users_events():
    """An erasure refused for a running experiment (without --allow-active-experiments) erased nothing,
    so it refuses nothing either: the user's events go on being taken."""
    _priced_qa_agent()
    experiment = experiment_start(experiment=draft_experiment("qa_agent"))
    now = timezone.now()
    assert send("c1", occurred_at=now, user="carol").accepted == 1
    assert OutcomeEvent.objects.get().experiment_id == experiment.pk
    with pytest.raises(Conflict, match="still running"):
        retention.user_data_erase(user_id="carol", agent=None, actor=None)
    assert not DataDeletion.objects.exists()
    assert send("c2", occurred_at=now - timedelta(minutes=1), user="carol").accepted == 1
