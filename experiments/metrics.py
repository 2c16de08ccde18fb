"""Prometheus metrics of online evaluation, exported at /metrics (genesis/metrics.py).

Counted as outcomes arrive (``POST /outcomes``; merged across processes in multiprocess mode), labelled
by agent, model and variant only — never a user id. The model label is the reported model when it
is one of the agent's registered model versions, else ``other``, so a client cannot grow the series
without bound. The variant is the arm the user was assigned to (experiments/outcomes.py), so the
live model under ``variant="treatment"`` counts the candidate's fallbacks. The three counters of a
label set are made together, at the label set's first outcome: an agent that has never succeeded
shows ``genesis_agent_successes_total`` at 0, not no series (a ratio whose numerator is missing
returns nothing, and LowSuccessRate would stay silent through a total failure):

- ``genesis_agent_requests_total{agent,model,variant}``   outcomes recorded (duplicates not counted)
- ``genesis_agent_errors_total{agent,model,variant}``     of which ``success: false``
- ``genesis_agent_successes_total{agent,model,variant}``  of which ``success: true``
- ``genesis_agent_served_by_other_model_total{agent,variant}``  of an experiment arm's outcomes
  (variant control or treatment), those another model than the arm's served — the candidate failing
  over to the live model, or a router that does not route. Genesis makes no agent's calls: this is
  how it sees fallbacks (HighFallbackRate; the stage's "served" hold, experiments/holds.py)
- ``genesis_agent_request_duration_seconds{agent,model,variant}``  histogram of the reported latency
- ``genesis_agent_tokens_total{agent,model,direction}``   input / output tokens reported

Read at scrape time from the database and Redis (shared by every process, so every process answers
the same). A running rollout's holds, guardrails and split are its latest guardrail evaluation, which
beat's guardrail task stores on the experiment every minute (experiments/selectors_monitoring.py
``rollout_states``): a scrape reads no outcome, a few indexed queries however many rollouts and
outcomes (bench/metrics/rollout.py). The dead-letter list is read through the scrape's one
``RedisReads`` (genesis/metrics.py): with Redis unreachable its count is left out and
``genesis_redis_metrics_up`` says so:

- ``genesis_experiment_rollbacks_total{agent,reason}``, ``genesis_experiment_pauses_total{agent,reason}``
  from the audit trail (a rollback usually happens in a Celery worker), and
  ``genesis_experiment_last_rollback_timestamp_seconds{agent,reason}`` (the alert's input: a series that
  appears already at 1 has no increase() to show)
- ``genesis_rollout_stage_percent{agent}``      treatment share now (0: no running experiment)
- ``genesis_rollout_experiment{agent,status}``  1 for the agent's experiment state (none|running|paused)
- ``genesis_rollout_paused{agent,reason}``      1 while paused, with the pause's reason code (srm, manual…)
- ``genesis_rollout_holds_open{agent}``         holds keeping the current stage from advancing
- ``genesis_rollout_guardrail_state{agent,metric,state}``  1 for each guardrail's current state
- ``genesis_rollout_stage_started_timestamp_seconds{agent}``  when the current stage began
- ``genesis_rollout_srm_p_value{agent}``        sample-ratio-mismatch p-value of the current stage (of a paused
  experiment too: the split it paused on)
- ``genesis_rollout_guardrails_checked_timestamp_seconds{agent}``  when the guardrail task last judged the
  running experiment — its current stage's start until it has (experiments/holds.py ``judged_at``), so a
  rollout never judged ages too; running experiments only (RolloutUnguarded: over 10 minutes old)
- ``genesis_exposure_dead_letter_batches``      exposure batches parked in Redis for a person to inspect
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from experiments.models import EventAction
from experiments.selectors_monitoring import event_counts, exposure_dead_letter_size, last_rollbacks, rollout_states
from genesis.metrics import redis_reads, register_scrape_collector
from models_app.registry.models import ModelVersion

logger = logging.getLogger(__name__)

# LLM calls take from a few hundred milliseconds to a minute; the alerts' 5 s and 10 s lines are edges.
LATENCY_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
OTHER_MODEL = "other"
KNOWN_MODELS_MAX_AGE_SECONDS = 60.0

_LABELS = ["agent", "model", "variant"]
REQUESTS = Counter("genesis_agent_requests_total", "Agent requests recorded by POST /outcomes", _LABELS)
ERRORS = Counter("genesis_agent_errors_total", "Agent requests reported as failed (success: false)", _LABELS)
SUCCESSES = Counter("genesis_agent_successes_total", "Agent requests reported as successful", _LABELS)
DURATION = Histogram(
    "genesis_agent_request_duration_seconds", "Agent request latency as reported in outcomes (seconds)", _LABELS,
    buckets=LATENCY_BUCKETS_SECONDS,
)
TOKENS = Counter("genesis_agent_tokens_total", "Tokens reported in outcomes", ["agent", "model", "direction"])
SERVED_BY_OTHER_MODEL = Counter(
    "genesis_agent_served_by_other_model_total",
    "Outcomes of an experiment arm that another model than the arm's served (a fallback, a router that does not route)",
    ["agent", "variant"],
)


class _KnownModels:
    """Per process: each agent's registered model ids, re-read when an agent not seen yet reports, or
    at most once a minute when an outcome names a model not seen yet (so steady traffic costs no
    query; a version registered a moment ago may count as `other` for up to a minute)."""

    def __init__(self) -> None:
        self._models: dict[int, frozenset[str]] = {}
        self._loaded_at = -KNOWN_MODELS_MAX_AGE_SECONDS
        self._lock = threading.Lock()

    def label(self, agent_id: int, model: str) -> str:
        known = self._models.get(agent_id)
        if known is not None and model in known:
            return model
        if known is None or time.monotonic() - self._loaded_at >= KNOWN_MODELS_MAX_AGE_SECONDS:
            self._reload(agent_id)
            if model in self._models[agent_id]:
                return model
        return OTHER_MODEL

    def _reload(self, asking_agent_id: int) -> None:
        with self._lock:
            models: dict[int, set[str]] = {asking_agent_id: set()}  # an agent without versions is known too
            for agent_id, model_id in ModelVersion.objects.values_list("agent_id", "model_id"):
                models.setdefault(agent_id, set()).add(model_id)
            self._models = {agent_id: frozenset(ids) for agent_id, ids in models.items()}
            self._loaded_at = time.monotonic()


_known_models = _KnownModels()


def outcomes_count(*, rows: Iterable[Mapping[str, Any]], agent_slugs: Mapping[int, str]) -> None:
    """Count stored outcome rows (dicts with agent_id, model, variant, success, latency_ms, tokens, and
    arm_model: the model of the row's experiment arm, None outside an experiment).

    Summed per label set first, then one increment per series: in multiprocess mode every increment
    is a locked write to a memory-mapped file, and per-event increments cost ~40 % of a 1 000-event
    batch's time (bench/outcomes)."""
    try:
        groups: dict[tuple[str, str, str], _Group] = {}
        labels_of: dict[tuple[int, str, str], tuple[str, str, str]] = {}
        for row in rows:
            key = (row["agent_id"], row["model"], row["variant"])
            labels = labels_of.get(key)
            if labels is None:
                labels = labels_of[key] = (agent_slugs[key[0]], _known_models.label(key[0], key[1]), key[2])
            group = groups.get(labels)
            if group is None:
                group = groups[labels] = _Group()
            group.add(row)
        served_by_other: dict[tuple[str, str], int] = {}
        for labels, group in groups.items():
            REQUESTS.labels(*labels).inc(group.requests)
            # inc(0) too: the child exists from now on (see the module docstring).
            ERRORS.labels(*labels).inc(group.errors)
            SUCCESSES.labels(*labels).inc(group.requests - group.errors)
            _observe_many(DURATION.labels(*labels), group.latencies_seconds)
            agent, model, variant = labels
            if group.in_arm:
                served_by_other[(agent, variant)] = served_by_other.get((agent, variant), 0) + group.served_by_other
            if group.input_tokens:
                TOKENS.labels(agent, model, "input").inc(group.input_tokens)
            if group.output_tokens:
                TOKENS.labels(agent, model, "output").inc(group.output_tokens)
        for (agent, variant), count in served_by_other.items():
            SERVED_BY_OTHER_MODEL.labels(agent, variant).inc(count)  # 0 too: the ratio's numerator exists
    except Exception:  # noqa: BLE001 - the outcomes are stored; a metrics failure must not fail the request
        logger.exception("metrics: outcomes stored but not counted")


class _Group:
    __slots__ = ("requests", "errors", "latencies_seconds", "input_tokens", "output_tokens", "in_arm", "served_by_other")

    def __init__(self) -> None:
        self.requests = self.errors = self.input_tokens = self.output_tokens = self.served_by_other = 0
        self.in_arm = False
        self.latencies_seconds: list[float] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self.requests += 1
        self.errors += not row["success"]
        arm_model = row.get("arm_model")
        if arm_model is not None:
            self.in_arm = True
            self.served_by_other += row["model"] != arm_model
        self.latencies_seconds.append(max(0.0, float(row["latency_ms"])) / 1000.0)
        self.input_tokens += row.get("input_tokens") or 0
        self.output_tokens += row.get("output_tokens") or 0


def _observe_many(child: Any, amounts: list[float]) -> None:
    """Histogram.observe for many values at once: one increment per bucket touched instead of one per
    value. Uses the child's bucket values as prometheus_client's own observe() does (bounds ascending,
    the last +Inf); falls back to observe() if a future version lays them out differently."""
    bounds, buckets, total = getattr(child, "_upper_bounds", None), getattr(child, "_buckets", None), getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            child.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


# --- read at scrape time -------------------------------------------------------------------------


class ExperimentEventsCollector(Collector):
    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield from self._families().values()

    @staticmethod
    def _families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
        return {
            "rollback": CounterMetricFamily(
                "genesis_experiment_rollbacks", "Experiments rolled back, by agent and reason (manual, guardrail_<metric>).",
                labels=["agent", "reason"],
            ),
            "last_rollback": GaugeMetricFamily(
                "genesis_experiment_last_rollback_timestamp_seconds", "When the agent's last experiment rollback happened (Unix time)",
                labels=["agent", "reason"],
            ),
            "pause": CounterMetricFamily(
                "genesis_experiment_pauses", "Experiments paused, by agent and reason (manual, srm).", labels=["agent", "reason"],
            ),
        }

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = self._families()
        try:
            for agent, reason, total in event_counts(action=EventAction.ROLLBACK):
                families["rollback"].add_metric([agent, reason or "unspecified"], total)
            for agent, reason, at in last_rollbacks():
                families["last_rollback"].add_metric([agent, reason or "unspecified"], at)
            for agent, reason, total in event_counts(action=EventAction.PAUSE):
                families["pause"].add_metric([agent, reason or "unspecified"], total)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is away
            logger.warning("metrics: cannot count experiment rollbacks and pauses: %s", exc)
        yield from families.values()


def _rollout_families() -> dict[str, GaugeMetricFamily]:
    return {
        "stage": GaugeMetricFamily("genesis_rollout_stage_percent", "Treatment share of the agent's traffic (%)", labels=["agent"]),
        "experiment": GaugeMetricFamily(
            "genesis_rollout_experiment", "1 for the state of the agent's experiment (none, running, paused)",
            labels=["agent", "status"],
        ),
        "paused": GaugeMetricFamily("genesis_rollout_paused", "1 while the agent's experiment is paused", labels=["agent", "reason"]),
        "holds": GaugeMetricFamily("genesis_rollout_holds_open", "Holds keeping the current stage from advancing", labels=["agent"]),
        "guardrail": GaugeMetricFamily(
            "genesis_rollout_guardrail_state", "1 for each guardrail's current state (no_data, not_reported, healthy, warning, breach)",
            labels=["agent", "metric", "state"],
        ),
        "stage_started": GaugeMetricFamily(
            "genesis_rollout_stage_started_timestamp_seconds", "When the current stage began (Unix time)", labels=["agent"]
        ),
        "srm": GaugeMetricFamily("genesis_rollout_srm_p_value", "Sample-ratio-mismatch p-value of the current stage (running or paused)", labels=["agent"]),
        "judged": GaugeMetricFamily(
            "genesis_rollout_guardrails_checked_timestamp_seconds",
            "When the guardrail task last judged the agent's running experiment, or its current stage's start before it "
            "has (Unix time)",
            labels=["agent"],
        ),
        "dead": GaugeMetricFamily("genesis_exposure_dead_letter_batches", "Exposure batches parked in the dead-letter list"),
    }


class RolloutCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _rollout_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _rollout_families()
        try:
            states = rollout_states()
        except Exception as exc:  # noqa: BLE001 - the database is away: the scrape still answers
            logger.warning("metrics: cannot read rollout state: %s: %s", type(exc).__name__, exc)
            states = []
        with redis_reads() as reads:
            dead = reads.read("the exposure dead letters", lambda client: exposure_dead_letter_size(client=client))
        for state in states:
            agent = state.agent
            families["stage"].add_metric([agent], state.stage_percent)
            families["experiment"].add_metric([agent, state.status], 1)
            if state.status == "paused":
                families["paused"].add_metric([agent, state.pause_reason or "unspecified"], 1)
            if state.status == "running":
                families["holds"].add_metric([agent], state.holds_open)
            for metric, guardrail_state in state.guardrails:
                families["guardrail"].add_metric([agent, metric, guardrail_state], 1)
            if state.stage_started is not None:
                families["stage_started"].add_metric([agent], state.stage_started)
            if state.srm_p is not None:
                families["srm"].add_metric([agent], state.srm_p)
            if state.guardrails_judged is not None:
                families["judged"].add_metric([agent], state.guardrails_judged)
        if dead is not None:
            families["dead"].add_metric([], dead)
        yield from families.values()


def register_metrics() -> None:
    register_scrape_collector(ExperimentEventsCollector())
    register_scrape_collector(RolloutCollector())
