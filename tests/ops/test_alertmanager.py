"""ops/alertmanager/alertmanager.yml: valid for amtool, and routes by severity — critical and cost alerts
to chat and e-mail (where the budget alerts go), warnings to chat only."""

from __future__ import annotations

import grp
import os
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


def secret_files(node: object) -> set[str]:
    """Every `…_file` path in the config (api_url_file, auth_password_file …)."""
    if isinstance(node, dict):
        found = {value for key, value in node.items() if key.endswith("_file") and isinstance(value, str)}
        return found.union(*(secret_files(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(secret_files(value) for value in node))
    return set()


def readme_alertmanager_steps() -> list[str]:
    """The lines of README › Monitoring's setup block between '# Alertmanager' and '# Grafana'."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# Alertmanager:", 1)[1].split("# Grafana:", 1)[0]
    return [line for line in block.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_steps_create_every_secret_file_the_config_reads_for_user_prometheus(tmp_path) -> None:
    # The steps that write under /etc/alertmanager, run with that folder moved under tmp_path: the folder
    # must be made first, and each file the config names must end up holding its secret, readable by
    # Debian's prometheus group (Alertmanager runs as user prometheus) and nobody else.
    wanted = secret_files(yaml.safe_load(CONFIG.read_text()))
    assert wanted == {"/etc/alertmanager/secrets/genesis_slack_webhook", "/etc/alertmanager/secrets/genesis_email_password"}
    steps = [line for line in readme_alertmanager_steps() if "/etc/alertmanager/" in line]
    as_root = os.geteuid() == 0 and any(group.gr_name == "prometheus" for group in grp.getgrall())
    script = "\n".join(line.replace("/etc/alertmanager/", f"{tmp_path}/etc/alertmanager/") for line in steps)
    if not as_root:
        script = script.replace("-o root -g prometheus ", "")
    env = {"PATH": os.environ["PATH"], "GENESIS_SLACK_WEBHOOK": "https://hooks.example.com/T0", "GENESIS_EMAIL_PASSWORD": "s3cret"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    expected = {"genesis_slack_webhook": "https://hooks.example.com/T0", "genesis_email_password": "s3cret"}
    for path in wanted:
        written = tmp_path / path.lstrip("/")
        assert written.read_text() == expected[written.name], path
        assert written.stat().st_mode & 0o777 == 0o640, path
        if as_root:
            assert grp.getgrgid(written.stat().st_gid).gr_name == "prometheus", path
            assert grp.getgrgid(written.parent.stat().st_gid).gr_name == "prometheus", path
