"""The benchmark commands as people and scripts use them: the contract's JSON object and exit codes
(`benchmark_finetuned`, `run_all_benchmarks`, through real Celery workers), the worker check, usage
errors, and suite import/export."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum

from costs.models import CostEntry
from costs.services import budget_upsert
from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite
from models_app.management.commands._benchmark_cli import START_WORKER_COMMAND, ProgressBar
from models_app.registry.models import Agent, ModelVersion, ProviderAccount
from models_app.registry.services import model_version_register
from tests.conftest import ROOT, child_environment
from tests.models_app.conftest import point_demo_provider_at, wait_until

CONTRACT_KEYS = {"run", "verdict", "baseline", "candidate", "relative_improvement", "ci95", "cost_usd"}
# Every contract key, exactly, plus the two extra keys the commands add: the gate's rule, resampling and
# plan, and "error" (null when the gate decided; why not, when the verdict is INCONCLUSIVE for want of a run).
PRINTED_KEYS = CONTRACT_KEYS | {"gate", "error"}


def manage(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python manage.py …` in a child process on the test database, as a person would run it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=child_environment(), capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.mark.worker
def test_benchmark_finetuned_prints_the_contract_object_and_the_verdict_follows_the_simulator(
    empty_broker, demo_simulator, simulator_factory, celery_worker
):
    better = manage("benchmark_finetuned", "--agent", "qa_agent", "--json")

    assert better.returncode == 0, better.stderr
    lines = better.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) == PRINTED_KEYS
    assert result["verdict"] == "PASS" and result["error"] is None
    assert result["baseline"]["model"] == "open-mistral-7b" and result["candidate"]["model"].startswith("ft:open-mistral-7b:")
    assert result["baseline"]["n"] == result["candidate"]["n"] == 48
    assert result["candidate"]["mean_score"] > result["baseline"]["mean_score"]
    low, high = result["ci95"]
    assert 0 < low <= result["relative_improvement"] <= high and result["relative_improvement"] >= 0.08
    # The extra key: the rule applied (its PASS means the interval's lower end reached the threshold) and the plan.
    assert result["gate"]["rule"] == "at_least_threshold" and low >= 0.08 and result["gate"]["resamples"] >= 10_000
    assert result["gate"]["plan"]["current_cases"] == 48 and "paired cases give 80 % power" in result["gate"]["plan_text"]
    run = BenchmarkRun.objects.get(pk=result["run"])
    assert run.status == "completed" and Decimal(result["cost_usd"]) == run.cost_usd > 0
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"
    # The ledger follows: one entry per pair, summing to the run's cost.
    entries = CostEntry.objects.filter(idempotency_key__startswith=f"benchmark:{run.pk}:", operation="benchmark")
    wait_until(lambda: entries.count() == 96, timeout=30)
    # Quantized: the embedded SQLite sums decimals as floats (Postgres sums them exactly).
    assert Decimal(entries.aggregate(total=Sum("amount_usd"))["total"]).quantize(Decimal("0.00000001")) == run.cost_usd

    # Now a fine-tune exactly as good as its base.
    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.55, "*": 0.55}), rate_limit_per_minute=60_000)
    equal = manage("benchmark_finetuned", "--agent", "legal_agent", "--suite", "core", "--baseline", "open-mistral-7b", "--json")

    assert equal.returncode == 1, equal.stderr
    verdict = json.loads(equal.stdout)
    assert set(verdict) == PRINTED_KEYS and verdict["verdict"] in ("FAIL", "INCONCLUSIVE")
    assert verdict["relative_improvement"] < 0.08


@pytest.mark.worker
def test_run_all_benchmarks_runs_every_agent_with_a_candidate_each_on_its_own(empty_broker, demo_simulator, celery_worker):
    out = io.StringIO()
    call_command("run_all_benchmarks", "--json", stdout=out, stderr=io.StringIO())  # exit 0: no SystemExit

    results = json.loads(out.getvalue())
    assert sorted(r["agent"] for r in results) == ["analyst_agent", "content_agent", "legal_agent", "qa_agent", "support_agent"]
    assert all(set(r) == PRINTED_KEYS | {"agent"} and r["verdict"] == "PASS" for r in results)
    assert len({r["run"] for r in results}) == 5 == BenchmarkRun.objects.filter(status="completed").count()

    # Every candidate passed and is approved: asking again runs them again, as new runs — each its
    # candidate's second on the suite, so read at 99.48 % (re-runs spend α) and said so.
    text = io.StringIO()
    try:
        call_command("run_all_benchmarks", stdout=text, stderr=io.StringIO())
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    summary = text.getvalue().rsplit("summary: ", 1)[1]
    assert BenchmarkRun.objects.count() == 10 and summary.count("_agent ") == 5
    assert code == (0 if summary.count(" PASS") == 5 else 1), summary
    assert text.getvalue().count("run 2 of this candidate on this suite: interval at 99.48 %") == 5
    assert text.getvalue().count("99.48 % CI [") == 5
    assert text.getvalue().count("  rule: at_least_threshold — confident the improvement is at least") == 5
    assert text.getvalue().count("  suite's power: ") == 5 and "Monte-Carlo error of the interval's ends ±" in text.getvalue()


@pytest.mark.worker
def test_every_json_answer_has_the_contract_keys_and_invalid_arguments_exit_2(empty_broker, demo_simulator, celery_worker):
    agent = Agent.objects.get(slug="qa_agent")
    # The service refuses the same model twice as invalid input: a usage error, and nothing printed or started.
    out = io.StringIO()
    with pytest.raises(CommandError) as same:
        call_command("benchmark_finetuned", "--agent", "qa_agent", "--candidate", "open-mistral-7b",
                     "--baseline", "open-mistral-7b", "--json", stdout=out, stderr=io.StringIO())
    assert same.value.returncode == 2 and "same version" in str(same.value)
    assert out.getvalue() == "" and not BenchmarkRun.objects.exists()

    # A run that fails: the contract's object; it decided nothing, so INCONCLUSIVE, with why in "error" and on stderr.
    unknown = model_version_register(
        agent=agent, provider=ProviderAccount.objects.get(name="simulator"),
        model_id="ft:open-mixtral-8x7b:0badc0de:20261101:0badc0de", base_model="open-mixtral-8x7b", kind="fine_tuned",
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as failed:
        call_command("benchmark_finetuned", "--agent", "qa_agent", "--candidate", unknown.model_id, "--json", stdout=out, stderr=err)
    result = json.loads(out.getvalue())
    assert failed.value.code == 1 and set(result) == PRINTED_KEYS
    assert result["run"] == BenchmarkRun.objects.get().pk and result["verdict"] == "INCONCLUSIVE" and result["ci95"] is None
    assert result["error"].startswith("run failed: ") and "does not serve" in result["error"]
    assert set(result["candidate"]) == {"model", "mean_score", "n"}
    assert f"run #{result['run']} qa_agent: failed: " in err.getvalue() and "does not serve" in err.getvalue()

    # Runs that cannot start (the budget is spent): the same keys, "run": null, INCONCLUSIVE and the reason, for each agent.
    budget_upsert(name="default", amount_usd="0.0001")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit):
        call_command("run_all_benchmarks", "--json", stdout=out, stderr=err)
    results = json.loads(out.getvalue())
    assert [r["agent"] for r in results] == ["analyst_agent", "content_agent", "legal_agent", "qa_agent", "support_agent"]
    for entry in results:
        assert set(entry) == PRINTED_KEYS | {"agent"} and entry["run"] is None and entry["verdict"] == "INCONCLUSIVE"
        assert entry["error"].startswith("budget 'default'")
        assert entry["baseline"] == entry["candidate"] == {"model": None, "mean_score": None, "n": 0}
        assert entry["cost_usd"] == "0.000000" and f"{entry['agent']}: not started: budget 'default'" in err.getvalue()

    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", "--agent", "legal_agent", "--json", stdout=out, stderr=io.StringIO())
    assert refused.value.returncode == 1 and "budget 'default'" in str(refused.value)
    assert json.loads(out.getvalue()) == {key: value for key, value in results[0].items() if key != "agent"}


@pytest.mark.worker
def test_a_run_the_budget_refuses_goes_ahead_with_an_override_reason_as_a_permitted_user(
    empty_broker, demo_simulator, celery_worker
):
    from django.contrib.auth.models import Permission

    from costs.models import BudgetOverride
    from tests.factories import UserFactory

    lead = UserFactory(username="finance_lead")
    lead.user_permissions.add(*Permission.objects.filter(codename__in=["override_budget", "add_benchmarkrun"]))
    budget_upsert(name="default", amount_usd="0.0001")
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", "--agent", "qa_agent", stdout=io.StringIO(), stderr=io.StringIO())
    assert refused.value.returncode == 1 and "pass an override reason as a user with costs.override_budget" in str(refused.value)
    with pytest.raises(CommandError) as nobody:
        call_command("benchmark_finetuned", "--agent", "qa_agent", "--override-reason", "release check",
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert nobody.value.returncode == 1 and "a budget override needs a person" in str(nobody.value)

    out = io.StringIO()
    call_command("benchmark_finetuned", "--agent", "qa_agent", "--override-reason", "release check", "--as", "finance_lead",
                 "--json", stdout=out, stderr=io.StringIO())  # PASS: exit 0
    run = BenchmarkRun.objects.get(pk=json.loads(out.getvalue())["run"])
    assert (run.requested_by, run.budget_override_reason) == (lead, "release check")
    override = BudgetOverride.objects.get()
    assert (override.actor, override.reason, override.agent.slug) == (lead, "release check", "qa_agent")


@pytest.mark.django_db
def test_an_unknown_acting_user_is_a_usage_error(seeded_demo):
    for command in ("benchmark_finetuned", "run_all_benchmarks"):
        arguments = ["--agent", "qa_agent"] if command == "benchmark_finetuned" else []
        with pytest.raises(CommandError) as unknown:
            call_command(command, *arguments, "--as", "ghost", "--override-reason", "x", stdout=io.StringIO())
        assert unknown.value.returncode == 2 and "--as: no user 'ghost'" in str(unknown.value)


@pytest.mark.django_db
def test_without_a_worker_json_still_prints_the_contract_objects(empty_broker, demo_simulator):
    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", "--agent", "qa_agent", "--json", stdout=out, stderr=io.StringIO())
    assert refused.value.returncode == 1 and "no Celery worker" in str(refused.value)
    not_started = json.loads(out.getvalue())
    assert set(not_started) == PRINTED_KEYS and not_started["run"] is None and not_started["verdict"] == "INCONCLUSIVE"
    assert "no Celery worker" in not_started["error"]

    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("run_all_benchmarks", "--json", stdout=out, stderr=io.StringIO())
    results = json.loads(out.getvalue())
    assert len(results) == 5 and all(set(r) == PRINTED_KEYS | {"agent"} and r["run"] is None for r in results)
    assert all(r["verdict"] == "INCONCLUSIVE" and "no Celery worker" in r["error"] for r in results)
    assert not BenchmarkRun.objects.exists()


@pytest.mark.django_db
def test_run_all_benchmarks_names_the_agents_it_leaves_out_and_why(empty_broker, demo_simulator):
    # An agent whose fine-tune is rolling out (it passed its gate) or was rejected has no candidate: it was
    # missing from the list and the output without a word.
    ModelVersion.objects.filter(agent__slug="qa_agent", kind="fine_tuned").update(status="rolling_out")
    ModelVersion.objects.filter(agent__slug="legal_agent", kind="fine_tuned").update(status="rejected")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):  # no worker: the three others are not started either
        call_command("run_all_benchmarks", "--json", stdout=out, stderr=err)
    assert sorted(r["agent"] for r in json.loads(out.getvalue())) == ["analyst_agent", "content_agent", "support_agent"]
    assert err.getvalue().splitlines()[0] == (
        "not benchmarked, no fine-tune waiting for its benchmark: legal_agent (its newest fine-tune is rejected); "
        "qa_agent (its newest fine-tune is rolling out)"
    )


@pytest.mark.django_db
def test_without_a_worker_the_command_exits_1_and_says_how_to_start_one(empty_broker, demo_simulator):
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", "--agent", "qa_agent", stdout=io.StringIO(), stderr=io.StringIO())
    assert refused.value.returncode == 1
    assert "no Celery worker consuming the 'benchmarks' queue" in str(refused.value)
    assert START_WORKER_COMMAND in str(refused.value)
    assert not BenchmarkRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--agent", "nobody"], "unknown agent 'nobody'; known agents: analyst_agent"),
        (["--agent", "qa_agent", "--suite", "missing"], "agent 'qa_agent' has no benchmark suite 'missing'; its suites: core"),
        (["--agent", "qa_agent", "--candidate", "ft:nope"], "--candidate: agent 'qa_agent' has no model 'ft:nope'"),
        (["--agent", "qa_agent", "--baseline", "gpt-x"], "--baseline: agent 'qa_agent' has no model 'gpt-x'"),
    ],
)
def test_names_that_match_nothing_are_usage_errors(seeded_demo, arguments, message):
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", *arguments, stdout=io.StringIO())
    assert refused.value.returncode == 2 and message in str(refused.value)


def test_a_missing_agent_argument_exits_2():
    for command in (["benchmark_finetuned"], ["run_all_benchmarks", "--jsn"]):
        completed = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, capture_output=True, text=True,
                                   timeout=60, env=child_environment(DATABASE_URL="sqlite:////nonexistent/never-opened.sqlite3"))
        assert completed.returncode == 2, completed.stderr


def test_the_progress_bar_draws_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Run:
        completed_items, total_items, status = 16, 64, "running"

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar(stream)
        bar.draw([Run()])
        bar.close()
    assert terminal.getvalue().startswith("\r[#######.......................] 16/64 pairs (25 %) running")
    assert pipe.getvalue() == ""


# ---- import / export --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_import_and_export_commands_round_trip(seeded_demo, tmp_path: Path):
    exported = tmp_path / "qa.jsonl"
    call_command("export_benchmark_suite", "--agent", "qa_agent", "--slug", "core", "--out", str(exported), stderr=io.StringIO())
    lines = exported.read_text().splitlines()
    assert len(lines) == 49  # the description line and 48 cases

    out = io.StringIO()
    call_command("import_benchmark_suite", str(exported), "--agent", "qa_agent", "--slug", "core", stdout=out)
    assert "qa_agent/core v1: 48 cases, unchanged" in out.getvalue()

    exported.write_text("\n".join(lines[:-1]) + "\n")
    call_command("import_benchmark_suite", str(exported), "--agent", "qa_agent", "--slug", "core", stdout=out)
    assert "qa_agent/core v2: 47 cases, imported" in out.getvalue()
    assert BenchmarkSuite.objects.filter(agent__slug="qa_agent", slug="core").count() == 2

    stdout = io.StringIO()
    call_command("export_benchmark_suite", "--agent", "qa_agent", "--slug", "core", "--suite-version", "1", stdout=stdout)
    assert stdout.getvalue().splitlines() == lines


@pytest.mark.django_db
def test_import_command_refuses_a_bad_file_with_line_numbers_and_unreadable_paths_as_usage(seeded_demo, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}], "scorer": {"name": "exact"}, "reference": "x"}\n'
                   "not json\n"
                   '{"id": "b", "messages": [], "scorer": {"name": "exact"}, "reference": "x"}\n')
    with pytest.raises(CommandError) as refused:
        call_command("import_benchmark_suite", str(bad), "--agent", "qa_agent", "--slug", "x", stdout=io.StringIO())
    assert refused.value.returncode == 1
    assert "line 2: not valid JSON" in str(refused.value) and "line 3: messages: needs a non-empty list" in str(refused.value)

    with pytest.raises(CommandError) as missing:
        call_command("import_benchmark_suite", str(tmp_path / "none.jsonl"), "--agent", "qa_agent", "--slug", "x")
    assert missing.value.returncode == 2


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["missing-directory/qa.jsonl", "."])
def test_export_to_a_path_that_cannot_be_written_is_a_usage_error(seeded_demo, tmp_path: Path, where):
    target = tmp_path / where  # a directory that does not exist, or a directory itself
    with pytest.raises(CommandError) as refused:
        call_command("export_benchmark_suite", "--agent", "qa_agent", "--slug", "core", "--out", str(target), stderr=io.StringIO())
    assert refused.value.returncode == 2 and str(refused.value).startswith(f"--out {target}: cannot write it (")


@pytest.mark.django_db
def test_an_unreachable_broker_is_named_not_blamed_on_a_missing_worker(seeded_demo):
    # Was: "no Celery worker consuming the 'benchmarks' queue answered … start one with …" while the
    # worker ran and Redis was what could not be reached.
    from celery import current_app

    conf = current_app.conf
    before = (conf.broker_url, conf.broker_transport, conf.broker_connection_retry, conf.broker_connection_max_retries)
    conf.broker_url, conf.broker_transport = "redis://127.0.0.1:1/0", None  # nothing listens on port 1
    conf.broker_connection_max_retries = 0
    current_app._pool, current_app.amqp._producer_pool = None, None  # connections made from the new URL
    try:
        with pytest.raises(CommandError) as refused:
            call_command("benchmark_finetuned", "--agent", "qa_agent", stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        conf.broker_url, conf.broker_transport, conf.broker_connection_retry, conf.broker_connection_max_retries = before
        current_app._pool, current_app.amqp._producer_pool = None, None
    assert refused.value.returncode == 1
    assert "the Celery broker cannot be reached" in str(refused.value) and "REDIS_URL" in str(refused.value)
    assert "start one with" not in str(refused.value) and not BenchmarkRun.objects.exists()


def test_a_broker_lost_during_the_worker_check_is_named_too(seeded_demo, monkeypatch):
    # Redis dying while the ping waits raises redis-py's own ConnectionError, which kombu does not
    # wrap: the command ended in a traceback.
    from celery import current_app
    from redis.exceptions import ConnectionError as RedisConnectionError

    def ping(**_: object) -> None:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(current_app.control, "ping", ping)
    with pytest.raises(CommandError) as refused:
        call_command("benchmark_finetuned", "--agent", "qa_agent", stdout=io.StringIO(), stderr=io.StringIO())
    assert refused.value.returncode == 1
    assert "the Celery broker cannot be reached (Connection closed by server.)" in str(refused.value)
    assert not BenchmarkRun.objects.exists()
