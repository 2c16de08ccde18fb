"""Benchmark runs end to end against the simulator over HTTP: the run row and its chunks, results
written once, costs on the ledger once, verdicts following the simulator's quality, resuming after a
killed worker (with real Celery workers), including one killed holding a chunk's message it had not
claimed, cancel, failures, budget refusals and overrides; a judge
that fails transiently (only the judge is asked again), answers landing after a run ended, re-runs of
an approved candidate, and a chunk task that raises."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from http.server import ThreadingHTTPServer

import pytest
import redis
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from costs.models import CostEntry, CostHold
from costs.services import budget_upsert
from genesis.errors import Conflict, InvalidInput, PermissionDenied
from models_app.benchmarks.ledger import benchmark_run_post_all_costs
from models_app.benchmarks.limits import RedisProviderLimiter
from models_app.benchmarks.models import (
    BenchmarkChunk,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkUnscoredAnswer,
    BenchmarkVerdictOverride,
)
from models_app.benchmarks.runner import benchmark_chunk_claim, benchmark_chunk_execute, benchmark_chunk_received
from models_app.benchmarks.services import (
    benchmark_run_cancel,
    benchmark_run_create,
    benchmark_suite_import,
    benchmark_verdict_override,
)
from models_app.benchmarks.sweep import benchmark_runs_resume_stalled
from models_app.providers import TransientProviderError
from models_app.registry.models import Agent, ModelVersion, ProviderAccount
from models_app.registry.services import model_version_register, model_version_transition
from models_app.simulator.markers import format_answer_marker
from tests.factories import UserFactory
from tests.http_servers import QuietHandler, serving, url_of
from tests.models_app.conftest import point_demo_provider_at, wait_until

EQUAL_QUALITY = {"ft:*": 0.55, "*": 0.55}


def chat_requests(server) -> int:
    return sum(1 for method, path, _ in server.state.request_log if path == "/v1/chat/completions")


def run_inline(run: BenchmarkRun, *, worker: str = "inline@test", rounds: int = 5) -> BenchmarkRun:
    """Do the workers' job in this process: execute every chunk until none is left (a chunk with
    transiently failing pairs is released, as the Celery task would retry it)."""
    for _ in range(rounds):
        pending = list(BenchmarkChunk.objects.filter(run=run).exclude(status="done").order_by("index"))
        if not pending:
            break
        for chunk in pending:
            benchmark_chunk_execute(chunk_id=chunk.pk, worker=worker)
    benchmark_run_post_all_costs(run_id=run.pk)  # what the `benchmark_costs_post` task does after each chunk
    run.refresh_from_db()
    return run


def ledger_entries(run: BenchmarkRun):
    return CostEntry.objects.filter(idempotency_key__startswith=f"benchmark:{run.pk}:")


def assert_scored_once_and_paid_once(run: BenchmarkRun) -> None:
    results = BenchmarkResult.objects.filter(run=run)
    pairs = list(results.values_list("model_version_id", "case_id"))
    assert len(pairs) == len(set(pairs)) == run.total_items == 2 * run.suite.case_count
    assert not results.filter(cost_posted_at__isnull=True).exists()
    entries = ledger_entries(run)
    assert entries.count() == results.filter(cost_usd__gt=0).count() == run.total_items
    assert set(entries.values_list("idempotency_key", flat=True)) == set(results.values_list("cost_key", flat=True))
    # Quantized: the embedded SQLite sums decimals as floats (Postgres sums them exactly).
    def summed(rows, field):
        return Decimal(rows.aggregate(total=Sum(field))["total"]).quantize(Decimal("0.00000001"))

    assert summed(entries, "amount_usd") == summed(results, "cost_usd") == run.cost_usd
    assert run.cost_usd > 0


# ---- in-process runs (the chunk service called directly) ------------------------------------------------


@pytest.mark.django_db
def test_a_clearly_better_fine_tune_passes_and_is_approved_for_rollout(demo_simulator):
    agent = Agent.objects.get(slug="qa_agent")
    run = benchmark_run_create(agent=agent, requested_via="test")
    assert run.status == "queued" and run.total_items == 96 and run.estimated_cost_usd > 0
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "benchmarking"
    assert run.baseline.status == "live" and run.suite.slug == "core" and run.suite_version == 1

    run = run_inline(run)

    assert run.status == "completed" and run.verdict == "PASS", run.comparison["reasons"]
    assert run.started_at <= run.finished_at and run.completed_items == 96
    comparison = run.comparison
    assert comparison["n"] == 48 and comparison["candidate_mean"] > comparison["baseline_mean"]
    assert comparison["relative_improvement"] >= settings.BENCHMARK_MIN_RELATIVE_IMPROVEMENT and comparison["ci_low"] > 0
    assert comparison["resamples"] >= 2000 and {row["tag"] for row in comparison["per_tag"]} >= {"difficulty:easy", "difficulty:hard"}
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"
    assert_scored_once_and_paid_once(run)
    assert chat_requests(demo_simulator) == 96  # one call per pair, nothing asked twice
    result = BenchmarkResult.objects.filter(run=run).first()
    assert result.prompt_tokens > 0 and result.latency_ms > 0 and result.reason and result.finish_reason == "stop"


@pytest.mark.django_db
def test_a_fine_tune_no_better_than_its_base_does_not_pass(seeded_demo, simulator_factory):
    point_demo_provider_at(simulator_factory(quality=EQUAL_QUALITY), rate_limit_per_minute=60_000)
    run = run_inline(benchmark_run_create(agent=Agent.objects.get(slug="qa_agent")))

    assert run.status == "completed" and run.verdict in ("FAIL", "INCONCLUSIVE")
    assert run.comparison["relative_improvement"] < settings.BENCHMARK_MIN_RELATIVE_IMPROVEMENT
    expected = {"FAIL": "rejected", "INCONCLUSIVE": "registered"}[run.verdict]
    assert ModelVersion.objects.get(pk=run.candidate_id).status == expected


@pytest.mark.django_db
def test_each_run_is_stored_on_its_own(demo_simulator):
    agent = Agent.objects.get(slug="legal_agent")
    first = run_inline(benchmark_run_create(agent=agent))
    second = run_inline(benchmark_run_create(agent=agent))  # approved_for_rollout may be benchmarked again

    assert first.pk != second.pk and first.verdict == "PASS" and second.status == "completed"
    # The second run of the candidate on the suite spends the second share of α; whatever it says, the
    # approved candidate stays approved (_decide_candidate).
    assert (first.comparison["run_number"], second.comparison["run_number"]) == (1, 2)
    assert ModelVersion.objects.get(pk=second.candidate_id).status == "approved_for_rollout"
    assert BenchmarkResult.objects.filter(run=first).count() == BenchmarkResult.objects.filter(run=second).count() == 64
    assert ledger_entries(first).count() == ledger_entries(second).count() == 64


@pytest.mark.django_db
def test_a_chunk_taken_over_from_a_dead_worker_skips_pairs_already_scored(demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    first = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
    benchmark_chunk_execute(chunk_id=first.pk, worker="worker-a@test")
    assert benchmark_run_post_all_costs(run_id=run.pk) == 16
    asked, paid = chat_requests(demo_simulator), ledger_entries(run).count()
    assert asked == paid == 16

    # As if worker A had died holding the chunk: running, its lease not renewed for minutes.
    BenchmarkChunk.objects.filter(pk=first.pk).update(
        status="running", worker="worker-a@test", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    outcome = benchmark_chunk_execute(chunk_id=first.pk, worker="worker-b@test")

    assert outcome.scored == 0 and outcome.skipped_reason == ""
    assert benchmark_run_post_all_costs(run_id=run.pk) == 0  # posting again finds nothing to post
    assert chat_requests(demo_simulator) == asked and ledger_entries(run).count() == paid
    assert BenchmarkChunk.objects.get(pk=first.pk).status == "done"
    run = run_inline(run)
    assert run.status == "completed"
    assert_scored_once_and_paid_once(run)


@pytest.mark.django_db
def test_a_chunk_held_by_a_live_worker_is_not_taken(demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    chunk = BenchmarkChunk.objects.filter(run=run).first()
    assert benchmark_chunk_claim(chunk_id=chunk.pk, worker="worker-a@test") is not None
    assert benchmark_chunk_claim(chunk_id=chunk.pk, worker="worker-b@test") is None
    run.refresh_from_db()
    assert run.status == "running" and run.started_at is not None


@pytest.mark.django_db
def test_resume_hands_on_chunks_of_dead_or_silent_workers_only(demo_simulator, django_capture_on_commit_callbacks):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 8})
    chunks = list(BenchmarkChunk.objects.filter(run=run).order_by("index"))
    now = timezone.now()
    BenchmarkChunk.objects.filter(pk=chunks[0].pk).update(status="running", worker="alive@test", heartbeat_at=now)
    BenchmarkChunk.objects.filter(pk=chunks[1].pk).update(
        status="running", worker="alive@test", heartbeat_at=now - timedelta(minutes=5)
    )
    BenchmarkChunk.objects.filter(pk=chunks[2].pk).update(enqueued_at=now - timedelta(hours=1))
    BenchmarkChunk.objects.filter(pk=chunks[3].pk).update(status="done")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resent = benchmark_runs_resume_stalled(live_workers={"alive@test"}, now=now)

    # Every worker answers: only the silent chunk and the queued one waiting for an hour go again.
    assert sorted(resent) == sorted([chunks[1].pk, chunks[2].pk])
    assert len(callbacks) == 1  # the messages are sent once the transaction commits
    assert BenchmarkChunk.objects.get(pk=chunks[0].pk).status == "running"
    assert "sent no heartbeat" in BenchmarkChunk.objects.get(pk=chunks[1].pk).error

    # A worker that no longer answers loses its chunk at once, and the queued chunks that name no
    # receiver go again with it (see the test after this one); the running one of a live worker stays.
    BenchmarkChunk.objects.filter(pk=chunks[1].pk).update(status="running", worker="dead@test", heartbeat_at=now)
    with django_capture_on_commit_callbacks(execute=False):
        resent = benchmark_runs_resume_stalled(live_workers={"alive@test"}, now=now)
    assert sorted(resent) == sorted(chunk.pk for chunk in chunks if chunk.pk not in (chunks[0].pk, chunks[3].pk))
    assert "no longer answers" in BenchmarkChunk.objects.get(pk=chunks[1].pk).error
    assert BenchmarkChunk.objects.get(pk=chunks[0].pk).status == "running"

    # Without a ping, only silence counts.
    BenchmarkChunk.objects.filter(pk=chunks[1].pk).update(status="running", worker="dead@test", heartbeat_at=now)
    with django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers=None, now=now) == []


@pytest.mark.django_db
def test_a_queued_chunk_whose_message_went_to_a_worker_now_dead_is_sent_again_at_once_and_only_once(
    demo_simulator, django_capture_on_commit_callbacks, django_assert_num_queries
):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 8})
    to_dead, to_alive, in_queue, running = (c.pk for c in BenchmarkChunk.objects.filter(run=run).order_by("index")[:4])
    with django_assert_num_queries(1):  # run by the worker's consumer for every chunk message: one UPDATE
        assert benchmark_chunk_received(chunk_id=to_dead, worker="dead@test")
    assert benchmark_chunk_received(chunk_id=to_alive, worker="alive@test")
    assert benchmark_chunk_claim(chunk_id=running, worker="alive@test#1") is not None
    # A duplicate message of a running chunk is not noted: its holder is what the sweep watches.
    assert not benchmark_chunk_received(chunk_id=running, worker="dead@test")
    now = timezone.now()  # every chunk was enqueued just now: far from QUEUED_CHUNK_RESEND_AFTER_SECONDS

    with django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers=None, now=now) == []  # no ping: nobody known dead
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resent = benchmark_runs_resume_stalled(live_workers={"alive@test"}, now=now)

    # The dead worker may also have taken a message off the queue in the instant before noting it
    # (a worker killed there stranded a chunk in CI): every queued chunk that names no receiver goes
    # again with it. The chunk a live worker received, and the running one, stay.
    unreceived = set(BenchmarkChunk.objects.filter(run=run, status="queued").exclude(pk__in=[to_dead, to_alive]).values_list("pk", flat=True))
    assert in_queue in unreceived
    assert set(resent) == {to_dead} | unreceived and len(resent) == 1 + len(unreceived) and len(callbacks) == 1
    chunk = BenchmarkChunk.objects.get(pk=to_dead)
    assert chunk.status == "queued" and chunk.enqueued_at == now
    assert "dead@test received its message and no longer answers" in chunk.error
    assert "may have taken this chunk's message before noting it" in BenchmarkChunk.objects.get(pk=in_queue).error
    # The receiver is forgotten with the old message: the next sweep waits for the new message's receiver.
    assert chunk.received_by == ""
    later = now + timedelta(seconds=30)  # within the running chunk's heartbeat allowance
    with django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers={"alive@test"}, now=later) == []
    assert BenchmarkChunk.objects.get(pk=to_alive).received_by == "alive@test"
    assert BenchmarkChunk.objects.get(pk=in_queue).received_by == ""

    # A receiver that is alive does not stop the slow re-send: its message may still have been lost.
    BenchmarkChunk.objects.filter(pk=to_alive).update(enqueued_at=now - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers={"alive@test"}, now=later) == [to_alive]


@pytest.mark.django_db
def test_a_chunk_queued_too_long_is_sent_again_with_a_line_naming_its_run_and_chunk(demo_simulator, django_capture_on_commit_callbacks, caplog):
    """The runbook's "messages never sent" case: the sweep's own result line is DEBUG now, so the resend
    says itself, as the sweep's other resends do."""
    import logging

    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 8})
    first = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
    BenchmarkChunk.objects.filter(run=run).exclude(pk=first.pk).update(status="done")
    BenchmarkChunk.objects.filter(pk=first.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    with caplog.at_level(logging.WARNING, logger="models_app.benchmarks.sweep"), django_capture_on_commit_callbacks(execute=False):
        assert benchmark_runs_resume_stalled(live_workers={"alive@test"}) == [first.pk]
    [line] = [r.getMessage() for r in caplog.records if r.name == "models_app.benchmarks.sweep"]
    assert line.startswith(f"benchmark run #{run.pk} chunk {first.index}: queued since ") and line.endswith("sending it again")


@pytest.mark.django_db
def test_a_chunk_given_back_for_a_retry_forgets_who_received_its_earlier_message(demo_simulator):
    from models_app.benchmarks.runner import _release_chunk

    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    chunk = BenchmarkChunk.objects.filter(run=run).first()
    benchmark_chunk_received(chunk_id=chunk.pk, worker="worker-a@test")
    lease = benchmark_chunk_claim(chunk_id=chunk.pk, worker="worker-a@test#1")

    _release_chunk(lease, done=False, error="2 pair(s) failed transiently")  # what a retry does

    chunk.refresh_from_db()
    assert chunk.status == "queued" and chunk.received_by == ""
    # worker-a dying now strands no message of this chunk: its retry's message is not received yet.
    assert benchmark_runs_resume_stalled(live_workers={"alive@test"}) == []


@pytest.mark.django_db
def test_transient_errors_are_retried_and_every_pair_is_still_paid_once(seeded_demo, simulator_factory):
    server = simulator_factory(error_rate=0.25, retry_after_seconds=0)
    point_demo_provider_at(server, rate_limit_per_minute=60_000, max_concurrency=8)
    run = run_inline(benchmark_run_create(agent=Agent.objects.get(slug="analyst_agent")), rounds=8)

    statuses = [status for _, path, status in server.state.request_log if path == "/v1/chat/completions"]
    assert {429, 500} <= set(statuses) and statuses.count(200) == 64
    assert run.status == "completed" and run.verdict == "PASS"
    assert_scored_once_and_paid_once(run)


@pytest.mark.django_db
def test_a_model_the_provider_does_not_serve_fails_the_run_with_its_message(demo_simulator):
    agent = Agent.objects.get(slug="qa_agent")
    unknown = model_version_register(
        agent=agent, provider=ProviderAccount.objects.get(name="simulator"),
        model_id="ft:open-mixtral-8x7b:0badc0de:20261101:0badc0de", base_model="open-mixtral-8x7b", kind="fine_tuned",
    )
    run = run_inline(benchmark_run_create(agent=agent, candidate=unknown))

    assert run.status == "failed" and run.verdict == ""
    assert "ft:open-mixtral-8x7b:0badc0de:20261101:0badc0de" in run.error and "does not serve" in run.error
    assert ModelVersion.objects.get(pk=unknown.pk).status == "registered"  # given back its status


@pytest.mark.django_db
def test_cancel_stops_the_run_and_gives_the_candidate_its_status_back(demo_simulator):
    operator = UserFactory(username="operator", is_superuser=True)
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
    chunks = list(BenchmarkChunk.objects.filter(run=run).order_by("index"))
    benchmark_chunk_execute(chunk_id=chunks[0].pk, worker="w@test")

    benchmark_run_cancel(run=run, actor=operator, reason="wrong suite")
    outcome = benchmark_chunk_execute(chunk_id=chunks[1].pk, worker="w@test")

    run.refresh_from_db()
    assert run.status == "cancelled" and run.cancelled_by == operator and "wrong suite" in run.error
    assert outcome.scored == 0 and BenchmarkResult.objects.filter(run=run).count() == 16
    assert run.cost_usd == BenchmarkResult.objects.filter(run=run).aggregate(t=Sum("cost_usd"))["t"]
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "registered"
    with pytest.raises(Conflict, match="cancelled and cannot become cancelled"):
        benchmark_run_cancel(run=run, actor=operator)


@pytest.mark.django_db
def test_a_candidate_cannot_be_in_two_runs_at_once(demo_simulator):
    agent = Agent.objects.get(slug="qa_agent")
    first = benchmark_run_create(agent=agent)
    with pytest.raises(Conflict, match=f"already being benchmarked by run #{first.pk}"):
        benchmark_run_create(agent=agent, candidate=first.candidate)


@pytest.mark.django_db
def test_the_default_candidate_stays_the_newest_fine_tune_while_it_is_benchmarked(demo_simulator):
    # The API and `benchmark_finetuned` without a candidate: the newest fine-tune, refused naming its run
    # while it is benchmarked — never a quiet fall-back to an older fine-tune, nor "nothing to benchmark".
    agent = Agent.objects.get(slug="support_agent")
    older = agent.versions.get(kind="fine_tuned")
    newer = model_version_register(agent=agent, provider=older.provider, model_id=f"{older.model_id}-v2",
                                   base_model=older.base_model, kind="fine_tuned")
    first = benchmark_run_create(agent=agent)
    assert first.candidate_id == newer.pk
    with pytest.raises(Conflict, match=f"{newer.model_id} is already being benchmarked by run #{first.pk}"):
        benchmark_run_create(agent=agent)
    assert list(BenchmarkRun.objects.filter(agent=agent).values_list("pk", flat=True)) == [first.pk]
    assert ModelVersion.objects.get(pk=older.pk).status == "registered"

    only = Agent.objects.get(slug="qa_agent")  # one fine-tune, in a run
    busy = benchmark_run_create(agent=only)
    with pytest.raises(Conflict, match=f"already being benchmarked by run #{busy.pk}"):
        benchmark_run_create(agent=only)


@pytest.mark.django_db
def test_with_no_fine_tune_to_benchmark_the_refusal_names_no_command_flag(demo_simulator):
    # The same message reaches the API (field `candidate`) and the command (flag `--candidate`).
    agent = Agent.objects.get(slug="qa_agent")
    agent.versions.filter(kind="fine_tuned").update(status="rejected")
    with pytest.raises(Conflict, match="no fine-tuned version to benchmark") as refused:
        benchmark_run_create(agent=agent)
    assert "--" not in refused.value.message and "name the candidate" in refused.value.message


@pytest.mark.django_db
def test_budget_refusal_is_a_conflict_and_an_override_needs_the_permission_and_a_reason(demo_simulator):
    budget_upsert(name="default", amount_usd="0.0001", hard_limit=True)
    agent = Agent.objects.get(slug="qa_agent")
    with pytest.raises(Conflict, match="budget 'default'") as refused:
        benchmark_run_create(agent=agent)
    assert "costs.override_budget" in refused.value.message
    assert not BenchmarkRun.objects.exists()
    assert ModelVersion.objects.filter(agent=agent, kind="fine_tuned").get().status == "registered"

    clerk = UserFactory(username="clerk")
    clerk.user_permissions.add(*_permissions("models_app.add_benchmarkrun"))
    with pytest.raises(PermissionDenied, match="costs.override_budget"):
        benchmark_run_create(agent=agent, actor=_fresh(clerk), budget_override_reason="quarter-end demo")
    boss = UserFactory(username="boss", is_superuser=True)
    run = benchmark_run_create(agent=agent, actor=boss, budget_override_reason="quarter-end demo")
    assert run.budget_override_reason == "quarter-end demo" and run.requested_by == boss


@pytest.mark.django_db
def test_starting_a_run_needs_only_the_run_permission_and_names_the_requester(demo_simulator):
    nobody = UserFactory(username="nobody")
    agent = Agent.objects.get(slug="qa_agent")
    with pytest.raises(PermissionDenied, match="models_app.add_benchmarkrun"):
        benchmark_run_create(agent=agent, actor=nobody)
    analyst = UserFactory(username="analyst")
    analyst.user_permissions.add(*_permissions("models_app.add_benchmarkrun"))
    run = benchmark_run_create(agent=agent, actor=_fresh(analyst), requested_via="admin")
    latest = ModelVersion.objects.get(pk=run.candidate_id).history.order_by("-history_date").first()
    assert latest.status == "benchmarking" and latest.history_change_reason == f"benchmark run #{run.pk} requested by analyst (admin)"


@pytest.mark.django_db
def test_a_chunk_of_a_dead_pool_process_of_the_same_worker_is_taken_over_at_once(demo_simulator):
    import os
    import subprocess
    import sys

    from models_app.benchmarks.runner import worker_identity

    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    chunk = BenchmarkChunk.objects.filter(run=run).first()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    node = "celery@host"
    BenchmarkChunk.objects.filter(pk=chunk.pk).update(status="running", worker=f"{node}#{gone.pid}", heartbeat_at=timezone.now())
    BenchmarkRun.objects.filter(pk=run.pk).update(status="running")
    me = worker_identity(node=node)
    assert me == f"{node}#{os.getpid()}"
    assert benchmark_chunk_claim(chunk_id=chunk.pk, worker=me) is not None  # no need to wait for the heartbeat to age
    assert benchmark_chunk_claim(chunk_id=chunk.pk, worker=f"{node}#{gone.pid}") is None  # a live holder (this process) keeps it


@pytest.mark.django_db
def test_overriding_an_inconclusive_verdict_needs_the_permission_and_a_reason_and_is_recorded(seeded_demo, simulator_factory):
    # The fine-tune always answers right, the base never: two marked cases go to the candidate, and one
    # unmarked case both pass — a +200 % improvement on 3 cases whose interval still touches zero.
    point_demo_provider_at(simulator_factory(quality={"ft:*": 1.0, "*": 0.0}), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    lines = [
        json.dumps({"id": f"m{n}", "messages": [{"role": "user", "content": f"Is {n} even? {format_answer_marker(answer, ['Maybe'])}"}],
                    "reference": answer, "scorer": {"name": "exact"}, "tags": ["marked"]})
        for n, answer in ((2, "Yes"), (3, "No"))
    ] + [json.dumps({"id": "free", "messages": [{"role": "user", "content": "Say anything."}],
                     "scorer": {"name": "length", "min_chars": 1}, "tags": ["free"]})]
    suite = benchmark_suite_import(agent=agent, slug="tiny", lines=lines).suite
    run = run_inline(benchmark_run_create(agent=agent, suite=suite))
    assert run.verdict == "INCONCLUSIVE", run.comparison["reasons"]
    assert run.comparison["more_cases_needed"] >= 1
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    assert candidate.status == "registered"

    reviewer = UserFactory(username="reviewer")
    reviewer.user_permissions.add(*_permissions("models_app.change_modelversion"))
    with pytest.raises(PermissionDenied, match="models_app.override_benchmark_verdict"):
        benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="small suite")
    reviewer.user_permissions.add(*_permissions("models_app.override_benchmark_verdict"))
    with pytest.raises(InvalidInput, match="reason"):
        benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="  ")
    override = benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="3 cases cannot decide; product owner accepts")

    candidate.refresh_from_db()
    assert candidate.status == "approved_for_rollout"
    assert (override.verdict_before, override.candidate_status_before, override.candidate_status_after) == (
        "INCONCLUSIVE", "registered", "approved_for_rollout")
    assert BenchmarkVerdictOverride.objects.get().actor == reviewer
    latest = candidate.history.order_by("-history_date").first()
    assert latest.history_user == reviewer and "overridden" in latest.history_change_reason


@pytest.mark.django_db
def test_llm_judge_cases_ask_the_judge_once_per_reply_and_pay_for_it(seeded_demo, simulator_factory):
    # The judge model answers the marker of its prompt: the rubric carries the verdict it must give.
    server = simulator_factory(quality={"mistral-large-latest": 1.0, "ft:*": 0.85, "*": 0.55})
    point_demo_provider_at(server, rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="support_agent")
    rubric = f"Polite and specific ({uuid.uuid4().hex}). " + format_answer_marker('{"score": 0.75, "reason": "polite"}')
    lines = [json.dumps({"id": "judged", "messages": [{"role": "user", "content": "Apologise for the double charge."}],
                         "scorer": {"name": "llm_judge", "rubric": rubric}, "tags": ["judge"]})]
    suite = benchmark_suite_import(agent=agent, slug="judged", lines=lines).suite

    first = run_inline(benchmark_run_create(agent=agent, suite=suite))
    after_first = chat_requests(server)
    ModelVersion.objects.filter(pk=first.candidate_id).update(status="registered")
    second = run_inline(benchmark_run_create(agent=agent, suite=suite))

    assert after_first == 4  # two models, and the judge once for each reply
    assert chat_requests(server) - after_first == 2  # same replies: the judge's verdicts come from the cache
    for result in BenchmarkResult.objects.filter(run=first):
        assert result.score == 0.75 and "judge mistral-large-latest: polite" in result.reason
        assert result.judge_prompt_tokens > 0 and result.cost_usd > Decimal(0)
    for result in BenchmarkResult.objects.filter(run=second):
        assert result.score == 0.75 and result.judge_prompt_tokens == 0
    assert first.cost_usd > second.cost_usd


# ---- token counts the provider did not report: estimated, and the ledger says so --------------------------------


def _small_suite(agent: Agent, slug: str):
    lines = [json.dumps({"id": f"q{number}", "reference": "Yes", "scorer": {"name": "normalized_match"},
                         "messages": [{"role": "user", "content": f"Is {number} + {number} even? [[answer: Yes | No]]"}]})
             for number in range(3)]
    return benchmark_suite_import(agent=agent, slug=slug, lines=lines).suite


@pytest.mark.django_db
def test_a_provider_without_usage_puts_its_charges_on_the_ledger_marked_estimated(
    seeded_demo, simulator_factory, usage_omitting_factory
):
    from models_app.registry.services import provider_account_upsert

    server = simulator_factory()
    agent = Agent.objects.get(slug="qa_agent")
    suite = _small_suite(agent, "estimated")
    # A vLLM / llama.cpp server that reports no usage: the counts are estimated at ~4 characters a token.
    provider_account_upsert(name="simulator", kind="openai_compatible", base_url=usage_omitting_factory(server).base_url + "/v1",
                            api_key_env="GENESIS_SIMULATOR_API_KEY", rate_limit_per_minute=60_000)
    estimated = run_inline(benchmark_run_create(agent=agent, suite=suite))
    ModelVersion.objects.filter(pk=estimated.candidate_id).update(status="registered")
    # The same models through a provider that reports its usage.
    provider_account_upsert(name="simulator", kind="simulator", base_url=server.base_url,
                            api_key_env="GENESIS_SIMULATOR_API_KEY", rate_limit_per_minute=60_000)
    measured = run_inline(benchmark_run_create(agent=agent, suite=suite))

    assert estimated.status == measured.status == "completed"
    assert_scored_once_and_paid_once(estimated)
    assert_scored_once_and_paid_once(measured)
    results = BenchmarkResult.objects.filter(run=estimated)
    assert results.count() == 6 and all(result.tokens_estimated and result.prompt_tokens > 0 for result in results)
    assert list(ledger_entries(estimated).values_list("tokens_estimated", flat=True)) == [True] * 6
    assert not BenchmarkResult.objects.filter(run=measured, tokens_estimated=True).exists()
    assert list(ledger_entries(measured).values_list("tokens_estimated", flat=True)) == [False] * 6


@pytest.mark.django_db
def test_a_judge_without_usage_marks_the_answers_it_graded_and_their_charges_estimated(
    seeded_demo, simulator_factory, usage_omitting_factory
):
    from models_app.registry.services import provider_account_upsert

    run, models, judge = _judged_run("support_agent", simulator_factory)
    # The models report their usage; the judge's server does not.
    provider_account_upsert(name="judge", kind="openai_compatible", base_url=usage_omitting_factory(judge).base_url + "/v1",
                            api_key_env="GENESIS_SIMULATOR_API_KEY", rate_limit_per_minute=60_000)

    run = run_inline(run)

    assert run.status == "completed", run.error
    results = list(BenchmarkResult.objects.filter(run=run))
    # (Its grades do not matter here: an OpenAI-compatible client strips the simulator's answer markers.)
    assert len(results) == 2 and all(result.judge_prompt_tokens > 0 and result.prompt_tokens > 0 for result in results)
    assert all(result.tokens_estimated for result in results), [result.reason for result in results]
    assert list(ledger_entries(run).values_list("tokens_estimated", flat=True)) == [True, True]


@pytest.mark.django_db
def test_a_kept_answer_stays_marked_estimated_through_the_judges_retry(seeded_demo, simulator_factory, usage_omitting_factory):
    from models_app.registry.services import provider_account_upsert

    run, models, judge = _judged_run("support_agent", simulator_factory)
    # The models' server reports no usage; the judge's does, but fails one round first.
    provider_account_upsert(name="simulator", kind="openai_compatible", base_url=usage_omitting_factory(models).base_url + "/v1",
                            api_key_env="GENESIS_SIMULATOR_API_KEY", rate_limit_per_minute=60_000)
    _fail_every_judge_call_of_one_round(judge)
    benchmark_chunk_execute(chunk_id=BenchmarkChunk.objects.get(run=run).pk, worker="w@test")
    assert [answer.tokens_estimated for answer in BenchmarkUnscoredAnswer.objects.filter(run=run)] == [True, True]

    run = run_inline(run)

    assert run.status == "completed", run.error
    assert [result.tokens_estimated for result in BenchmarkResult.objects.filter(run=run)] == [True, True]
    assert list(ledger_entries(run).values_list("tokens_estimated", flat=True)) == [True, True]


def _permissions(*names: str):
    from django.contrib.auth.models import Permission

    found = []
    for name in names:
        app_label, codename = name.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


def _fresh(user):
    """The user re-read, so its permission cache sees newly granted permissions."""
    return type(user).objects.get(pk=user.pk)


# ---- the shared limits in Redis ---------------------------------------------------------------------------------


@pytest.mark.skipif(not settings.REDIS_URL, reason="the shared limiter lives in Redis (REDIS_URL)")
def test_the_shared_limiter_bounds_calls_in_flight_across_threads():
    client = redis.Redis.from_url(settings.REDIS_URL)
    provider = f"test-{uuid.uuid4().hex[:8]}"
    limiter = RedisProviderLimiter(client, provider=provider, max_concurrency=3, rate_limit_per_minute=None,
                                   lease_seconds=5, wait_limit_seconds=5)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def call() -> None:
        with limiter.slot():
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.03)
            with lock:
                in_flight[0] -= 1

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3


@pytest.mark.skipif(not settings.REDIS_URL, reason="the shared limiter lives in Redis (REDIS_URL)")
def test_the_shared_limiter_paces_calls_and_frees_the_slots_of_dead_holders():
    client = redis.Redis.from_url(settings.REDIS_URL)
    paced = RedisProviderLimiter(client, provider=f"test-{uuid.uuid4().hex[:8]}", max_concurrency=10,
                                 rate_limit_per_minute=1200, lease_seconds=5, wait_limit_seconds=5)
    started = time.monotonic()
    for _ in range(5):
        with paced.slot():
            pass
    assert time.monotonic() - started >= 4 * 0.05 * 0.9  # 1 200 a minute: 50 ms apart

    provider = f"test-{uuid.uuid4().hex[:8]}"
    # Leases of 1.5 s, renewed every 0.5 s: a renewal (or a look at the slots) the machine's load delays
    # by up to a second still lands in time; with 0.3 s leases a delay of 0.2 s would have lost the slot.
    options = dict(provider=provider, max_concurrency=1, rate_limit_per_minute=None, lease_seconds=1.5, wait_limit_seconds=0.1)
    holder = RedisProviderLimiter(client, **options)
    other = RedisProviderLimiter(client, **options)
    with holder.slot():
        time.sleep(2.0)  # longer than the lease: the holder's renewals keep the slot
        with pytest.raises(TransientProviderError, match="shared call slots stayed busy"):
            other._take()
    dead = RedisProviderLimiter(client, **{**options, "sleep": lambda seconds: time.sleep(3600)})  # never renews
    before_the_death = time.monotonic()
    dead._take()  # a holder that died without releasing its slot
    with pytest.raises(TransientProviderError):
        other._take()
    patient = RedisProviderLimiter(client, **{**options, "wait_limit_seconds": 30})
    patient.release(patient._take()[0])  # its lease ran out…
    assert time.monotonic() - before_the_death >= 1.5 * 0.9  # …and not before (measured from before it was taken)


# ---- real Celery workers -------------------------------------------------------------------------------------------


@pytest.mark.worker
def test_a_worker_killed_mid_run_is_replaced_and_every_pair_is_scored_and_paid_once(
    empty_broker, seeded_demo, simulator_factory, start_worker
):
    from models_app.benchmarks.tasks import benchmark_runs_resume

    # Slow enough to kill in the middle: 150 ms a call, two calls at a time, 8 chunks of 8 pairs.
    server = simulator_factory(latency_ms=150)
    point_demo_provider_at(server, rate_limit_per_minute=60_000, max_concurrency=2)
    first = start_worker()
    # legal_agent's 32-case suite: 64 pairs (qa_agent's grew to 48 cases with issue 14).
    run = benchmark_run_create(agent=Agent.objects.get(slug="legal_agent"), parameters={"chunk_size": 8})

    wait_until(lambda: BenchmarkResult.objects.filter(run=run).count() >= 12, timeout=30)
    first.kill()  # SIGKILL, parent and pool: no cleanup, no ack, leases left behind
    scored_at_kill = BenchmarkResult.objects.filter(run=run).count()
    held = list(BenchmarkChunk.objects.filter(run=run, status="running").values_list("worker", flat=True))
    assert 0 < scored_at_kill < run.total_items and held

    start_worker()
    benchmark_runs_resume.delay()  # what beat sends every minute
    run = wait_until(lambda: BenchmarkRun.objects.filter(pk=run.pk, status__in=["completed", "failed"]).first(), timeout=60)

    assert run.status == "completed" and run.verdict == "PASS", run.error
    wait_until(lambda: not BenchmarkResult.objects.filter(run=run, cost_posted_at__isnull=True).exists(), timeout=30)
    assert_scored_once_and_paid_once(run)
    # Only answers in flight or not yet written at the kill can have been asked twice.
    assert chat_requests(server) - run.total_items <= 2 + 8
    assert any("no longer answers" in (error or "") for error in BenchmarkChunk.objects.filter(run=run).values_list("error", flat=True))


@pytest.mark.worker
def test_a_worker_killed_holding_a_chunk_message_it_had_not_claimed_is_replaced_at_once(
    empty_broker, seeded_demo, simulator_factory, start_worker
):
    from genesis.celery import app
    from models_app.benchmarks.tasks import benchmark_chunk_run, benchmark_runs_resume

    point_demo_provider_at(simulator_factory(), rate_limit_per_minute=60_000, max_concurrency=4)
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 96})
    app.control.purge()  # the chunk's own message: this test sends it, with a countdown the worker waits out
    chunk = BenchmarkChunk.objects.get(run=run)
    first = start_worker()

    # Held unacknowledged by the first worker for an hour, as a retry's countdown would be.
    benchmark_chunk_run.apply_async((chunk.pk,), countdown=3600)
    wait_until(lambda: BenchmarkChunk.objects.filter(pk=chunk.pk, received_by=first.name).exists(), timeout=30)
    first.kill()  # SIGKILL: the message stays in Redis, unacknowledged, until the visibility timeout
    assert BenchmarkChunk.objects.filter(pk=chunk.pk, status="queued", attempts=0).exists()

    start_worker()
    benchmark_runs_resume.delay()  # what beat sends every minute; the chunk was enqueued seconds ago
    run = wait_until(lambda: BenchmarkRun.objects.filter(pk=run.pk, status__in=["completed", "failed"]).first(), timeout=60)

    assert run.status == "completed", run.error
    chunk.refresh_from_db()
    assert chunk.attempts == 1 and f"{first.name} received its message and no longer answers" in chunk.error


@pytest.mark.django_db
def test_a_worse_fine_tune_fails_is_rejected_and_only_a_recorded_override_brings_it_back(seeded_demo, simulator_factory):
    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.0, "*": 1.0}), rate_limit_per_minute=60_000)
    run = run_inline(benchmark_run_create(agent=Agent.objects.get(slug="support_agent")))

    assert run.verdict == "FAIL" and run.comparison["candidate_mean"] < run.comparison["baseline_mean"]
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "rejected"
    assert run.comparison["regressions"] and run.comparison["regressions"][0]["delta"] < 0
    with pytest.raises(InvalidInput, match="reason: say why"):
        benchmark_verdict_override(run=run, actor=UserFactory(username="chief", is_superuser=True), reason=" ")
    with pytest.raises(PermissionDenied):
        benchmark_verdict_override(run=run, actor=UserFactory(username="intern"), reason="ship it")
    override = benchmark_verdict_override(run=run, actor=UserFactory(username="chief", is_superuser=True), reason="judged by legal")
    assert (override.verdict_before, override.candidate_status_before, override.candidate_status_after) == (
        "FAIL", "rejected", "approved_for_rollout"
    )
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    assert candidate.status == "approved_for_rollout"
    assert "overridden: judged by legal" in candidate.history.latest().history_change_reason


@pytest.mark.django_db
def test_a_run_holds_its_estimate_until_it_is_finished_and_paid(demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    hold = CostHold.objects.get(source_id=str(run.pk))
    assert (hold.amount_usd, hold.operation, hold.released_at) == (run.estimated_cost_usd, "benchmark", None)

    run = run_inline(run)  # finished, and every result posted to the ledger
    assert run.status == "completed"
    hold.refresh_from_db()
    assert hold.released_at is not None


@pytest.mark.django_db
def test_the_sweep_finishes_a_run_whose_chunks_are_all_done_but_which_was_never_finished(
    demo_simulator, django_capture_on_commit_callbacks
):
    run = run_inline(benchmark_run_create(agent=Agent.objects.get(slug="qa_agent")))
    # As if the worker died between releasing the last chunk and finishing the run.
    BenchmarkRun.objects.filter(pk=run.pk).update(status="running", verdict="", finished_at=None)
    ModelVersion.objects.filter(pk=run.candidate_id).update(status="benchmarking")

    with django_capture_on_commit_callbacks(execute=False):
        benchmark_runs_resume_stalled(live_workers={"alive@test"})

    run.refresh_from_db()
    assert run.status == "completed" and run.finished_at is not None and run.verdict == "PASS"
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"


# ---- the LLM judge failing transiently: only the judge is asked again ---------------------------------------------


def _judged_run(agent_slug: str, simulator_factory):
    """A one-case llm_judge run whose judge has a provider account (and simulator) of its own, so that
    its faults touch only the judge. Returns (run, models' simulator, judge's simulator)."""
    from models_app.registry.services import provider_account_upsert

    models = simulator_factory()
    point_demo_provider_at(models, rate_limit_per_minute=60_000)
    judge = simulator_factory(quality={"mistral-large-latest": 1.0})
    provider_account_upsert(name="judge", kind="simulator", base_url=judge.base_url, api_key_env="GENESIS_SIMULATOR_API_KEY",
                            rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug=agent_slug)
    # A fresh rubric each time: the judge's verdicts are cached in Redis across tests.
    rubric = f"Polite and specific ({uuid.uuid4().hex}). " + format_answer_marker('{"score": 0.75, "reason": "polite"}')
    lines = [json.dumps({"id": "judged", "messages": [{"role": "user", "content": "Apologise for the double charge."}],
                         "scorer": {"name": "llm_judge", "rubric": rubric}})]
    suite = benchmark_suite_import(agent=agent, slug="judged", lines=lines).suite
    run = benchmark_run_create(agent=agent, suite=suite, parameters={"judge_provider": "judge"})
    return run, models, judge


def _fail_every_judge_call_of_one_round(judge) -> int:
    """Returns how many judge requests fail: two replies to judge, each through all its retries."""
    from models_app.benchmarks.runner import CALL_RETRY_POLICY

    failing = 2 * CALL_RETRY_POLICY.max_attempts
    judge.state.queue_faults(*[500] * failing)
    return failing


def price_for_estimate(model: str, base_model: str | None = None):
    from costs.selectors import price_in_force

    return price_in_force(model=model, base_model=base_model)


@pytest.mark.django_db
def test_the_chunk_retry_line_names_the_run_the_chunk_why_and_when(seeded_demo, simulator_factory, caplog):
    """Celery's "retry" line is all an on-call engineer sees of a chunk sent again: it printed
    "Retry in 5.0s" and nothing else (no run, no cause)."""
    import logging

    from models_app.benchmarks.tasks import benchmark_chunk_run

    run, _, judge = _judged_run("support_agent", simulator_factory)
    _fail_every_judge_call_of_one_round(judge)
    chunk = BenchmarkChunk.objects.get(run=run)
    with caplog.at_level(logging.INFO, logger="celery.app.trace"):
        benchmark_chunk_run.apply(args=(chunk.pk,))  # eager: the retry runs at once, and the judge answers then
    [retry] = [r.getMessage() for r in caplog.records if " retry: " in r.getMessage()]
    assert f"benchmark run #{run.pk} chunk {chunk.pk}: 2 pair(s) failed transiently" in retry
    assert "judge" in retry and "retried in 5 s" in retry and "the run fails after" in retry


@pytest.mark.django_db
def test_a_transient_judge_failure_asks_only_the_judge_again_and_every_call_is_paid_once(seeded_demo, simulator_factory):
    from costs.pricing import inference_cost

    run, models, judge = _judged_run("support_agent", simulator_factory)
    failing = _fail_every_judge_call_of_one_round(judge)
    chunk = BenchmarkChunk.objects.get(run=run)

    first_round = benchmark_chunk_execute(chunk_id=chunk.pk, worker="w@test")

    assert first_round.retry_in is not None and "judge" in first_round.error
    assert chat_requests(models) == 2 and not BenchmarkResult.objects.filter(run=run).exists()
    kept = list(BenchmarkUnscoredAnswer.objects.filter(run=run))
    assert len(kept) == 2 and all(answer.output and answer.cost_usd > 0 for answer in kept)

    run = run_inline(run)  # the chunk's retry, as the Celery task would run it

    assert run.status == "completed", run.error
    assert chat_requests(models) == 2  # the models were asked once; their answers were kept
    judge_calls = [status for _, path, status in judge.state.request_log if path == "/v1/chat/completions"]
    assert judge_calls.count(200) == 2 and len(judge_calls) == 2 + failing
    assert not BenchmarkUnscoredAnswer.objects.filter(run=run).exists()
    for result in BenchmarkResult.objects.filter(run=run).select_related("model_version"):
        version = result.model_version
        paid = inference_cost(price=price_for_estimate(version.model_id, version.base_model), input_tokens=result.prompt_tokens,
                              output_tokens=result.completion_tokens) + inference_cost(
            price=price_for_estimate("mistral-large-latest"), input_tokens=result.judge_prompt_tokens,
            output_tokens=result.judge_completion_tokens)
        assert result.score == 0.75 and result.judge_prompt_tokens > 0 and result.cost_usd == paid
    assert_scored_once_and_paid_once(run)


@pytest.mark.django_db
@pytest.mark.parametrize("refused_side", ["baseline", "candidate"])
def test_an_answer_the_judge_refuses_counts_as_the_worst_case_for_the_candidate(refused_side, seeded_demo, simulator_factory):
    run, models, judge = _judged_run("support_agent", simulator_factory)
    # One call at a time, in pair order: the judge grades the baseline's answer first, then the
    # candidate's. A refusal (a content filter, say) is not retried.
    ProviderAccount.objects.filter(name="simulator").update(max_concurrency=1)
    judge.state.queue_faults(*{"baseline": [400], "candidate": [None, 400]}[refused_side])

    run = run_inline(run)

    assert run.status == "completed", run.error
    results = {result.model_version_id: result for result in BenchmarkResult.objects.filter(run=run)}
    refused = results[run.baseline_id if refused_side == "baseline" else run.candidate_id]
    graded = results[run.candidate_id if refused_side == "baseline" else run.baseline_id]
    worst = 1.0 if refused_side == "baseline" else 0.0  # never to the candidate's advantage
    assert refused.score == worst and refused.reason.startswith("not graded: the judge refused it; counted as the worst case")
    assert refused.error.startswith("judge refused:") and refused.cost_usd > 0  # the model's answer was paid
    assert graded.score == 0.75 and not graded.error
    assert run.comparison["n"] == 1  # the pair is compared, not dropped, and the verdict's reasons say how
    assert any(reason.startswith("1 answer(s) the judge refused to grade are compared as the worst case")
               for reason in run.comparison["reasons"])
    assert_scored_once_and_paid_once(run)


@pytest.mark.django_db
def test_a_judge_whose_key_is_refused_fails_the_run_and_what_was_paid_is_kept(seeded_demo, simulator_factory):
    run, models, judge = _judged_run("support_agent", simulator_factory)
    judge.state.queue_faults(401, 401)

    run = run_inline(run)

    assert run.status == "failed" and "the judge cannot be called" in run.error
    results = list(BenchmarkResult.objects.filter(run=run))
    assert results and all(not result.scored and result.error.startswith("judge: ") for result in results)
    assert run.cost_usd == sum(result.cost_usd for result in results) > 0
    assert ledger_entries(run).aggregate(total=Sum("amount_usd"))["total"] == run.cost_usd


@pytest.mark.django_db
def test_answers_kept_for_the_judge_are_still_paid_when_the_run_ends_before_it_answers(seeded_demo, simulator_factory):
    run, models, judge = _judged_run("support_agent", simulator_factory)
    _fail_every_judge_call_of_one_round(judge)
    benchmark_chunk_execute(chunk_id=BenchmarkChunk.objects.get(run=run).pk, worker="w@test")
    kept_cost = sum(answer.cost_usd for answer in BenchmarkUnscoredAnswer.objects.filter(run=run))

    benchmark_run_cancel(run=run, actor=None, reason="judge down")
    benchmark_run_post_all_costs(run_id=run.pk)

    run.refresh_from_db()
    results = BenchmarkResult.objects.filter(run=run)
    assert results.count() == 2 and all(r.error.startswith("not scored") and r.score == 0 for r in results)
    assert not BenchmarkUnscoredAnswer.objects.filter(run=run).exists()
    assert run.cost_usd == kept_cost > 0  # the models' answers were paid: the run says so…
    assert ledger_entries(run).aggregate(total=Sum("amount_usd"))["total"] == kept_cost  # …and so does the ledger
    assert ledger_entries(run).count() == 2


# ---- a run that ends while answers are in flight ---------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["cancel", "fail"])
def test_answers_landing_after_a_run_ended_are_counted_once_in_its_cost_and_on_the_ledger(
    ending, transactional_db, seeded_demo, simulator_factory
):
    from django.db import connection

    from models_app.benchmarks.services import benchmark_run_fail

    # Slow calls, four at a time: whenever the run ends, answers are on their way.
    point_demo_provider_at(simulator_factory(latency_ms=300), rate_limit_per_minute=60_000, max_concurrency=4)
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 96})
    chunk = BenchmarkChunk.objects.get(run=run)

    def worker() -> None:
        try:
            benchmark_chunk_execute(chunk_id=chunk.pk, worker="w@test")
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        wait_until(lambda: BenchmarkResult.objects.filter(run=run).exists(), timeout=30)
        if ending == "cancel":
            ended = benchmark_run_cancel(run=run, actor=None, reason="enough")
        else:
            ended = benchmark_run_fail(run_id=run.pk, error="another chunk failed")
    finally:
        thread.join(timeout=60)
    benchmark_run_post_all_costs(run_id=run.pk)

    run.refresh_from_db()
    results = BenchmarkResult.objects.filter(run=run)
    assert run.status == {"cancel": "cancelled", "fail": "failed"}[ending]
    assert run.cost_usd > ended.cost_usd > 0  # answers landed after the run ended, and their cost was added…
    assert run.cost_usd == results.aggregate(total=Sum("cost_usd"))["total"]  # …once
    entries = ledger_entries(run)
    assert entries.count() == results.count() and entries.aggregate(total=Sum("amount_usd"))["total"] == run.cost_usd
    assert not results.filter(cost_posted_at__isnull=True).exists()


# ---- re-benchmarking an approved candidate --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_non_pass_re_run_of_an_approved_candidate_records_the_verdict_but_does_not_demote_it(
    seeded_demo, simulator_factory, caplog
):
    agent = Agent.objects.get(slug="support_agent")
    point_demo_provider_at(simulator_factory(), rate_limit_per_minute=60_000)
    first = run_inline(benchmark_run_create(agent=agent))
    candidate = ModelVersion.objects.get(pk=first.candidate_id)
    assert first.verdict == "PASS" and candidate.status == "approved_for_rollout"

    # The same candidate, now clearly worse than its baseline.
    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.0, "*": 1.0}), rate_limit_per_minute=60_000)
    second = benchmark_run_create(agent=agent, candidate=candidate)
    assert ModelVersion.objects.get(pk=candidate.pk).status == "approved_for_rollout"  # an experiment may still start it
    with caplog.at_level("WARNING", logger="models_app.benchmarks.services"):
        second = run_inline(second)

    assert second.status == "completed" and second.verdict == "FAIL"
    assert ModelVersion.objects.get(pk=candidate.pk).status == "approved_for_rollout"
    assert second.comparison["candidate_status"] == "approved_for_rollout"
    said = [reason for reason in second.comparison["reasons"] if "stays approved_for_rollout despite this FAIL" in reason]
    assert said and "reject or retire it by hand" in said[0]
    assert any(f"benchmark run #{second.pk}" in r.getMessage() and "does not demote" in r.getMessage() for r in caplog.records)

    reviewer = UserFactory(username="reviewer")
    reviewer.user_permissions.add(*_permissions("models_app.override_benchmark_verdict", "models_app.change_modelversion"))
    with pytest.raises(Conflict, match="already approved_for_rollout; there is nothing to override"):
        benchmark_verdict_override(run=second, actor=_fresh(reviewer), reason="still fine")


@pytest.mark.django_db
def test_an_approved_candidate_can_start_its_experiment_during_a_re_run_which_then_leaves_it_rolling_out(demo_simulator):
    from experiments.services import experiment_create, experiment_start

    agent = Agent.objects.get(slug="content_agent")
    candidate = ModelVersion.objects.get(pk=run_inline(benchmark_run_create(agent=agent)).candidate_id)
    rerun = benchmark_run_create(agent=agent, candidate=candidate)

    experiment_start(experiment=experiment_create(agent=agent, treatment=candidate))  # no override needed
    rerun = run_inline(rerun)

    assert ModelVersion.objects.get(pk=candidate.pk).status == "rolling_out"
    assert any("it was rolling_out when the run finished" in reason for reason in rerun.comparison["reasons"])


# ---- overriding needs the right to change the model version too ---------------------------------------------------


@pytest.mark.django_db
def test_overriding_a_verdict_also_needs_the_permission_to_change_model_versions(seeded_demo, simulator_factory):
    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.0, "*": 1.0}), rate_limit_per_minute=60_000)
    run = run_inline(benchmark_run_create(agent=Agent.objects.get(slug="legal_agent")))
    assert run.verdict == "FAIL"
    reviewer = UserFactory(username="reviewer")
    reviewer.user_permissions.add(*_permissions("models_app.override_benchmark_verdict"))

    with pytest.raises(PermissionDenied, match="may not override benchmark verdicts: it needs the permission 'models_app.change_modelversion'"):
        benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="legal signed it off")
    assert not BenchmarkVerdictOverride.objects.exists()
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "rejected"

    reviewer.user_permissions.add(*_permissions("models_app.change_modelversion"))
    override = benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="legal signed it off")
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    assert candidate.status == "approved_for_rollout" and override.actor == reviewer
    assert candidate.history.latest().history_user == reviewer


# ---- only a PASS against the live version approves (security review, finding 9) --------------------------------------

# The retired base model is weak; the model that replaced it is as good as the fine-tune.
WEAK_RETIRED_BASELINE = {"ft:*": 0.85, "mistral-small-latest": 0.85, "open-mistral-7b": 0.3, "*": 0.55}


def replace_live_model(agent: Agent, model_id: str) -> ModelVersion:
    """A newer base model that replaced the agent's live one, as a completed rollout does (which retires it)."""
    version = model_version_register(agent=agent, provider=ProviderAccount.objects.get(name="simulator"), model_id=model_id,
                                     base_model=model_id, kind="baseline")
    for status in ("benchmarking", "approved_for_rollout", "rolling_out", "live"):
        version = model_version_transition(version=version, to_status=status, reason="test: rolled out")
    return version


@pytest.mark.django_db
def test_a_pass_against_a_retired_baseline_chosen_by_an_agent_key_does_not_approve_the_candidate(
    seeded_demo, simulator_factory, client, api_key_for
):
    """Was: POST /benchmarks/runs {"baseline": "open-mistral-7b"} while it was retired → a PASS against the
    weak old model moved the candidate to approved_for_rollout."""
    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    live = replace_live_model(agent, "mistral-small-latest")
    assert agent.versions.get(model_id="open-mistral-7b").status == "retired"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key_for('qa_agent')}"}

    started = client.post("/api/v1/benchmarks/runs", {"agent": "qa_agent", "baseline": "open-mistral-7b"},
                          content_type="application/json", **auth)
    assert started.status_code == 202, started.content  # comparing with any version stays possible
    run = run_inline(BenchmarkRun.objects.get(pk=started.json()["run"]))

    assert run.verdict == "PASS", run.comparison["reasons"]
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    assert candidate.status == "registered" and run.comparison["candidate_status"] == "registered"
    assert (run.comparison["baseline_live"], run.comparison["baseline_status"]) == (False, "retired")
    note = "PASS against a retired baseline (open-mistral-7b): not an approval"
    said = f"{note} — only a run against the agent's live version (mistral-small-latest) approves a candidate for rollout"
    assert any(reason.startswith(said) for reason in run.comparison["reasons"])
    assert candidate.history.latest().history_change_reason.startswith(f"benchmark run #{run.pk}: {note}")
    assert any(reason.startswith(note) for reason in client.get(f"/api/v1/benchmarks/runs/{run.pk}", **auth).json()["reasons"])

    # The gate proper — against the live model, which the fine-tune does not beat — is the default baseline.
    gate = run_inline(benchmark_run_create(agent=agent))
    assert gate.baseline_id == live.pk and gate.comparison["baseline_live"] is True
    assert gate.verdict in ("FAIL", "INCONCLUSIVE")
    assert ModelVersion.objects.get(pk=candidate.pk).status == {"FAIL": "rejected", "INCONCLUSIVE": "registered"}[gate.verdict]


@pytest.mark.django_db
def test_a_run_whose_baseline_was_replaced_while_it_ran_decides_nothing(seeded_demo, simulator_factory):
    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    run = benchmark_run_create(agent=agent)
    assert run.baseline.model_id == "open-mistral-7b" and run.baseline.status == "live"
    replace_live_model(agent, "mistral-small-latest")  # a rollout completes meanwhile

    run = run_inline(run)

    assert run.verdict == "PASS" and run.comparison["baseline_live"] is False
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "registered"


@pytest.mark.django_db
def test_a_pass_approves_only_while_its_baseline_is_still_the_live_model(seeded_demo, simulator_factory):
    # Second reviewer: a PASS against the live model of then kept reading "approves" on the board and in
    # the Go/No-Go report after another rollout replaced that model.
    from models_app.benchmarks.selectors import run_approves_candidate, run_verdict_note

    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    run = run_inline(benchmark_run_create(agent=agent))
    assert run.verdict == "PASS" and run_approves_candidate(run=run) and run_verdict_note(run=run) == ""
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"

    replace_live_model(agent, "mistral-small-latest")
    run = BenchmarkRun.objects.select_related("baseline").get(pk=run.pk)
    assert not run_approves_candidate(run=run)
    assert run_verdict_note(run=run) == "PASS against a retired baseline (open-mistral-7b): not an approval"
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "registered"  # benchmarked again before a rollout


@pytest.mark.django_db
def test_the_pass_a_candidate_was_launched_on_stays_its_approval(seeded_demo, simulator_factory):
    # UX review: once the candidate's rollout completed (retiring the baseline), the run page, the runs list
    # and the lineage called the PASS it was launched on "not an approval".
    from launch.selectors import model_lineage
    from models_app.benchmarks.selectors import run_approves_candidate, run_verdict_note

    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    run = run_inline(benchmark_run_create(agent=agent))
    assert run.verdict == "PASS"
    for status in ("rolling_out", "live"):  # what a completed rollout does (experiments/services.py)
        model_version_transition(version=run.candidate, to_status=status, reason=f"rollout: {status}")

    run = BenchmarkRun.objects.select_related("baseline", "candidate").get(pk=run.pk)
    assert run.baseline.status == "retired"
    assert run_approves_candidate(run=run) and run_verdict_note(run=run) == ""
    entry = model_lineage(version=run.candidate)["benchmark_runs"][0]
    assert (entry["approves"], entry["note"]) == (True, "")


@pytest.mark.django_db
def test_a_rolled_back_candidates_pass_is_no_approval_once_another_model_replaced_its_baseline(seeded_demo, simulator_factory):
    # Second reviewer: "rolled out after the verdict" was read from any rolling_out entry, so a candidate
    # rolled back kept its PASS "approving" after another model replaced the baseline.
    from models_app.benchmarks.selectors import run_approves_candidate

    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    run = run_inline(benchmark_run_create(agent=agent))
    for status in ("rolling_out", "rejected"):  # started, then rolled back
        model_version_transition(version=run.candidate, to_status=status, reason=f"rollout: {status}")
    replace_live_model(agent, "mistral-small-latest")

    run = BenchmarkRun.objects.select_related("baseline", "candidate").get(pk=run.pk)
    assert not run_approves_candidate(run=run)


@pytest.mark.django_db
def test_a_fail_against_a_version_that_is_not_live_rejects_nothing(seeded_demo, simulator_factory):
    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.3, "*": 0.85}), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="legal_agent")
    other = model_version_register(agent=agent, provider=ProviderAccount.objects.get(name="simulator"),
                                   model_id="mistral-small-latest", base_model="mistral-small-latest", kind="baseline")
    run = run_inline(benchmark_run_create(agent=agent, baseline=other))

    assert run.verdict == "FAIL" and run.comparison["baseline_status"] == "registered"
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "registered"  # not rejected
    assert any(reason.startswith("FAIL against a registered baseline (mistral-small-latest): a comparison, not a decision")
               for reason in run.comparison["reasons"])


@pytest.mark.django_db
def test_the_default_baseline_is_the_live_version_and_an_agent_without_one_must_name_one(seeded_demo):
    from tests.factories import AgentFactory, ModelVersionFactory

    # Was: the newest baseline, whatever its status, when the agent had no live version.
    agent = AgentFactory(slug="new_agent")
    baseline = ModelVersionFactory(agent=agent, kind="baseline", model_id="open-mistral-7b")  # registered, not live
    ModelVersionFactory(agent=agent)
    benchmark_suite_import(agent=agent, slug="core", lines=[json.dumps(
        {"id": "c1", "messages": [{"role": "user", "content": "2+2?"}], "reference": "4", "scorer": {"name": "exact"}})])

    with pytest.raises(Conflict, match="agent 'new_agent' has no live version to benchmark against .* or name a baseline"):
        benchmark_run_create(agent=agent)
    assert benchmark_run_create(agent=agent, baseline=baseline).baseline_id == baseline.pk


@pytest.mark.django_db
def test_a_pass_that_is_not_an_approval_is_said_plainly_and_may_be_overridden(seeded_demo, simulator_factory, client):
    from launch.selectors import launch_facts, model_lineage
    from models_app.management.commands._benchmark_cli import comparison_text, json_object, verdict_note_line

    point_demo_provider_at(simulator_factory(quality=WEAK_RETIRED_BASELINE), rate_limit_per_minute=60_000, max_concurrency=8)
    agent = Agent.objects.get(slug="qa_agent")
    replace_live_model(agent, "mistral-small-latest")
    run = run_inline(benchmark_run_create(agent=agent, baseline=agent.versions.get(model_id="open-mistral-7b")))
    assert run.verdict == "PASS"
    note = "PASS against a retired baseline (open-mistral-7b): not an approval"

    # The commands: the contract's --json keys unchanged, the note in the text and beside the JSON.
    assert set(json_object(run)) == {"run", "verdict", "baseline", "candidate", "relative_improvement", "ci95", "cost_usd", "gate", "error"}
    assert f"  verdict: PASS\n  {note}" in comparison_text(run)
    assert note in verdict_note_line(run)
    # The lineage and the Go/No-Go facts.
    entry = model_lineage(version=run.candidate)["benchmark_runs"][0]
    assert (entry["approves"], entry["baseline_status"], entry["note"]) == (False, "retired", note)
    from launch.report import judge

    facts = launch_facts(agent=agent)
    assert facts["benchmark"]["approves"] is False
    judgement = judge(facts)
    assert judgement.decision == "NO-GO" and any(note in blocker for blocker in judgement.blockers)
    # The admin: the run page says it, and offers the override to who may use it.
    client.force_login(UserFactory(username="root", is_superuser=True))
    page = client.get(f"/admin/models_app/benchmarkrun/{run.pk}/change/").content.decode()
    assert 'id="bm-verdict-note"' in page and note in page and "Override the verdict" in page
    listing = client.get("/admin/models_app/benchmarkrun/").content.decode()
    assert "PASS (not an approval)" in listing

    reviewer = UserFactory(username="reviewer")
    reviewer.user_permissions.add(*_permissions("models_app.override_benchmark_verdict", "models_app.change_modelversion"))
    override = benchmark_verdict_override(run=run, actor=_fresh(reviewer), reason="the live model was a stop-gap")
    assert override.verdict_before == "PASS" and ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"


# ---- a chunk whose task raises gives its lease back ------------------------------------------------------------------


@pytest.mark.worker
def test_a_chunk_whose_task_raises_gives_its_lease_back_at_once(empty_broker, seeded_demo, simulator_factory, start_worker):
    from genesis.celery import app
    from models_app.benchmarks.tasks import benchmark_chunk_run

    point_demo_provider_at(simulator_factory(latency_ms=400), rate_limit_per_minute=60_000, max_concurrency=2)
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 96})
    app.control.purge()  # the chunk's own message: this test sends it, with a soft time limit the task will hit
    chunk = BenchmarkChunk.objects.get(run=run)
    start_worker()

    benchmark_chunk_run.apply_async((chunk.pk,), soft_time_limit=2)

    # Claimed once, then given back once SoftTimeLimitExceeded stopped the task: well before its heartbeat
    # would age (60 s), and with no resume sweep running here.
    released = wait_until(lambda: BenchmarkChunk.objects.filter(pk=chunk.pk, status="queued", attempts=1).first(), timeout=30)
    assert released.lease_token is None and "SoftTimeLimitExceeded" in released.error
    assert released.enqueued_at is None  # nothing retries it: the sweep sends it again at its next pass
    assert benchmark_chunk_claim(chunk_id=chunk.pk, worker="celery@elsewhere#1") is not None


class _RateLimitingForDecades(ThreadingHTTPServer):
    """A provider that answers every chat completion 429 with a Retry-After decades away (an HTTP date)."""

    daemon_threads = True
    RETRY_AFTER = "Wed, 21 Oct 2099 07:28:00 GMT"

    def __init__(self) -> None:
        self.chat_calls = 0
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.chat_calls += 1
                body = b'{"object": "error", "message": "slow down", "type": "rate_limited"}'
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", _RateLimitingForDecades.RETRY_AFTER)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def base_url(self) -> str:
        return url_of(self)


@pytest.mark.django_db
def test_a_retry_after_decades_away_is_capped_and_the_chunk_says_how_many_calls_were_made(seeded_demo):
    from models_app.benchmarks.runner import QUEUED_CHUNK_RESEND_AFTER_SECONDS, chunk_retry_wait_limit

    with serving(_RateLimitingForDecades()) as server:
        point_demo_provider_at(server, rate_limit_per_minute=60_000, max_concurrency=8)
        run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"), parameters={"chunk_size": 16})
        chunk = BenchmarkChunk.objects.filter(run=run).order_by("index").first()
        outcome = benchmark_chunk_execute(chunk_id=chunk.pk, worker="w@test")
    # The countdown the task retries with: below the sweep's resend time and Redis' visibility timeout.
    limit = chunk_retry_wait_limit()
    assert outcome.retry_in == limit
    assert limit < QUEUED_CHUNK_RESEND_AFTER_SECONDS and limit < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert server.chat_calls == 16  # each pair of the chunk asked once: a wait that long is not retried in place
    assert outcome.error.startswith("16 pair(s) failed transiently after 1 attempt each, e.g. provider 'simulator' is "
                                    "rate limiting chat completion (429); retry after")
    assert outcome.error.endswith(f"longer than a chunk waits for its retry: retried in {limit:.0f}s")
    run.refresh_from_db()
    assert run.status == "running" and BenchmarkChunk.objects.get(pk=chunk.pk).status == "queued"
