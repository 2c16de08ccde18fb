"""ops/prometheus: the rules load (`promtool check rules`) and behave as their unit tests say
(`promtool test rules`: every rule firing and not firing, an idle agent included); every rule carries
a severity, a summary, a description and a runbook; and no rule goes without a test."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.ops.tools import tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = tool("promtool", "prometheus")


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_broken_expectation_fails_the_unit_tests(tmp_path) -> None:
    # The unit tests can fail: the same file expecting qa_agent's error alert for content_agent does.
    broken = RULE_TESTS.read_text().replace("exp_labels: {severity: warning, agent: qa_agent}", "exp_labels: {severity: warning, agent: content_agent}", 1)
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    (tmp_path / "alerts_test.yml").write_text(broken)
    result = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0 and "HighModelErrorRate" in result.stdout + result.stderr


def test_every_rule_has_severity_summary_description_and_runbook() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        # Durations are seconds: humanizeDuration is never fed milliseconds.
        assert "_ms" not in rule["expr"] or "humanizeDuration" not in str(annotations), rule["alert"]


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no firing case"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no quiet case"


def test_the_target_down_rule_watches_the_scrape_job_of_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    config = yaml.safe_load(readme.split("cat > /etc/prometheus/prometheus.yml <<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0])
    (job,) = [scrape["job_name"] for scrape in config["scrape_configs"]]
    expr = next(rule["expr"] for rule in alert_rules() if rule["alert"] == "MetricsTargetDown")
    assert f'up{{job="{job}"}} == 0' in expr


def test_the_readme_states_when_celery_beat_stalled_fires() -> None:
    # The rule: the last tick older than N seconds, for M minutes — so it fires N/60 + M minutes after it.
    rule = next(rule for rule in alert_rules() if rule["alert"] == "CeleryBeatStalled")
    threshold = int(re.search(r"> (\d+)$", rule["expr"].strip())[1])
    minutes = int(rule["for"].removesuffix("m"))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"CeleryBeatStalled (beat's last recorded tick over {threshold // 60} min old for {minutes} min: "
            f"it fires about {threshold // 60 + minutes} min after the last tick") in readme
