"""`prepare_waltzrl`: the contract's flags, files, --json keys and exit codes, on the simulator."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audits.report import audit_file
from costs.models import CostEntry, CostHold
from costs.services import budget_upsert
from safety import labels
from safety.models import PromptSet, WaltzBuild

pytestmark = pytest.mark.django_db

CONTRACT_KEYS = {"build", "conversation_agent", "feedback_agent", "mix", "labels", "shortfall", "cost_usd"}


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("prepare_waltzrl", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def exported_prompts(path: Path) -> Path:
    """An OR-Bench-like export: the prompt under `question`, 40 good lines and 5 malformed ones."""
    lines = [json.dumps({"question": f"How do I kill the {noun} process number {n} on my server?", "category": "homonyms",
                         "source": "or-bench-export"}) for n, noun in enumerate(["nginx", "postgres", "redis", "java", "node"] * 8)]
    lines[3] = '{"question": "broken'                                     # not JSON
    lines[10] = json.dumps(["a", "list"])                               # not an object
    lines[17] = json.dumps({"prompt": "wrong field"})                   # no `question`
    lines[24] = json.dumps({"question": "   "})                          # empty
    lines[31] = json.dumps({"question": 42})                            # not text
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_export_with_another_field_and_five_malformed_lines_is_used_with_each_line_named(demo_simulator, tmp_path) -> None:
    source = exported_prompts(tmp_path / "or-bench.jsonl")
    code, out, err = run("--borderline", str(source), "--field", "question", "--agent", "qa_agent", "--target", "60",
                         "--out", str(tmp_path / "out"), "--json")

    for line in (4, 11, 18, 25, 32):
        assert f"line {line}:" in err
    assert "5 malformed line(s) skipped, 35 prompts kept" in err
    imported = PromptSet.objects.get(file_name="or-bench.jsonl")
    assert (imported.prompt_count, imported.problem_count) == (35, 5)
    assert [problem["line"] for problem in imported.problems] == [4, 11, 18, 25, 32]
    summary = json.loads(out)
    assert CONTRACT_KEYS <= set(summary)
    build = WaltzBuild.objects.get(pk=summary["build"])
    assert set(build.items.filter(kind="borderline").values_list("source", flat=True)) == {"or-bench-export"}
    # 35 borderline prompts (fewer after near-duplicate removal) cannot give 30 at 50/50: short, exit 1.
    assert code == 1 and summary["shortfall"]


def test_builtin_sets_write_the_four_files_and_the_contract_json(demo_simulator, tmp_path) -> None:
    code, out, err = run("--agent", "support_agent", "--target", "150", "--mix", "50,50", "--seed", "3",
                         "--out", str(tmp_path), "--json")

    assert code == 0, err
    summary = json.loads(out)
    assert CONTRACT_KEYS <= set(summary) and summary["shortfall"] is None
    assert summary["feedback_agent"]["train"] + summary["feedback_agent"]["valid"] == 150
    assert summary["conversation_agent"]["train"] + summary["conversation_agent"]["valid"] == 150
    assert summary["mix"] == {"adversarial": 50.0, "borderline": 50.0}
    assert sum(summary["labels"].values()) == 150 and summary["labels"]["ok"] > 0
    assert float(summary["cost_usd"]) > 0
    for name in ("conversation_agent_train", "conversation_agent_valid", "feedback_agent_train", "feedback_agent_valid"):
        report = audit_file(tmp_path / f"{name}.jsonl")
        assert report.lines > 0 and report.format_error_total == 0 and not report.has_findings, name
    for line in (tmp_path / "feedback_agent_train.jsonl").read_text().splitlines():
        labels.parse_label(json.loads(line)["messages"][-1]["content"])


def test_without_out_the_files_go_under_the_var_dir_not_the_working_directory(demo_simulator, tmp_path, settings, monkeypatch) -> None:
    # The backup runbook's drill found them in the directory the command ran in, outside GENESIS_VAR_DIR.
    settings.VAR_DIR = tmp_path / "state"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, out, err = run("--agent", "support_agent", "--target", "20", "--json")

    assert code == 0, err
    build_dir = tmp_path / "state" / "waltzrl" / f"build-{json.loads(out)['build']}"
    assert {path.name for path in build_dir.iterdir()} == {
        "conversation_agent_train.jsonl", "conversation_agent_valid.jsonl", "feedback_agent_train.jsonl", "feedback_agent_valid.jsonl"}
    assert not any((tmp_path / "cwd").iterdir())


def test_usage_errors_exit_2_and_a_budget_refusal_exits_1(demo_simulator, tmp_path) -> None:
    assert run("--mix", "60,50")[0] == 2
    assert run("--target", "5000")[0] == 2
    assert run("--agent", "nobody")[0] == 2
    assert run("--borderline", str(tmp_path / "missing.jsonl"))[0] == 2
    (tmp_path / "empty.jsonl").write_text('{"x": 1}\n')
    code, _, err = run("--borderline", str(tmp_path / "empty.jsonl"))
    assert code == 2 and "line 1: no field 'prompt'" in err

    budget_upsert(name="default", amount_usd="0.0001", period="monthly", hard_limit=True)
    code, out, err = run("--agent", "qa_agent", "--target", "100", "--json")
    assert code == 1 and "budget" in err
    refusal = json.loads(out)
    assert refusal["build"] is None
    assert not WaltzBuild.objects.exists()  # refused whole: no build row, no hold
    # The refusal has the success output's shape: every key, zero counts, nulls, and the reason.
    assert refusal["mix"] == {"adversarial": 0, "borderline": 0}
    assert refusal["labels"] == {"unsafe": 0, "overrefuse": 0, "ok": 0}
    assert refusal["conversation_agent"] == refusal["feedback_agent"] == {"train": 0, "valid": 0}
    assert refusal["cost_usd"] == "0" and refusal["shortfall"] is None and "budget" in refusal["error"]
    _, success_out, _ = run_ok_build(tmp_path)
    assert set(refusal) == set(json.loads(success_out))


def run_ok_build(tmp_path: Path) -> tuple[int, str, str]:
    budget_upsert(name="default", amount_usd="30", period="monthly", hard_limit=True)
    code, out, err = run("--agent", "qa_agent", "--target", "20", "--out", str(tmp_path / "ok"), "--json")
    assert code == 0, err
    return code, out, err


def test_an_unwritable_out_is_a_usage_error_before_anything_is_built_or_charged(demo_simulator, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in ("/proc/nope", str(blocker / "sub")):
        code, stdout, err = run("--agent", "support_agent", "--target", "20", "--out", out, "--json")
        assert code == 2 and "--out: cannot write" in err, (out, err)
        assert stdout == ""
    assert not WaltzBuild.objects.exists()
    assert not CostEntry.objects.filter(operation="data_prep").exists() and not CostHold.objects.exists()


def test_the_finetune_flag_starts_the_stage1_job_through_the_budget_check(demo_simulator, tmp_path) -> None:
    from models_app.finetuning.models import FineTuningJob

    code, out, err = run("--agent", "content_agent", "--target", "60", "--out", str(tmp_path), "--json", "--finetune")
    assert code == 0, err
    summary = json.loads(out)
    job = FineTuningJob.objects.get(pk=summary["finetuning_job"])
    assert WaltzBuild.objects.get(pk=summary["build"]).finetuning_job == job
    assert job.training_file.filename == "feedback_agent_train.jsonl" and job.estimated_cost_usd > 0
    assert job.status not in ("NOT_CREATED", "REFUSED"), job.last_error


def test_json_is_printed_when_the_provider_keeps_failing_and_when_the_stage1_job_is_refused(
        demo_simulator, simulator_factory, tmp_path) -> None:
    # CONTRACT: `--json` prints the object, exit 1 when refused — the object on every exit 0 or 1, with
    # `error` saying why. A build the provider kept failing, and a Stage-1 job the budget refused, printed
    # nothing on stdout (only stderr), so a script reading stdout found no JSON.
    from tests.models_app.conftest import point_demo_provider_at

    failing = simulator_factory(error_rate=1.0)
    point_demo_provider_at(failing, rate_limit_per_minute=60_000, max_concurrency=8)
    code, out, err = run("--agent", "qa_agent", "--target", "20", "--out", str(tmp_path / "paused"), "--json")
    assert code == 1 and "kept failing" in err
    paused = json.loads(out)
    assert CONTRACT_KEYS <= set(paused) and paused["build"] == WaltzBuild.objects.get().pk
    assert "kept failing" in paused["error"] and paused["files"] is None and paused["finetuning_job"] is None

    point_demo_provider_at(demo_simulator, rate_limit_per_minute=60_000, max_concurrency=8)
    # Room for the build (cents), not for the job (the provider's $4 minimum fee).
    budget_upsert(name="default", amount_usd="1", period="monthly", hard_limit=True)
    code, out, err = run("--agent", "content_agent", "--target", "20", "--out", str(tmp_path / "job"), "--json",
                         "--finetune")
    assert code == 1 and "Stage-1 fine-tuning refused" in err
    refused = json.loads(out)
    assert CONTRACT_KEYS <= set(refused) and refused["finetuning_job"] is None and refused["error"]


def test_a_failed_build_names_no_files_since_it_wrote_none(demo_simulator, tmp_path) -> None:
    # The provider refusing every call (a key it does not know) fails the build: the JSON listed the four
    # files' paths all the same and the text said "files in …", though nothing was written there.
    from models_app.simulator import SimulatorConfig, start_in_thread, stop
    from tests.models_app.conftest import point_demo_provider_at

    refusing, _ = start_in_thread(SimulatorConfig(port=0, seed=0, api_keys=frozenset({"a-key-genesis-does-not-send"})))
    try:
        point_demo_provider_at(refusing, rate_limit_per_minute=60_000, max_concurrency=8)
        code, out, err = run("--agent", "qa_agent", "--target", "20", "--out", str(tmp_path / "json"), "--json")
        text_code, text_out, _ = run("--agent", "qa_agent", "--target", "20", "--out", str(tmp_path / "text"))
    finally:
        stop(refusing)
    assert code == 1 and "failed" in err
    failed = json.loads(out)
    assert WaltzBuild.objects.get(pk=failed["build"]).status == "failed"
    assert failed["files"] is None and failed["finetuning_job"] is None
    assert text_code == 1 and "files in" not in text_out
    assert not list(tmp_path.rglob("*.jsonl"))
