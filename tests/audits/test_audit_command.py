"""`manage.py audit_dataset` on real files, as the contract writes it: `--json` prints one object
with lines, valid, format_errors (line, detail), pii (seven types), duplicates (exact, near) and
difficulty (easy, medium, hard); exit 0 clean, 1 findings, 2 unreadable or a usage error. Run both
as a subprocess (what people and scripts do; no database, no worker) and through call_command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audits.pii import PII_TYPES
from audits.report import audit_file
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines
from tests.audits.test_models_services import mixed_lines

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = {"lines", "valid", "format_errors", "pii", "duplicates", "difficulty"}


def run_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # No database reachable at all: the command must not need one.
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/none"
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", "audit_dataset", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def run_command(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of call_command, mapping its exceptions to the exit codes."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_dataset", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), out.getvalue(), err.getvalue()
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


def clean_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "clean.jsonl", mixed_lines(easy=6, medium=3, hard=1))


def planted_file(tmp_path: Path) -> Path:
    lines = [chat_line(sentence_with(value)) for values in PLANTED.values() for value in values]
    lines += [chat_line("How are you today?", "Fine, thanks.")] * 3  # a group of three: 2 exact duplicates
    lines.append('{"messages": [{"role": "bot", "content": "hi"}]}')
    return write_lines(tmp_path / "planted.jsonl", lines)


def assert_contract_shape(result: dict[str, Any]) -> None:
    assert CONTRACT_KEYS <= set(result)
    assert isinstance(result["lines"], int) and isinstance(result["valid"], int)
    assert all(set(error) == {"line", "detail"} and isinstance(error["line"], int) for error in result["format_errors"])
    assert list(result["pii"]) == ["email", "phone", "credit_card", "iban", "ip_address", "ssn", "api_key"]
    assert all(isinstance(count, int) for count in result["pii"].values())
    assert set(result["duplicates"]) == {"exact", "near"}
    assert set(result["difficulty"]) == {"easy", "medium", "hard"}
    assert all(0 <= share <= 1 for share in result["difficulty"].values())


# --- every kind of file, both ways ----------------------------------------------------------------------


def planted_count() -> int:
    return sum(len(values) for values in PLANTED.values())


def write_case(tmp_path: Path, name: str) -> Path:
    if name == "clean":
        return clean_file(tmp_path)
    if name == "planted":
        return planted_file(tmp_path)
    contents = {
        "empty": b"",
        "non_utf8": chat_line("fine").encode() + b"\n" + chat_line("caf\u00e9").encode().replace("\u00e9".encode(), b"\xe9") + b"\n",
        "truncated_last_line": (chat_line("fine") + "\n" + chat_line("cut off")[:30]).encode(),
        "json_not_objects": b'[1, 2]\n"text"\n42\nnull\n' + chat_line("ok").encode() + b"\n",
    }
    path = tmp_path / f"{name}.jsonl"
    if name != "missing":
        path.write_bytes(contents[name])
    return path


def check_case(name: str, result: dict[str, Any]) -> None:
    errors = result["format_errors"]
    if name == "clean":
        assert (result["lines"], result["valid"], errors) == (10, 10, [])
        assert result["pii"] == dict.fromkeys(PII_TYPES, 0) and result["duplicates"] == {"exact": 0, "near": 0}
        assert result["difficulty"] == {"easy": 0.6, "medium": 0.3, "hard": 0.1}
    elif name == "planted":
        planted = planted_count()
        assert (result["lines"], result["valid"]) == (planted + 4, planted + 3)
        assert errors == [{"line": planted + 4, "detail": f"line {planted + 4}: messages[0].role is a 3-character string, not one of system, user, assistant, tool"}]
        assert result["pii"] == {t: len(PLANTED[t]) for t in PII_TYPES}
        assert result["duplicates"] == {"exact": 2, "near": 0}
    elif name == "empty":
        assert result["lines"] == 0 and errors == [{"line": 0, "detail": "the file is empty: it has no lines, so no examples to train on"}]
    elif name == "non_utf8":
        assert [e["line"] for e in errors] == [2] and "not valid UTF-8 (byte 0xe9" in errors[0]["detail"]
    elif name == "truncated_last_line":
        assert [e["line"] for e in errors] == [2] and result["valid"] == 1
        assert "the last line looks truncated" in errors[0]["detail"]
    elif name == "json_not_objects":
        assert [e["line"] for e in errors] == [1, 2, 3, 4] and result["valid"] == 1
        assert all(e["detail"].startswith(f"line {e['line']}: ") for e in errors)


CASES = {"clean": 0, "planted": 1, "missing": 2, "empty": 1, "non_utf8": 1, "truncated_last_line": 1, "json_not_objects": 1}


@pytest.mark.parametrize("how", ["subprocess", "call_command"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_kind_of_file_gets_its_exit_code_and_a_contract_object(tmp_path, name, how):
    path = write_case(tmp_path, name)
    if how == "subprocess":
        done = run_subprocess(str(path), "--json")
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err = run_command(str(path), "--json")
    assert code == CASES[name], err
    if name == "missing":
        assert out == "" and f"cannot read {path}: No such file or directory" in err
        return
    assert len(out.strip().splitlines()) == 1  # one JSON object
    result = json.loads(out)
    assert_contract_shape(result)
    check_case(name, result)
    assert {key: result[key] for key in CONTRACT_KEYS} == {
        key: value for key, value in audit_file(path).to_contract_dict().items() if key in CONTRACT_KEYS}


def test_the_summary_and_the_json_hold_masked_samples_never_raw_pii(tmp_path):
    path = planted_file(tmp_path)
    as_json = run_subprocess(str(path), "--json")
    as_text = run_subprocess(str(path))
    assert as_text.returncode == 1
    assert "Findings: format errors, PII, duplicates (exit 1)" in as_text.stdout
    assert "j***@e***.com (line 1)" in as_text.stdout and f"line {planted_count() + 4}: messages[0].role" in as_text.stdout
    for values in PLANTED.values():
        for value in values:
            assert value not in as_json.stdout and json.dumps(value)[1:-1] not in as_json.stdout and value not in as_text.stdout
    code, clean_text, _ = run_command(str(clean_file(tmp_path)))
    assert code == 0 and clean_text.rstrip().endswith("Clean: no format errors, PII or duplicates (exit 0)")


def test_usage_errors_exit_2_from_the_command_line(tmp_path):
    bad_mix = run_subprocess(str(clean_file(tmp_path)), "--rebalance", str(tmp_path / "r.jsonl"), "--mix", "30,45")
    assert bad_mix.returncode == 2 and "add up to 100, e.g. 30,45,25; got '30,45'" in bad_mix.stderr
    assert not (tmp_path / "r.jsonl").exists()
    unknown_flag = run_subprocess(str(clean_file(tmp_path)), "--jsn")
    assert unknown_flag.returncode == 2 and "unrecognized arguments: --jsn" in unknown_flag.stderr


def test_directory_and_usage_errors_exit_2(tmp_path):
    clean = str(clean_file(tmp_path))
    cases = {
        (str(tmp_path),): "Is a directory",
        (clean, "--mix", "30,45,25"): "--mix goes with --rebalance OUT",
        (clean, "--rebalance", str(tmp_path / "r.jsonl"), "--mix", "a,b,c"): "got 'a,b,c'",
        (clean, "--scrub", clean): "that is the file being audited",
        (clean, "--scrub", str(tmp_path / "missing-dir" / "s.jsonl")): "does not exist",
        (clean, "--near-threshold", "0"): "--near-threshold: near-duplicate threshold must be between 0.3 and 1, got 0",
        (clean, "--agent", "qa_agent"): "--agent only mean something with --record",
        # Flags that would be ignored, as --mix would be: each named.
        (clean, "--seed", "3"): "--seed goes with --rebalance OUT",
        (clean, "--target-size", "10"): "--target-size goes with --rebalance OUT",
        (clean, "--scrub-mode", "pseudonym"): "--scrub-mode goes with --scrub OUT",
        (clean, "--rebalance", str(tmp_path / "r.jsonl"), "--scrub-mode", "pseudonym"): "--scrub-mode goes with --scrub OUT",
        (clean, "--workers", "0"): "--workers must be at least 1 (got 0)",
        (clean, "--workers", "-1"): "--workers must be at least 1 (got -1)",
    }
    for args, message in cases.items():
        code, out, err = run_command(*args)
        assert (code, out) == (2, ""), args
        assert message in err, (args, err)


def test_scrub_writes_a_copy_whose_audit_is_clean(tmp_path):
    from faker import Faker

    fake = Faker()
    fake.seed_instance(3)
    # Distinct prose around each value, or the scrubbed lines would be near duplicates of each other.
    lines = [chat_line(f"{fake.paragraph(nb_sentences=4)} {sentence_with(value)}") for values in PLANTED.values() for value in values]
    source = write_lines(tmp_path / "pii.jsonl", lines)
    out = tmp_path / "scrubbed.jsonl"
    code, stdout, _ = run_command(str(source), "--json", "--scrub", str(out), "--scrub-mode", "pseudonym")
    assert code == 1  # the input has PII
    result = json.loads(stdout)
    assert result["scrub"]["replaced"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    assert result["scrub"]["mode"] == "pseudonym" and result["scrub"]["lines"] == len(lines)
    code, stdout, _ = run_command(str(out), "--json")
    assert code == 0 and json.loads(stdout)["pii"] == dict.fromkeys(PII_TYPES, 0)


def test_rebalance_reports_the_mix_it_wrote_and_the_shortfall(tmp_path):
    source = write_lines(tmp_path / "mix.jsonl", mixed_lines(easy=20, medium=12, hard=2))
    out = tmp_path / "balanced.jsonl"
    code, stdout, _ = run_command(str(source), "--rebalance", str(out), "--mix", "30,45,25", "--seed", "5")
    assert code == 0
    assert f"Rebalanced copy: {out} — " in stdout
    assert "shortfall: 2 hard examples: 7 more needed (target 25% of 34)" in stdout
    assert "— 8 examples, each once; achieved easy 25.0% · medium 50.0% · hard 25.0%" in stdout
    code, stdout, _ = run_command(str(source), "--json", "--rebalance", str(out))
    plan = json.loads(stdout)["rebalance"]
    code, balanced, _ = run_command(str(out), "--json")
    assert json.loads(balanced)["difficulty"] == plan["achieved_mix"]
    assert json.loads(balanced)["lines"] == plan["lines_written"] == plan["output_size"]
    assert json.loads(balanced)["duplicates"] == {"exact": 0, "near": 0} and code == 0


@pytest.mark.django_db
def test_record_keeps_the_dataset_and_its_audit(tmp_path, settings):
    from audits.models import AuditRun
    from tests.factories import AgentFactory, UserFactory

    settings.MEDIA_ROOT = tmp_path / "media"
    AgentFactory(slug="qa_agent")
    UserFactory(username="ana", is_superuser=True)
    code, stdout, _ = run_command(str(planted_file(tmp_path)), "--json", "--record", "--agent", "qa_agent", "--purpose", "validation", "--as", "ana")
    assert code == 1
    recorded = json.loads(stdout)["recorded"]
    run = AuditRun.objects.select_related("dataset__agent", "dataset__uploaded_by").get(pk=recorded["audit_run"])
    assert (run.status, run.dataset_id, run.dataset.agent.slug, run.dataset.purpose, run.dataset.uploaded_by.username) == (
        "succeeded", recorded["dataset"], "qa_agent", "validation", "ana")
    assert run.report["pii"] == json.loads(stdout)["pii"]
    assert (tmp_path / "media" / run.dataset.file.name).read_bytes() == (tmp_path / "planted.jsonl").read_bytes()
    code, _, err = run_command(str(planted_file(tmp_path)), "--record", "--agent", "nobody")
    assert code == 2 and "--agent: unknown agent 'nobody'; known agents: qa_agent" in err
    code, _, err = run_command(str(planted_file(tmp_path)), "--record", "--as", "ghost")
    assert code == 2 and "--as: no user 'ghost'" in err


@pytest.mark.django_db
def test_record_checks_agent_and_user_before_writing_anything(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    scrubbed, rebalanced = tmp_path / "scrubbed.jsonl", tmp_path / "rebalanced.jsonl"
    for flags in (("--agent", "nobody"), ("--as", "ghost")):
        code, stdout, _ = run_command(str(planted_file(tmp_path)), "--record", *flags, "--scrub", str(scrubbed), "--rebalance", str(rebalanced))
        assert code == 2 and stdout == ""
        assert not scrubbed.exists() and not rebalanced.exists()


def test_an_unpaired_surrogate_is_a_finding_not_a_traceback(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"messages":[{"role":"user","content":"hi \\ud800 there"},{"role":"assistant","content":"ok"}]}\n')
    finished = run_subprocess(str(path), "--json", "--scrub", str(tmp_path / "s.jsonl"), "--rebalance", str(tmp_path / "r.jsonl"))
    assert finished.returncode == 1 and "Traceback" not in finished.stderr, finished.stderr
    result = json.loads(finished.stdout)
    assert result["format_errors"][0]["detail"].startswith("line 1: messages[0].content contains an unpaired UTF-16 surrogate")


def test_the_json_and_the_summary_count_every_problem_of_a_line(tmp_path):
    middle = [{"role": "bot", "content": f"hi {n}"} for n in range(12)]
    line = json.dumps({"messages": [{"role": "user", "content": "Hello?"}, *middle, {"role": "assistant", "content": "Hi."}]})
    path = write_lines(tmp_path / "many.jsonl", [chat_line("How are you?"), line])
    code, stdout, _ = run_command(str(path), "--json")
    result = json.loads(stdout)
    assert code == 1 and result["format_errors_total"] == 12
    assert 0 < len(result["format_errors"]) < 12 and {error["line"] for error in result["format_errors"]} == {2}
    code, stdout, _ = run_command(str(path))
    assert code == 1 and f"Format errors: 12 (first {len(result['format_errors'])})" in stdout
