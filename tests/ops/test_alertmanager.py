"""ops/alertmanager/alertmanager.yml: valid for amtool, and routes by severity — critical and cost alerts
to chat and e-mail (where the budget alerts go), warnings to chat only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool")

pytestmark = tool("amtool", "prometheus-alertmanager")


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=VeryHighModelLatency", "agent=qa_agent"], "chat-and-email"),
    (["severity=warning", "alertname=HighModelLatency", "agent=qa_agent"], "team-chat"),
    (["severity=warning", "alertname=HighCostBurn"], "chat-and-email"),
    (["severity=warning", "alertname=BudgetThresholdCrossed", "budget=default"], "chat-and-email"),
])
def test_alerts_route_by_severity_and_kind(labels: list[str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_every_rule_severity_has_a_route() -> None:
    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    severities = {rule["labels"]["severity"] for group in rules["groups"] for rule in group["rules"]}
    routes = yaml.safe_load(CONFIG.read_text())["route"]["routes"]
    routed = {matcher.split("=", 1)[1].strip('"') for route in routes for matcher in route["matchers"] if matcher.startswith("severity=")}
    assert severities <= routed
