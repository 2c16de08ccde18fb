"""End to end with a real Prometheus (Debian's `prometheus`) scraping the running app (gunicorn, two
workers) and evaluating ops/prometheus/alerts.yml: after traffic in which qa_agent's treatment fails
often, answers slowly and is often served the live model (the agent's own fallback, as its outcomes
report it), the error-rate, latency and fallback alerts' expressions return series for qa_agent and
none for content_agent (healthy) or legal_agent (idle); every metric a rule or a Grafana panel
names (and every runbook's PromQL) is in /metrics and in Prometheus; every panel's and runbook's query
runs without error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, WorkerProcess, child_environment
from tests.experiments.factories import feed, user_in_arm
from tests.ops.conftest import free_port, stop_process, wait_for
from tests.ops.tools import tool

PROMETHEUS = shutil.which("prometheus")
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "genesis.json"
METRIC_NAME = re.compile(r"\bgenesis_[a-z0-9_]+")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    tool("prometheus", "prometheus"),
    pytest.mark.timeout(240),
]


def rule_expressions() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def runbook_queries() -> list[str]:
    queries = []
    for path in sorted((ROOT / "docs" / "runbooks").glob("*.md")):
        queries += [block.strip() for block in re.findall(r"```promql\n(.*?)```", path.read_text(), re.DOTALL)]
    return queries


def panel_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"].replace("$agent", ".*"))
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def readme_scrape_job() -> dict:
    """The `genesis` scrape job of the prometheus.yml README › Monitoring writes."""
    block = (ROOT / "README.md").read_text().split("cat > /etc/prometheus/prometheus.yml <<'YAML'\n", 1)[1].split("\nYAML", 1)[0]
    return next(job for job in yaml.safe_load(block)["scrape_configs"] if job["job_name"] == "genesis")


class Prometheus:
    def __init__(self, *, target_port: int, metrics_token: str, tmp_path: Path) -> None:
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        token_file = tmp_path / "genesis_metrics_token"
        token_file.write_text(metrics_token)
        # README's job (the token sent from a file through `authorization`), on this test's target and file.
        job = readme_scrape_job()
        job["authorization"]["credentials_file"] = str(token_file)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{target_port}"]}]
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [job],
        }))
        self.log = tmp_path / "prometheus.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(f"http://127.0.0.1:{self.port}/-/ready", process=self.process, timeout=30, log=self.log)

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{expr!r}: {error.read().decode()}") from None
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_until(self, expr: str, value: float, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) == value:
                return
            time.sleep(0.3)
        raise AssertionError(f"{expr} did not reach {value} within {timeout:.0f} s: {self.query(expr)}")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def prometheus_for(tmp_path):
    started: list[Prometheus] = []

    def start(server) -> Prometheus:
        started.append(Prometheus(target_port=server.port, metrics_token=server.metrics_token, tmp_path=tmp_path))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


def events(agent: str, model: str, *, n: int, failures: int, latency_ms: float, prefix: str, arm_of: Any = None) -> list[dict]:
    """`n` events served by `model`; with `arm_of` (experiment, arm), from users its hash assigns to that
    arm — outcomes count by assignment, so a model's events from users of the other arm would count there."""
    def user(i: int) -> str:
        if arm_of is None:
            return f"{prefix}-user-{i}"
        experiment, arm = arm_of
        return user_in_arm(experiment, arm, percent=experiment.current_stage.percent, base=f"{prefix}-user-{i}")

    return [{"event_id": f"{prefix}-{i}", "agent": agent, "user_id": user(i), "model": model,
             "success": i >= failures, "latency_ms": latency_ms * (0.9 + 0.2 * i / n),
             "input_tokens": 40, "output_tokens": 60} for i in range(n)]


def world() -> dict:
    """seed_demo's five agents: qa_agent runs an experiment (faulty, slow treatment), support_agent's
    is paused on an SRM, analyst_agent's rolled back; legal_agent gets a benchmark run that stopped
    moving 20 minutes ago, content_agent one queued 30 minutes ago that no worker takes (the test's
    worker consumes only `default`); a WaltzRL build of qa_agent queued 30 minutes ago whose message
    was never sent (nothing runs beat's sweep here); beat last ran a minute ago."""
    import io

    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    from experiments.guardrail_check import guardrails_check
    from experiments.models import Experiment
    from experiments.services import experiment_rollback, experiment_start
    from models_app.benchmarks.models import BenchmarkRun
    from models_app.benchmarks.services import benchmark_run_create
    from models_app.registry.models import Agent, ModelVersion
    from safety.models import WaltzBuild
    from safety.services import waltz_build_create
    from tests.factories import UserFactory

    call_command("seed_demo", stdout=io.StringIO())
    started = {}
    for slug in ("qa_agent", "support_agent", "analyst_agent"):
        draft = Experiment.objects.get(agent__slug=slug, status="draft")
        started[slug] = experiment_start(experiment=draft, actor=None, override_reason="e2e monitoring test")
    # Beat's guardrail task, as every minute: support_agent's split is off (as many treatment users as
    # control at a 10 % stage), so the check pauses it; qa_agent's stage is judged before any outcome.
    feed(started["support_agent"], arm="treatment", n=100, success_rate=0.9, seed=1)
    feed(started["support_agent"], arm="control", n=100, success_rate=0.9, seed=2)
    assert guardrails_check(experiment_id=started["support_agent"].pk).action == "paused"
    assert guardrails_check(experiment_id=started["qa_agent"].pk).action == "none"
    experiment_rollback(experiment=started["analyst_agent"], reason="success rate fell", reason_code="guardrail_success_rate")
    root = UserFactory(username="e2e-root", is_superuser=True)
    run = benchmark_run_create(agent=Agent.objects.get(slug="legal_agent"), actor=root)
    twenty_minutes_ago = timezone.now() - timezone.timedelta(minutes=20)
    BenchmarkRun.objects.filter(pk=run.pk).update(status="running", created_at=twenty_minutes_ago, started_at=twenty_minutes_ago)
    waiting = benchmark_run_create(agent=Agent.objects.get(slug="content_agent"), actor=root)
    BenchmarkRun.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timezone.timedelta(minutes=30))
    build = waltz_build_create(agent=Agent.objects.get(slug="qa_agent"), target=30, enqueue=False)
    WaltzBuild.objects.filter(pk=build.pk).update(created_at=timezone.now() - timezone.timedelta(minutes=30))
    PeriodicTask.objects.filter(pk=PeriodicTask.objects.order_by("pk").values("pk")[:1]).update(
        last_run_at=timezone.now() - timezone.timedelta(minutes=1)
    )
    qa = started["qa_agent"]
    live = {slug: ModelVersion.objects.get(agent__slug=slug, status="live").model_id for slug in ("content_agent",)}
    return {"control": qa.control.model_id, "treatment": qa.treatment.model_id, "content": live["content_agent"], "qa": qa}


def provider_calls_in_another_process(*, metrics_dir: Path, simulator_url: str) -> None:
    """A control-plane provider call in a separate process, as the admin's list of a provider's
    fine-tuning jobs makes it (models_app/finetuning/services.py): counted in genesis_provider_calls_total
    by the app's own instrumentation, merged into /metrics from the multiprocess directory."""
    script = textwrap.dedent(f"""
        import os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
        import django
        django.setup()
        from models_app.finetuning.services import finetuning_provider_jobs
        from models_app.registry.models import ProviderAccount
        ProviderAccount.objects.filter(name="simulator").update(base_url="{simulator_url}")
        finetuning_provider_jobs(provider=ProviderAccount.objects.get(name="simulator"), actor=None)
    """)
    env = child_environment(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), GENESIS_SIMULATOR_URL=simulator_url)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def forget_killed_workers() -> None:
    """Heartbeats of workers that earlier tests killed (SIGKILL: no clean shutdown) live up to a minute."""
    from genesis.metrics import WORKER_HEARTBEAT_KEY, redis_client

    client = redis_client()
    try:
        for key in client.scan_iter(match=f"{WORKER_HEARTBEAT_KEY}*"):
            client.delete(key)
    finally:
        client.close()


def refused_calls_with_an_expired_key(server, prometheus: Prometheus, expressions: dict[str, str]) -> None:
    """A service still calling with a key that expired (used yesterday): the web workers' refusal counters,
    merged per machine and summed, fire ApiKeysExpiredInUse's expression; the gauge counts the key as expired
    (used within 14 days), ApiKeysExpiringSoon's. Before the calls, nothing refused: the critical is quiet."""
    from models_app.registry.models import Agent, ApiKey
    from models_app.registry.services import api_key_create

    assert prometheus.query(expressions["ApiKeysExpiredInUse"]) == []
    key, raw = api_key_create(label="qa service", agents=[Agent.objects.get(slug="qa_agent")])
    now = timezone.now()
    ApiKey.objects.filter(pk=key.pk).update(expires_at=now - timezone.timedelta(hours=1),
                                            last_used_at=now - timezone.timedelta(days=1))
    for _ in range(6):
        status, body = server.request("GET", "/api/v1/agents", key=raw)
        assert status == 401 and "expired" in body["detail"], body
    prometheus.wait_until('sum(genesis_api_key_refusals_total{reason="expired"})', 6)
    (firing,) = prometheus.query(expressions["ApiKeysExpiredInUse"])
    assert float(firing["value"][1]) >= 6
    (warning,) = prometheus.query(expressions["ApiKeysExpiringSoon"])
    assert float(warning["value"][1]) == 1


def test_alerts_see_the_faulty_agent_and_every_named_metric_exists(genesis_server, prometheus_for, api_key_for, tmp_path):
    from models_app.simulator.config import SimulatorConfig
    from models_app.simulator.server import start_in_thread, stop

    models = world()
    forget_killed_workers()
    simulator, _ = start_in_thread(SimulatorConfig(port=0, seed=0, api_keys=frozenset({os.environ.get("GENESIS_SIMULATOR_API_KEY", "sim-key")})))
    worker = WorkerProcess(queues="default", concurrency=1, log_path=tmp_path / "worker.log").start()
    try:
        provider_calls_in_another_process(metrics_dir=genesis_server.metrics_dir, simulator_url=simulator.base_url)
        prometheus = prometheus_for(genesis_server)
        key = api_key_for("qa_agent", "content_agent")
        posted = 0
        for wave in (1, 2):
            batches = [
                events("qa_agent", models["control"], n=100, failures=2, latency_ms=400, prefix=f"c{wave}",
                       arm_of=(models["qa"], "control")),
                events("qa_agent", models["treatment"], n=100, failures=40, latency_ms=12_000, prefix=f"t{wave}",
                       arm_of=(models["qa"], "treatment")),
                # Treatment users the agent served with the live model (its own fallback): 30 of 130.
                events("qa_agent", models["control"], n=30, failures=0, latency_ms=400, prefix=f"f{wave}",
                       arm_of=(models["qa"], "treatment")),
                events("content_agent", models["content"], n=150, failures=1, latency_ms=600, prefix=f"h{wave}"),
            ]
            for batch in batches:
                status, body = genesis_server.request("POST", "/api/v1/outcomes", key=key, body={"events": batch})
                assert status == 202 and body["accepted"] == len(batch), body
                posted += len(batch)
            prometheus.wait_until("sum(genesis_agent_requests_total)", posted)
        time.sleep(2.5)  # two more scrapes, so every rate has samples on both sides of wave 2

        expressions = rule_expressions()
        refused_calls_with_an_expired_key(genesis_server, prometheus, expressions)

        def agents(alert: str) -> set[tuple[str, ...]]:
            return {tuple(series["metric"].get(label, "") for label in ("agent", "variant"))
                    for series in prometheus.query(expressions[alert])}

        assert agents("HighModelErrorRate") == {("qa_agent", "")}
        assert agents("LowSuccessRate") == {("qa_agent", "")}
        assert agents("ModelFailing") == set()  # qa_agent's 18 % is no near-total failure
        assert agents("HighModelLatency") == {("qa_agent", "treatment")}
        assert agents("VeryHighModelLatency") == {("qa_agent", "treatment")}
        # Counted at ingestion from what the agent reported, not from any call Genesis made.
        assert agents("HighFallbackRate") == {("qa_agent", "treatment")}
        assert agents("ModelUnavailable") == set()  # traffic is flowing; legal_agent is idle, not down
        assert agents("ExperimentPausedBySRM") == {("support_agent", "")}
        assert agents("ExperimentRolledBack") == {("analyst_agent", "")}
        # qa_agent's rollout was judged a moment ago (support_agent's, paused, is not guarded).
        assert [series["metric"]["agent"] for series in prometheus.query(
            "max by (agent) (genesis_rollout_guardrails_checked_timestamp_seconds)")] == ["qa_agent"]
        assert agents("RolloutUnguarded") == set()
        assert agents("BenchmarkRunStalled") == {("legal_agent", "")}
        # content_agent's run has waited 30 minutes, but with its chunks in the queue and no worker on
        # it: CeleryQueueWithoutWorker's case (below), not a run whose messages are lost.
        assert [series["metric"]["agent"] for series in prometheus.query(
            "max by (agent) (genesis_benchmark_run_seconds_queued) > 1700")] == ["content_agent"]
        assert prometheus.query('max by (queue) (genesis_celery_queue_length{queue="benchmarks"}) > 0')
        assert agents("BenchmarkRunNotStarted") == set()
        # The build waits past its sweep's resend time: stalled (the alert waits 10 minutes more to fire).
        assert [series["metric"]["kind"] for series in prometheus.query(expressions["BackgroundJobStalled"])] == ["waltz_build"]
        queues = {series["metric"]["queue"] for series in prometheus.query(expressions["CeleryQueueWithoutWorker"])}
        assert queues == {"benchmarks"}  # the worker consumes only "default"
        assert prometheus.query(expressions["CeleryBeatStalled"]) == []
        # The app is scraped (with its token: without it, 401) and reads its database and Redis: the
        # alerts on missing metrics stay quiet.
        assert prometheus.query('up{job="genesis"} == 1') and prometheus.query("genesis_cost_metrics_up == 1")
        assert prometheus.query("genesis_redis_metrics_up == 1")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(genesis_server.url + "/metrics", timeout=10)
        assert prometheus.query(expressions["MetricsTargetDown"]) == []
        assert prometheus.query(expressions["DatabaseMetricsUnavailable"]) == []
        assert prometheus.query(expressions["RedisMetricsUnavailable"]) == []
        # Every other rule's expression is valid PromQL against the real data.
        for expr in expressions.values():
            prometheus.query(expr)

        panels = panel_expressions()
        assert len(panels) >= 20
        for _title, expr in panels:
            prometheus.query(expr)
        queries = runbook_queries()
        assert len(queries) >= 20
        for expr in queries:
            prometheus.query(expr)
        named_in_runbooks = {name for expr in queries for name in METRIC_NAME.findall(expr)}
        p95 = {series["metric"].get("variant"): float(series["value"][1]) for series in prometheus.query(
            'histogram_quantile(0.95, sum by (variant, le) (rate(genesis_agent_request_duration_seconds_bucket{agent="qa_agent"}[5m])))')}
        assert 10 < p95["treatment"] <= 15 and p95["control"] <= 0.5

        exposed = {sample.name for family in text_string_to_metric_families(genesis_server.metrics_text()) for sample in family.samples}
        named = {name for _, expr in [*expressions.items(), *panels] for name in METRIC_NAME.findall(expr)} | named_in_runbooks
        assert named - exposed == set(), "named by a rule or panel but not in /metrics"
        in_prometheus = {series["metric"]["__name__"] for series in prometheus.query('{__name__=~"genesis_.+"}')}
        assert named - in_prometheus == set(), "named by a rule or panel but not scraped"
    finally:
        worker.stop()
        stop(simulator)
