"""The traffic-driven alert rules' operating characteristic: false alarms per day while the true rate sits
below a rule's line, and the time to fire after a step to above it, at several traffic levels — the rules
of ops/prometheus/alerts.yml evaluated, unmodified, by a real Prometheus.

How: simulated series in the names, labels and histogram buckets the app exports (experiments/metrics.py,
costs/metrics.py) are written as OpenMetrics text, backfilled with ``promtool tsdb create-blocks-from
openmetrics`` into a scratch TSDB and served by ``prometheus`` (no scrape targets, its own port). Each
rule's ``expr`` is read from alerts.yml and evaluated with /api/v1/query_range every 15 s (the
evaluation_interval of README › Monitoring), half-way between two scrapes; the rule's ``for:`` is applied
to that step series as Prometheus' rule manager does (pending at the first true evaluation, firing once
``for`` has passed with every evaluation true, resolved at the first false one). A firing is the start of
a firing episode.

Assumptions (say them wherever the numbers are quoted): one scrape every 15 s of one web machine; requests
arrive as a Poisson process of the given rate, constant over the day; each fails (or is served by another
model) independently with the true probability; latencies are log-normal (σ = 0.6 on the log scale, as
bench/health/run.py) scaled so that their true 95th percentile is the given p95; each request costs a
gamma-distributed amount (shape 2, i.e. a coefficient of variation of 0.71) whose mean makes the given
spend per hour. Scenarios are told apart by the ``agent`` label (the agent rules group by agent), except
the cost rules, which sum the whole ledger: their scenarios follow each other in time, an hour apart.

False alarms: the true rate constant at the given fraction of the rule's line for --days days (the first
2 hours, the windows' warm-up, not counted). Time to fire: --step-days days of 4-hour cycles, 150 minutes
at half the line (ModelFailing: at 5 % errors) then 90 minutes at 1.5× or 2× it (ModelFailing: 75 % or
100 % errors; ModelUnavailable: no requests at all); the minutes from the step to the rule's firing (0 when
it was firing already), and the share of steps it fired within the 90 minutes.

    .venv/bin/python bench/alerts/run.py [--days 7] [--step-days 4] [--rpm 1 2 6 12 30] [--seed 20261207] [--port 18950] [--json rows.json]
    .venv/bin/python bench/alerts/run.py --check   # the `for:` handling against promtool test rules

Needs ``prometheus`` and ``promtool`` (Debian: apt install prometheus) on the PATH; the scratch TSDB is
removed at the end (--keep-tsdb keeps it).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
SCRAPE_SECONDS = 15
EVAL_SECONDS = 15  # README › Monitoring: evaluation_interval 15s
EVAL_OFFSET_SECONDS = 7.5  # rules are evaluated between scrapes, not on them
WARMUP_SECONDS = 2 * 3600  # the longest window (1 h, + ModelUnavailable's 15 min offset) filled first
CYCLE_BASE_SECONDS = 150 * 60
CYCLE_STEP_SECONDS = 90 * 60
COST_GAP_SECONDS = 3600  # between two cost scenarios: the previous one has left every 1-hour window
LOG_SIGMA = 0.6
Z95 = 1.6448536269514722
COST_SHAPE = 2.0
MAX_POINTS = 10_000  # query_range answers at most 11 000 points per series
TRAFFIC_RPM = (1.0, 2.0, 6.0, 12.0, 30.0)
# ModelUnavailable: an agent this quiet has 15-minute gaps (false alarms), and an outage of 90 minutes
# every 4 hours at each rate (time to fire)
QUIET_TRAFFIC_RPM = (0.2, 0.5, 1.0, 2.0, 6.0)


def latency_buckets() -> tuple[float, ...]:
    """LATENCY_BUCKETS_SECONDS of experiments/metrics.py, read from the source (importing it needs Django)."""
    tree = ast.parse((ROOT / "experiments" / "metrics.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "LATENCY_BUCKETS_SECONDS" for target in node.targets
        ):
            return tuple(float(value) for value in ast.literal_eval(node.value))
    raise SystemExit("LATENCY_BUCKETS_SECONDS not found in experiments/metrics.py")


@dataclass(frozen=True)
class Rule:
    name: str
    expr: str
    for_seconds: int
    labels: tuple[tuple[str, str], ...] = ()


def parse_duration(text: str | None) -> int:
    if not text:
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]]


def load_rules(names: tuple[str, ...]) -> dict[str, Rule]:
    document = yaml.safe_load(ALERTS.read_text())
    found = {
        rule["alert"]: Rule(rule["alert"], rule["expr"], parse_duration(rule.get("for")),
                            tuple(sorted(rule.get("labels", {}).items())))
        for group in document["groups"] for rule in group["rules"]
    }
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"not in {ALERTS}: {', '.join(missing)}")
    return {name: found[name] for name in names}


# --- What each rule is measured at -------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    name: str
    family: str  # errors | latency | fallback | cost | quiet
    line: float  # the rule's threshold, in the family's unit (error share, p95 seconds, share, $/hour)
    unit: str
    # true value when steady (below the line), and the step's levels (above it)
    steady: tuple[float, ...]
    steps: tuple[float, ...]
    base: float | None = None  # the level before each step (default: half the line)

    @property
    def step_base(self) -> float:
        return self.line * 0.5 if self.base is None else self.base


SPECS = (
    # HighModelErrorRate: > 5 % errors over 5 min; 2 % and 3 % are the auditor's estimate's rates.
    RuleSpec("HighModelErrorRate", "errors", 0.05, "% errors", (0.02, 0.025, 0.03, 0.04), (0.075, 0.10)),
    # LowSuccessRate: < 90 % successes over 15 min, i.e. > 10 % errors.
    RuleSpec("LowSuccessRate", "errors", 0.10, "% errors", (0.05, 0.08), (0.15, 0.20)),
    # ModelFailing: ≥ 50 % errors (and ≥ 5 of them) over 10 min; quiet at a realistic 2–5 %, and the step
    # is from 5 % (a healthy agent) to a near-total or total failure.
    RuleSpec("ModelFailing", "errors", 0.50, "% errors", (0.02, 0.05, 0.25), (0.75, 1.0), base=0.05),
    RuleSpec("HighModelLatency", "latency", 5.0, "s p95", (2.5, 4.0), (7.5, 10.0)),
    RuleSpec("VeryHighModelLatency", "latency", 10.0, "s p95", (5.0, 8.0), (15.0, 20.0)),
    RuleSpec("HighFallbackRate", "fallback", 0.10, "% by another model", (0.05, 0.08), (0.15, 0.20)),
    RuleSpec("HighCostBurn", "cost", 5.0, "$/h", (2.5, 4.0), (7.5, 10.0)),
    # $20 per 30 minutes = $40/hour
    RuleSpec("CriticalCostOverrun", "cost", 40.0, "$/h", (20.0, 32.0), (60.0, 80.0)),
)
QUIET_RULE = "ModelUnavailable"


@dataclass
class Scenario:
    key: str  # the agent label (the cost scenarios: a time segment)
    family: str
    rpm: float
    level: float  # steady: the true value; step: the level stepped to
    base: float | None = None  # step scenarios: the level before each step
    start: int = 0  # seconds after t0
    seconds: int = 0
    rules: tuple[str, ...] = ()

    @property
    def is_step(self) -> bool:
        return self.base is not None

    def level_at(self, offsets: np.ndarray) -> np.ndarray:
        """The true value at each offset (seconds from the scenario's start)."""
        if self.base is None:
            return np.full(offsets.shape, self.level)
        in_step = (offsets % (CYCLE_BASE_SECONDS + CYCLE_STEP_SECONDS)) >= CYCLE_BASE_SECONDS
        return np.where(in_step, self.level, self.base)

    def step_times(self) -> list[int]:
        cycle = CYCLE_BASE_SECONDS + CYCLE_STEP_SECONDS
        return [self.start + c * cycle + CYCLE_BASE_SECONDS for c in range(self.seconds // cycle)]


@dataclass
class Plan:
    scenarios: list[Scenario] = field(default_factory=list)
    agents_seconds: int = 0
    cost_end: int = 0


def plan(*, days: float, step_days: float, rpms: tuple[float, ...] = TRAFFIC_RPM,
         quiet_rpms: tuple[float, ...] = QUIET_TRAFFIC_RPM) -> Plan:
    steady_seconds, step_seconds = int(days * 86400), int(step_days * 86400)
    result = Plan(agents_seconds=max(steady_seconds, step_seconds))
    families: dict[str, list[RuleSpec]] = {}
    for spec in SPECS:
        families.setdefault(spec.family, []).append(spec)
    cost_cursor = result.agents_seconds + COST_GAP_SECONDS
    for family, specs in families.items():
        rules = tuple(spec.name for spec in specs)
        for rpm in rpms:
            # Rules of one family share their steady scenarios (one agent at 5 % errors is LowSuccessRate's
            # half-line and HighModelErrorRate's line).
            levels = sorted({level for spec in specs for level in spec.steady})
            steps = [(spec.step_base, level, spec.name) for spec in specs for level in spec.steps]
            for level in levels:
                scenario = Scenario(f"{family}_r{rpm:g}_v{level:g}", family, rpm, level, rules=rules)
                scenario.seconds = steady_seconds
                result.scenarios.append(scenario)
            for base, level, name in steps:
                scenario = Scenario(f"{family}_r{rpm:g}_b{base:g}_s{level:g}", family, rpm, level, base=base, rules=(name,))
                scenario.seconds = step_seconds
                result.scenarios.append(scenario)
    for scenario in result.scenarios:
        if scenario.family == "cost":  # the ledger is summed whole: one scenario at a time
            scenario.start = cost_cursor
            cost_cursor += scenario.seconds + COST_GAP_SECONDS
    for rpm in quiet_rpms:
        scenario = Scenario(f"quiet_r{rpm:g}", "quiet", rpm, 0.0, rules=(QUIET_RULE,))
        scenario.seconds = steady_seconds
        result.scenarios.append(scenario)
        # An outage: no requests at all for the step's 90 minutes (level 1: the share of requests lost).
        outage = Scenario(f"quiet_r{rpm:g}_outage", "quiet", rpm, 1.0, base=0.0, rules=(QUIET_RULE,))
        outage.seconds = step_seconds
        result.scenarios.append(outage)
    result.cost_end = cost_cursor
    return result


# --- Series --------------------------------------------------------------------------------------------------


def write_series(out: TextIO, name: str, labels: str, values: np.ndarray, timestamps: np.ndarray, *,
                 integer: bool = True) -> int:
    prefix = f"{name}{{{labels}}} "
    if integer:
        out.write("".join(f"{prefix}{v} {t}\n" for v, t in zip(values.tolist(), timestamps.tolist(), strict=True)))
    else:
        out.write("".join(f"{prefix}{v:.6f} {t}\n" for v, t in zip(values.tolist(), timestamps.tolist(), strict=True)))
    return len(values)


def simulate(out: TextIO, scenario: Scenario, *, t0: int, rng: np.random.Generator, buckets: tuple[float, ...]) -> int:
    """Write the scenario's series; return the number of samples."""
    intervals = scenario.seconds // SCRAPE_SECONDS
    offsets = np.arange(intervals) * SCRAPE_SECONDS  # the interval (offset - 15 s, offset] ends at its scrape
    timestamps = t0 + scenario.start + offsets
    arrivals = rng.poisson(scenario.rpm * SCRAPE_SECONDS / 60.0, size=intervals)
    arrivals[0] = 0  # the series appear at 0 (the app makes them at an agent's first outcome)
    level = scenario.level_at(offsets)
    if scenario.family == "quiet":  # the level is the share of requests lost (1 in an outage)
        arrivals = rng.binomial(arrivals, 1.0 - level)
        level = np.zeros(intervals)
    requests = np.cumsum(arrivals)
    agent = f'agent="{scenario.key}"'
    samples = 0
    if scenario.family in ("errors", "quiet"):
        errors = np.cumsum(rng.binomial(arrivals, level))
        labels = f'{agent},model="m1",variant="live"'
        samples += write_series(out, "genesis_agent_requests_total", labels, requests, timestamps)
        samples += write_series(out, "genesis_agent_errors_total", labels, errors, timestamps)
        samples += write_series(out, "genesis_agent_successes_total", labels, requests - errors, timestamps)
    elif scenario.family == "fallback":
        served = np.cumsum(rng.binomial(arrivals, level))
        samples += write_series(out, "genesis_agent_requests_total", f'{agent},model="m1",variant="treatment"',
                                requests, timestamps)
        samples += write_series(out, "genesis_agent_served_by_other_model_total", f'{agent},variant="treatment"',
                                served, timestamps)
    elif scenario.family == "latency":
        which = np.repeat(np.arange(intervals), arrivals)
        median = level[which] / np.exp(Z95 * LOG_SIGMA)
        latency = median * np.exp(LOG_SIGMA * rng.standard_normal(which.size))
        bucket = np.searchsorted(np.asarray(buckets), latency, side="left")  # le is inclusive
        width = len(buckets) + 1
        counts = np.bincount(which * width + bucket, minlength=intervals * width).reshape(intervals, width)
        cumulative = np.cumsum(np.cumsum(counts, axis=1), axis=0)
        labels = f'{agent},model="m1",variant="live"'
        for index, bound in enumerate((*buckets, float("inf"))):
            le = "+Inf" if bound == float("inf") else repr(bound)
            samples += write_series(out, "genesis_agent_request_duration_seconds_bucket", f'{labels},le="{le}"',
                                    cumulative[:, index], timestamps)
        samples += write_series(out, "genesis_agent_request_duration_seconds_count", labels, requests, timestamps)
    elif scenario.family == "cost":
        mean = level / (60.0 * scenario.rpm)  # $ per request
        spend = np.where(arrivals > 0, rng.gamma(np.maximum(arrivals, 1) * COST_SHAPE, mean / COST_SHAPE), 0.0)
        samples += write_series(out, "genesis_cost_usd_total", f'{agent},operation="inference"',
                                np.cumsum(spend), timestamps, integer=False)
    return samples


# --- Prometheus ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prometheus(tsdb: Path, port: int) -> Iterator[str]:
    config = tsdb.parent / "prometheus.yml"
    config.write_text("global: {evaluation_interval: 15s}\nscrape_configs: []\n")
    log = (tsdb.parent / "prometheus.log").open("w")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
         "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None:
                raise SystemExit(f"prometheus exited: see {log.name}")
            time.sleep(0.2)
        else:
            raise SystemExit("prometheus did not become ready in 60 s")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query_range_series(base: str, expr: str, start: float, end: float) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """{the result's labels: timestamps at which `expr` returned that series}, evaluated every EVAL_SECONDS
    from `start` to `end` (range queries are the engine's instant queries, one per step)."""
    found: dict[tuple[tuple[str, str], ...], list[float]] = {}
    chunk = (MAX_POINTS - 1) * EVAL_SECONDS
    cursor = start
    while cursor <= end:
        stop = min(cursor + chunk, end)
        body = urllib.parse.urlencode({"query": expr, "start": cursor, "end": stop, "step": EVAL_SECONDS}).encode()
        with urllib.request.urlopen(f"{base}/api/v1/query_range", data=body, timeout=600) as answer:
            result = json.load(answer)
        if result.get("status") != "success":
            raise SystemExit(f"query failed: {result}")
        for series in result["data"]["result"]:
            key = tuple(sorted(series["metric"].items()))
            found.setdefault(key, []).extend(float(ts) for ts, _ in series["values"])
        cursor = stop + EVAL_SECONDS
    return found


def query_range(base: str, expr: str, start: float, end: float) -> dict[str, list[float]]:
    """{agent label (or "" without one): timestamps at which `expr` returned its series} (one series an agent)."""
    found: dict[str, list[float]] = {}
    for labels, true_at in query_range_series(base, expr, start, end).items():
        found.setdefault(dict(labels).get("agent", ""), []).extend(true_at)
    return found


def firing_episodes(true_at: list[float], *, start: float, end: float, for_seconds: int) -> list[tuple[float, float]]:
    """(first, last) firing evaluation of each firing episode, from the evaluations at which the expression
    returned the series — as the rule manager does: pending at the first true evaluation, firing at the
    first one `for` after it with every evaluation in between true, resolved at the first false one."""
    grid = np.zeros(int(round((end - start) / EVAL_SECONDS)) + 1, dtype=bool)
    index = np.rint((np.asarray(true_at) - start) / EVAL_SECONDS).astype(int)
    grid[index[(index >= 0) & (index < grid.size)]] = True
    hold = int(np.ceil(for_seconds / EVAL_SECONDS))
    edges = np.diff(np.concatenate(([0], grid.astype(np.int8), [0])))
    return [
        (start + (run_start + hold) * EVAL_SECONDS, start + (run_end - 1) * EVAL_SECONDS)
        for run_start, run_end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
        if run_end - run_start > hold  # evaluations run_start … run_end - 1 true
    ]


def promtool_agreement(workdir: Path, *, port: int, hours: float = 3.0, seed: int = 7) -> tuple[int, int]:
    """Check `firing_episodes` on Prometheus' answers against `promtool test rules` (the rule manager's own
    `for:`): HighModelErrorRate at 6 req/min and 8 % errors, VeryHighModelLatency at 6 req/min and a p95
    of 12 s (both above their line: they fire, after their windows fill), evaluated on the scrapes as promtool does. Every evaluation's expected alerts
    are the bench's; promtool fails on any difference. Returns (evaluations checked, of which firing)."""
    names = ("HighModelErrorRate", "VeryHighModelLatency")
    rules = load_rules(names)
    scenarios = {"HighModelErrorRate": Scenario("errors_check", "errors", 6.0, 0.08, seconds=int(hours * 3600)),
                 "VeryHighModelLatency": Scenario("latency_check", "latency", 6.0, 12.0, seconds=int(hours * 3600))}
    t0 = (int(time.time()) - 5 * 86400) // 86400 * 86400
    rng = np.random.default_rng(seed)
    text = io.StringIO()
    for scenario in scenarios.values():
        simulate(text, scenario, t0=t0, rng=rng, buckets=latency_buckets())
    (workdir / "check.om").write_text(text.getvalue() + "# EOF\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration=10000h",
                    str(workdir / "check.om"), str(workdir / "check-tsdb")], check=True)
    values: dict[str, list[str]] = {}
    for line in text.getvalue().splitlines():
        series, value, _ = line.rsplit(" ", 2)
        values.setdefault(series, []).append(value)
    end = t0 + int(hours * 3600) - SCRAPE_SECONDS
    cases, firing = [], 0
    with prometheus(workdir / "check-tsdb", port) as base:
        for name in names:
            rule = rules[name]
            found = query_range_series(base, rule.expr, t0, end)
            episodes = {labels: firing_episodes(true_at, start=t0, end=end, for_seconds=rule.for_seconds)
                        for labels, true_at in found.items()}
            for step in range((end - t0) // EVAL_SECONDS + 1):
                at = t0 + step * EVAL_SECONDS
                expected = [{"exp_labels": dict(labels + rule.labels)} for labels, spans in episodes.items()
                            if any(first <= at <= last for first, last in spans)]
                firing += bool(expected)
                cases.append({"eval_time": f"{step * EVAL_SECONDS}s", "alertname": name, "exp_alerts": expected})
    # promtool compares annotations too: the rules without theirs (expr, for and labels unchanged)
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule_document in group["rules"]:
            rule_document.pop("annotations", None)
    (workdir / "check-rules.yml").write_text(yaml.safe_dump(document))
    (workdir / "check-test.yml").write_text(yaml.safe_dump({
        "rule_files": ["check-rules.yml"], "evaluation_interval": f"{EVAL_SECONDS}s",
        "tests": [{"interval": f"{SCRAPE_SECONDS}s", "alert_rule_test": cases,
                   "input_series": [{"series": series, "values": " ".join(v)} for series, v in values.items()]}],
    }, width=1 << 30))
    result = subprocess.run(["promtool", "test", "rules", "check-test.yml"], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the bench's firing times differ from promtool test rules':\n{result.stdout[-4000:]}")
    return len(cases), firing


# --- Measuring ------------------------------------------------------------------------------------------------


def measure(base: str, the_plan: Plan, rules: dict[str, Rule], t0: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_rule: dict[str, list[Scenario]] = {}
    for scenario in the_plan.scenarios:
        for name in scenario.rules:
            by_rule.setdefault(name, []).append(scenario)
    specs = {spec.name: spec for spec in SPECS}
    for name, scenarios in by_rule.items():
        rule = rules[name]
        if scenarios[0].family == "cost":
            spans = [(s, {"": query_range(base, rule.expr, t0 + s.start + EVAL_OFFSET_SECONDS,
                                          t0 + s.start + s.seconds).get("", [])}) for s in scenarios]
        else:
            everything = query_range(base, rule.expr, t0 + EVAL_OFFSET_SECONDS, t0 + the_plan.agents_seconds)
            spans = [(s, {"": everything.get(s.key, [])}) for s in scenarios]
        for scenario, found in spans:
            spec = specs.get(name)
            if spec is not None and not scenario.is_step and scenario.level not in spec.steady:
                continue
            start = t0 + scenario.start + EVAL_OFFSET_SECONDS
            end = t0 + scenario.start + scenario.seconds
            episodes = firing_episodes(found[""], start=start, end=end, for_seconds=rule.for_seconds)
            row: dict[str, Any] = {"rule": name, "rpm": scenario.rpm, "level": scenario.level}
            if scenario.is_step:
                delays: list[float | None] = []
                for step in scenario.step_times():
                    at = t0 + step
                    if any(first < at <= last for first, last in episodes):  # already firing: a false alarm's luck
                        delays.append(0.0)
                        continue
                    after = [first - at for first, _ in episodes if at <= first < at + CYCLE_STEP_SECONDS]
                    delays.append(after[0] if after else None)
                fired = [d / 60 for d in delays if d is not None]
                row |= {"kind": "step", "base": scenario.base, "steps": len(delays), "fired": len(fired),
                        "median_min": float(np.median(fired)) if fired else None,
                        "p90_min": float(np.percentile(fired, 90)) if fired else None}
            else:
                counted = [(first, last) for first, last in episodes if first >= start + WARMUP_SECONDS]
                days = (end - start - WARMUP_SECONDS) / 86400
                firing_seconds = sum(last - first + EVAL_SECONDS for first, last in counted)
                row |= {"kind": "steady", "days": days, "firings": len(counted), "per_day": len(counted) / days,
                        "firing_share": firing_seconds / (end - start - WARMUP_SECONDS)}
            rows.append(row)
    return rows


def show_level(value: float, unit: str) -> str:
    if unit.startswith("%"):
        return f"{value * 100:g} %"
    if unit == "$/h":
        return f"${value:g}/h"
    return f"{value:g} s"


def steady_label(spec: RuleSpec, level: float) -> str:
    """The first two cells of a false-alarm row."""
    return f"| {spec.name} ({show_level(spec.line, spec.unit)}) | {show_level(level, spec.unit)} ({level / spec.line:.0%} of line) |"


def step_label(spec: RuleSpec, level: float) -> str:
    """The first two cells of a time-to-fire row."""
    return (f"| {spec.name} ({show_level(spec.line, spec.unit)}) | {show_level(spec.step_base, spec.unit)} → "
            f"{show_level(level, spec.unit)} |")


def step_cell(row: dict[str, Any]) -> str:
    if row["fired"]:
        return f"{row['fired']}/{row['steps']}: {row['median_min']:.1f}, {row['p90_min']:.1f}"
    return f"0/{row['steps']}: never"


def print_rule_rows(rows: list[dict[str, Any]], kind: str, rpms: tuple[float, ...],
                    cell: Callable[[dict[str, Any]], str]) -> None:
    """One table line per rule and level of `kind` ("steady": its false-alarm levels, "step": its
    steps), one cell per traffic level."""
    for spec in SPECS:
        for level in spec.steady if kind == "steady" else spec.steps:
            cells = [cell(next(r for r in rows if r["rule"] == spec.name and r["kind"] == kind
                               and r["rpm"] == rpm and r["level"] == level)) for rpm in rpms]
            label = steady_label(spec, level) if kind == "steady" else step_label(spec, level)
            print(f"{label} " + " | ".join(cells) + " |")


def print_tables(rows: list[dict[str, Any]], rpms: tuple[float, ...] = TRAFFIC_RPM) -> None:
    print("\nFalse alarms: firings per day (share of time firing) at a steady true rate below the line")
    print("| rule (line) | true value | " + " | ".join(f"{rpm:g} req/min" for rpm in rpms) + " |")
    print("|---|---|" + "---|" * len(rpms))
    print_rule_rows(rows, "steady", rpms, cell=lambda row: f"{row['per_day']:.2f} ({row['firing_share'] * 100:.1f} %)")
    quiet = [r for r in rows if r["rule"] == QUIET_RULE and r["kind"] == "steady"]
    outages = {r["rpm"]: r for r in rows if r["rule"] == QUIET_RULE and r["kind"] == "step"}
    if quiet:
        print(f"\n{QUIET_RULE}: firings per day (share of time firing) with no outage, and after an outage "
              "(no requests for 90 minutes): fired / outages, median and 90th percentile minutes")
        print("| | " + " | ".join(f"{r['rpm']:g} req/min" for r in quiet) + " |")
        print("|---|" + "---|" * len(quiet))
        print("| no outage | " + " | ".join(f"{r['per_day']:.2f} ({r['firing_share'] * 100:.1f} %)" for r in quiet) + " |")
        print("| outage | " + " | ".join(step_cell(outages[r["rpm"]]) for r in quiet if r["rpm"] in outages) + " |")
    print("\nTime to fire after a step from half the line (ModelFailing: from 5 %): fired within 90 min / steps; "
          "median and 90th percentile minutes of those that fired")
    print("| rule (line) | step | " + " | ".join(f"{rpm:g} req/min" for rpm in rpms) + " |")
    print("|---|---|" + "---|" * len(rpms))
    print_rule_rows(rows, "step", rpms, cell=step_cell)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0, help="simulated days per false-alarm scenario")
    parser.add_argument("--step-days", type=float, default=4.0, help="simulated days per step scenario (6 steps a day)")
    parser.add_argument("--rpm", type=float, nargs="+", default=list(TRAFFIC_RPM),
                        help="traffic levels, requests per minute (default: 1 2 6 12 30)")
    parser.add_argument("--quiet-rpm", type=float, nargs="*", default=list(QUIET_TRAFFIC_RPM),
                        help="ModelUnavailable's traffic levels, with and without an outage (default: 0.2 0.5 1 2 6; "
                             "none: leave it out)")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--port", type=int, default=0, help="Prometheus' port (default: a free one)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--keep-tsdb", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the measured rows to this file")
    parser.add_argument("--check", action="store_true",
                        help="only check the bench's `for:` handling against promtool test rules")
    args = parser.parse_args(argv)
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on the PATH (Debian: apt install prometheus)")
    began = time.monotonic()
    if args.check:
        checkdir = Path(tempfile.mkdtemp(prefix="genesis-alerts-check-", dir=args.workdir))
        try:
            evaluations, firing = promtool_agreement(checkdir, port=args.port or free_port())
        finally:
            shutil.rmtree(checkdir, ignore_errors=True)
        print(f"promtool test rules agrees at {evaluations:,} evaluations ({firing:,} with the alert firing)")
        return
    rules = load_rules((*(spec.name for spec in SPECS), QUIET_RULE))
    buckets = latency_buckets()
    rpms, quiet_rpms = tuple(args.rpm), tuple(args.quiet_rpm)
    the_plan = plan(days=args.days, step_days=args.step_days, rpms=rpms, quiet_rpms=quiet_rpms)
    workdir = Path(tempfile.mkdtemp(prefix="genesis-alerts-", dir=args.workdir))
    tsdb = workdir / "tsdb"
    # Old enough that every scenario lies in the past, on a whole day (the blocks' boundaries).
    t0 = (int(time.time()) - the_plan.cost_end - 2 * 86400) // 86400 * 86400
    rng = np.random.default_rng(args.seed)
    try:
        samples = 0
        for part, family_filter in (("agents", lambda s: s.family != "cost"), ("costs", lambda s: s.family == "cost")):
            path = workdir / f"{part}.om"
            with path.open("w") as out:
                for scenario in the_plan.scenarios:
                    if family_filter(scenario):
                        samples += simulate(out, scenario, t0=t0, rng=rng, buckets=buckets)
                out.write("# EOF\n")
            subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                            "--max-block-duration=10000h", str(path), str(tsdb)], check=True)
            path.unlink()
        print(f"{samples:,} samples in {len(the_plan.scenarios)} scenarios backfilled "
              f"({time.monotonic() - began:.0f} s)", file=sys.stderr)
        with prometheus(tsdb, args.port or free_port()) as base:
            rows = measure(base, the_plan, rules, t0)
    finally:
        if not args.keep_tsdb:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"seed {args.seed}; {args.days:g} days per false-alarm scenario (the first 2 h not counted), "
          f"{args.step_days:g} per step scenario; rules from {ALERTS.relative_to(ROOT)}, evaluated every "
          f"{EVAL_SECONDS} s by Prometheus")
    print_tables(rows, rpms)
    print(f"\n{time.monotonic() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
