"""`manage.py launch_report`: per-agent Go/No-Go from real benchmark runs and the ledger; exit 0 when
every agent with a candidate is GO, 1 otherwise, 2 usage."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent
from tests.conftest import ROOT, child_environment
from tests.factories import UserFactory
from tests.models_app.conftest import demo_simulator, simulator_factory  # noqa: F401
from tests.models_app.test_gate_runs import run_to_the_end

pytestmark = pytest.mark.django_db


def launch_report(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("launch_report", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), out.getvalue(), err.getvalue()
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def test_a_passed_candidate_is_go_and_the_numbers_match_the_run_and_the_ledger(demo_simulator, tmp_path):  # noqa: F811
    root = UserFactory(username="root", is_superuser=True)
    run = run_to_the_end(benchmark_run_create(agent=Agent.objects.get(slug="support_agent"), actor=root))
    assert run.verdict == "PASS"

    code, out, _ = launch_report("--agent", "support_agent", "--format", "json")
    assert code == 0
    entry = json.loads(out)["agents"][0]
    assert entry["recommendation"] == "GO" and entry["benchmark"]["run"] == run.pk
    assert entry["benchmark"]["relative_improvement"] == run.comparison["relative_improvement"]
    assert entry["benchmark"]["suite_cases"] == 32 and entry["benchmark"]["n"] == run.comparison["n"]
    assert Decimal(entry["cost_usd"]) == run.cost_usd > 0  # the run is all this candidate has cost
    # The suite's power is the one the gate stored with the run, not recomputed.
    stored = run.comparison["plan"]
    assert entry["benchmark"]["plan"] == stored and entry["benchmark"]["rule"] == run.comparison["rule"]
    assert entry["benchmark"]["power"] == stored["current_power"] is not None

    code, out, err = launch_report("--format", "md")  # the other four are not benchmarked
    assert code == 1 and "NO-GO: analyst_agent, content_agent, legal_agent, qa_agent" in err
    assert "## support_agent" in out and "**Recommendation: GO**" in out and "1 of 5 agent(s) with a candidate are GO" in out
    assert f"power {stored['current_power'] * 100:.0f} % with {stored['current_cases']} cases" in out
    if stored["cases_needed"] is not None:
        assert f"{stored['cases_needed']} cases needed for 80 % power" in out

    target = tmp_path / "report.html"
    code, out, _ = launch_report("--agent", "support_agent", "--format", "html", "--out", str(target))
    assert code == 0 and "support_agent GO" in out and "<h2>support_agent</h2>" in target.read_text()


def test_a_rollout_started_over_a_missing_pass_names_the_override_who_gave_it_and_why(db):
    # Was: the report said "Rollout: … running at 10 %" with no word of the override.
    from experiments.services import experiment_start_for_agent
    from tests.experiments.factories import agent_with_candidate, person

    agent, _, candidate = agent_with_candidate("qa_agent", candidate_status="registered")
    operator = person("olivia", "add_experiment", "start_experiment", "override_verdict")
    experiment_start_for_agent(agent=agent, actor=operator, override_reason="hotfix for the refund bug; benchmark tomorrow")

    code, out, _ = launch_report("--agent", "qa_agent", "--format", "json")
    override = json.loads(out)["agents"][0]["rollout"]["verdict_override"]
    assert (override["by"], override["reason"]) == ("olivia", "hotfix for the refund bug; benchmark tomorrow")
    code, out, _ = launch_report("--agent", "qa_agent", "--format", "md")
    assert ("running at 10 %; started without a PASS verdict — overridden by olivia: “hotfix for the refund bug; "
            "benchmark tomorrow”") in out
    assert out.count("overridden by olivia") == 2  # the rollout line and the reasons (a caution)
    assert "overridden by olivia" in launch_report("--agent", "qa_agent", "--format", "html")[1]


def test_usage_errors_exit_2(seeded_demo, tmp_path):
    code, _, err = launch_report("--agent", "nobody")
    assert code == 2 and "unknown agent 'nobody'; known agents: analyst_agent, " in err
    code, _, err = launch_report("--out", str(tmp_path / "missing" / "r.md"))
    assert code == 2 and "cannot write" in err


def test_bad_format_exits_2_from_the_command_line():
    result = subprocess.run([sys.executable, "manage.py", "launch_report", "--format", "pdf"], cwd=ROOT,
                            env=child_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice" in result.stderr
