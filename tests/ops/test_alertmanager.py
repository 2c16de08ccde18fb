"""ops/alertmanager/alertmanager.yml: valid for amtool, and routes by severity — critical and cost alerts
to chat and e-mail (where the budget alerts go), warnings to chat only; on a real Alertmanager, an
infrastructure failure's alert holds back the symptoms it sets off, and those only (one cause, one page)."""

from __future__ import annotations

import datetime
import grp
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.ops.conftest import free_port, stop_process, wait_for
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


def test_every_alert_and_queue_an_inhibit_rule_names_exists() -> None:
    # An alert renamed in alerts.yml, or a queue in settings, would leave its inhibition matching nothing.
    from django.conf import settings

    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    queues = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    for inhibit in yaml.safe_load(CONFIG.read_text())["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            label, _, values = re.fullmatch(r'(\w+)(=~|=)"(.+)"', matcher).groups()
            named = set(values.split("|"))
            assert named <= {"alertname": alerts, "queue": queues}[label], f"{matcher}: {named - alerts - queues}"


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


# --- one cause, one page: the inhibit_rules, on a real Alertmanager --------------------------------------

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_alertmanager = tool("prometheus-alertmanager", "prometheus-alertmanager")


class Notifications(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: appends what Alertmanager sends to its server's `received`, one dict per alert
    (receiver, status and the alert's labels)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.extend(  # type: ignore[attr-defined]
            {"receiver": body["receiver"], "status": alert["status"], **alert["labels"]} for alert in body["alerts"]
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Alertmanager:
    """Debian's alertmanager on ops/alertmanager/alertmanager.yml — its route tree and inhibit_rules as
    they are — with every receiver a webhook to this test and the grouping waits at 1 s, so a
    notification is out within a second or two."""

    def __init__(self, tmp_path: Path) -> None:
        self.webhook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notifications)
        self.webhook.received = []  # type: ignore[attr-defined]
        threading.Thread(target=self.webhook.serve_forever, daemon=True).start()
        config = yaml.safe_load(CONFIG.read_text())
        url = f"http://127.0.0.1:{self.webhook.server_port}/"
        config["receivers"] = [{"name": receiver["name"], "webhook_configs": [{"url": url, "send_resolved": True}]}
                               for receiver in config["receivers"]]
        for route in [config["route"], *config["route"]["routes"]]:
            route.update(group_wait="1s", group_interval="1s")
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "alertmanager.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(f"{self.url}/-/ready", process=self.process, timeout=30, log=self.log)

    def fire(self, labels: dict[str, str], *, resolved: bool = False) -> None:
        """Post one alert as Prometheus does (firing for the next hour, or resolved now)."""
        now = datetime.datetime.now(datetime.UTC)
        ends = now if resolved else now + datetime.timedelta(hours=1)
        alert = {"labels": labels, "annotations": {"summary": labels["alertname"]},
                 "startsAt": (now - datetime.timedelta(minutes=1)).isoformat(), "endsAt": ends.isoformat()}
        request = urllib.request.Request(f"{self.url}/api/v2/alerts", data=json.dumps([alert]).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def inhibited(self) -> set[str]:
        """The alertnames `amtool alert query --inhibited` lists as inhibited."""
        result = amtool("alert", "query", "--inhibited", "-o", "json", f"--alertmanager.url={self.url}")
        assert result.returncode == 0, result.stderr
        return {alert["labels"]["alertname"] for alert in json.loads(result.stdout) if alert["status"]["inhibitedBy"]}

    def notified(self) -> list[dict]:
        return list(self.webhook.received)  # type: ignore[attr-defined]

    def stop(self) -> None:
        stop_process(self.process)
        self.webhook.shutdown()


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path)
    yield server
    server.stop()


def eventually(check: Callable[[], bool], *, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


WEB_1 = {"job": "genesis", "instance": "web-1:8000"}


@needs_alertmanager
@pytest.mark.parametrize(("cause", "symptom", "inhibited"), [
    # Beat stopped: the guardrail checks and the sweeps that resend stalled jobs stop with it.
    ({"alertname": "CeleryBeatStalled"}, {"alertname": "RolloutUnguarded", "agent": "qa_agent"}, True),
    ({"alertname": "CeleryBeatStalled"}, {"alertname": "BackgroundJobStalled", "kind": "audit"}, True),
    # A run stalls on a dead chunk worker, which beat's sweep would have replaced: a fault of its own.
    ({"alertname": "CeleryBeatStalled"}, {"alertname": "BenchmarkRunStalled", "agent": "legal_agent"}, False),
    # No worker on a queue: only that queue's tasks.
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "default"}, {"alertname": "RolloutUnguarded", "agent": "qa_agent"}, True),
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "default"}, {"alertname": "BackgroundJobStalled", "kind": "audit"}, True),
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "default"}, {"alertname": "BenchmarkRunStalled", "agent": "legal_agent"}, False),
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "benchmarks"}, {"alertname": "BenchmarkRunStalled", "agent": "legal_agent"}, True),
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "benchmarks"}, {"alertname": "RolloutUnguarded", "agent": "qa_agent"}, False),
    ({"alertname": "CeleryQueueWithoutWorker", "queue": "benchmarks"}, {"alertname": "BackgroundJobStalled", "kind": "audit"}, False),
    # A web machine's own alert (it carries `instance`) holds back nothing: one machine cut off from Redis or
    # the database, or one target down, says nothing of the platform, whose symptoms are then real pages.
    ({"alertname": "RedisMetricsUnavailable", **WEB_1}, {"alertname": "CeleryBeatStalled"}, False),
    ({"alertname": "RedisMetricsUnavailable", **WEB_1}, {"alertname": "RolloutUnguarded", "agent": "qa_agent"}, False),
    ({"alertname": "RedisMetricsUnavailable", **WEB_1}, {"alertname": "BackgroundJobStalled", "kind": "audit"}, False),
    ({"alertname": "RedisMetricsUnavailable", **WEB_1}, {"alertname": "BenchmarkRunStalled", "agent": "legal_agent"}, False),
    ({"alertname": "DatabaseMetricsUnavailable", **WEB_1}, {"alertname": "ModelUnavailable", "agent": "qa_agent"}, False),
    ({"alertname": "MetricsTargetDown", **WEB_1}, {"alertname": "ModelUnavailable", "agent": "qa_agent"}, False),
    # No web machine reads Redis (the broker): beat, the workers and everything they drive, and each
    # machine's own alert.
    ({"alertname": "RedisUnreachable"}, {"alertname": "RedisMetricsUnavailable", **WEB_1}, True),
    ({"alertname": "RedisUnreachable"}, {"alertname": "CeleryBeatStalled"}, True),
    ({"alertname": "RedisUnreachable"}, {"alertname": "RolloutUnguarded", "agent": "qa_agent"}, True),
    ({"alertname": "RedisUnreachable"}, {"alertname": "BackgroundJobStalled", "kind": "audit"}, True),
    ({"alertname": "RedisUnreachable"}, {"alertname": "BenchmarkRunStalled", "agent": "legal_agent"}, True),
    ({"alertname": "RedisUnreachable"}, {"alertname": "ModelFailing", "agent": "qa_agent"}, False),
    # No database anywhere, or no scrape at all: no outcome counted, every agent with traffic reads as none.
    ({"alertname": "DatabaseUnreachable"}, {"alertname": "DatabaseMetricsUnavailable", **WEB_1}, True),
    ({"alertname": "DatabaseUnreachable"}, {"alertname": "ModelUnavailable", "agent": "qa_agent"}, True),
    ({"alertname": "DatabaseUnreachable"}, {"alertname": "ModelFailing", "agent": "qa_agent"}, False),
    ({"alertname": "AllGenesisTargetsDown"}, {"alertname": "MetricsTargetDown", **WEB_1}, True),
    ({"alertname": "AllGenesisTargetsDown"}, {"alertname": "ModelUnavailable", "agent": "qa_agent"}, True),
    # A service still calling with an expired key (critical, from its refusals) holds back the warning that
    # counts that key as expired.
    ({"alertname": "ApiKeysExpiredInUse"}, {"alertname": "ApiKeysExpiringSoon"}, True),
    # One agent's failure does not silence another's.
    ({"alertname": "ModelFailing", "agent": "qa_agent"}, {"alertname": "LowSuccessRate", "agent": "qa_agent"}, True),
    ({"alertname": "ModelFailing", "agent": "qa_agent"}, {"alertname": "LowSuccessRate", "agent": "content_agent"}, False),
])
def test_a_cause_inhibits_the_symptoms_it_sets_off_and_no_other(alertmanager, cause, symptom, inhibited) -> None:
    severity = {"severity": "critical"}
    alertmanager.fire({**cause, **severity})  # the cause fires first (ops/prometheus/alerts_test.yml)
    assert eventually(lambda: any(sent["alertname"] == cause["alertname"] for sent in alertmanager.notified()))
    alertmanager.fire({**symptom, **severity})
    if inhibited:
        assert eventually(lambda: symptom["alertname"] in alertmanager.inhibited())
        time.sleep(2.5)  # two more group intervals: nothing of the symptom goes out
        assert [sent for sent in alertmanager.notified() if sent["alertname"] == symptom["alertname"]] == []
    else:
        assert eventually(lambda: any(sent["alertname"] == symptom["alertname"] for sent in alertmanager.notified()))
        assert symptom["alertname"] not in alertmanager.inhibited()


@needs_alertmanager
def test_beat_stopped_pages_once_and_a_symptom_left_after_it_is_sent(alertmanager) -> None:
    # Beat stops: CeleryBeatStalled, then RolloutUnguarded for each running rollout and a stalled audit —
    # one page. Beat restarts but qa_agent's check fails on its data: its RolloutUnguarded goes on firing
    # and is sent once the cause has resolved.
    beat = {"alertname": "CeleryBeatStalled", "severity": "critical"}
    alertmanager.fire(beat)
    assert eventually(lambda: len(alertmanager.notified()) == 1)
    symptoms = [{"alertname": "RolloutUnguarded", "severity": "critical", "agent": agent} for agent in ("qa_agent", "content_agent")]
    for symptom in [*symptoms, {"alertname": "BackgroundJobStalled", "severity": "warning", "kind": "audit"}]:
        alertmanager.fire(symptom)
    assert eventually(lambda: alertmanager.inhibited() == {"RolloutUnguarded", "BackgroundJobStalled"})
    time.sleep(2.5)
    assert [(sent["alertname"], sent["status"]) for sent in alertmanager.notified()] == [("CeleryBeatStalled", "firing")]

    alertmanager.fire(beat, resolved=True)
    alertmanager.fire(symptoms[1], resolved=True)
    alertmanager.fire({"alertname": "BackgroundJobStalled", "severity": "warning", "kind": "audit"}, resolved=True)
    assert eventually(lambda: ("RolloutUnguarded", "qa_agent", "firing") in {
        (sent["alertname"], sent.get("agent"), sent["status"]) for sent in alertmanager.notified()})
    sent_later = {(sent["alertname"], sent.get("agent") or sent.get("kind"), sent["status"]) for sent in alertmanager.notified()[1:]}
    assert sent_later <= {("CeleryBeatStalled", None, "resolved"), ("RolloutUnguarded", "qa_agent", "firing")}


@needs_alertmanager
def test_a_silenced_web_machine_alert_holds_back_no_page(alertmanager) -> None:
    # web-2's Redis route is being fixed and its RedisMetricsUnavailable silenced meanwhile; beat stops for a
    # reason of its own. A silenced alert still inhibits in Alertmanager, so the silence must not be what
    # keeps CeleryBeatStalled from paging: web-2's alerts hold nothing back. The same for its target, out
    # for maintenance, while web-1 still counts every outcome and qa_agent's outage is real.
    web_2 = {"job": "genesis", "instance": "web-2:8000", "severity": "critical"}
    for alertname in ("RedisMetricsUnavailable", "MetricsTargetDown", "DatabaseMetricsUnavailable"):
        result = amtool("silence", "add", f"alertname={alertname}", "instance=web-2:8000", "--comment=maintenance",
                        "--author=ops", f"--alertmanager.url={alertmanager.url}")
        assert result.returncode == 0, result.stderr
        alertmanager.fire({"alertname": alertname, **web_2})
    symptoms = [{"alertname": "CeleryBeatStalled", "severity": "critical"},
                {"alertname": "ModelUnavailable", "agent": "qa_agent", "severity": "critical"}]
    for symptom in symptoms:
        alertmanager.fire(symptom)
    assert eventually(lambda: {sent["alertname"] for sent in alertmanager.notified()} == {"CeleryBeatStalled", "ModelUnavailable"})
    assert alertmanager.inhibited() == set()
