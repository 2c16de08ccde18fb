"""bench/alerts/run.py, the alert rules' measured operating characteristic: its `for:` is the rule manager's
(against `promtool test rules`), and the README publishes a row for everything it measures. The numbers
themselves take the bench's 6 minutes and a Prometheus: run it to refresh them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.alerts import run as bench
from tests.ops.tools import tool

ROOT = Path(__file__).resolve().parents[2]
needs_prometheus = tool("prometheus", "prometheus")
needs_promtool = tool("promtool", "prometheus")


def test_a_rule_fires_after_for_of_true_evaluations_and_resolves_at_the_first_false_one():
    start = 1_000_000.0
    every = [start + 15 * i for i in range(21)]  # 21 true evaluations: 0 … 300 s
    assert bench.firing_episodes(every, start=start, end=start + 600, for_seconds=300) == [(start + 300, start + 300)]
    assert bench.firing_episodes(every[:-1], start=start, end=start + 600, for_seconds=300) == []  # 285 s: pending
    gap = every[:10] + every[11:]  # one false evaluation starts the wait again
    assert bench.firing_episodes(gap, start=start, end=start + 600, for_seconds=300) == []
    # No `for:`: firing at every true evaluation, one episode per run of them.
    assert bench.firing_episodes([start, start + 15, start + 45], start=start, end=start + 60, for_seconds=0) == [
        (start, start + 15), (start + 45, start + 45)]


@needs_prometheus
@needs_promtool
def test_the_bench_fires_when_promtool_test_rules_does(tmp_path):
    evaluations, firing = bench.promtool_agreement(tmp_path, port=bench.free_port())
    assert evaluations == 2 * 3 * 240 and firing > 0


@needs_prometheus
@needs_promtool
def test_promtool_catches_a_bench_one_evaluation_late(tmp_path, monkeypatch):
    exact = bench.firing_episodes

    def late(true_at: list[float], *, start: float, end: float, for_seconds: int) -> list[tuple[float, float]]:
        return exact(true_at, start=start, end=end, for_seconds=for_seconds + bench.EVAL_SECONDS)

    monkeypatch.setattr(bench, "firing_episodes", late)
    with pytest.raises(SystemExit, match="differ from promtool"):
        bench.promtool_agreement(tmp_path, port=bench.free_port())


def test_the_rules_measured_are_the_rules_of_alerts_yml_and_the_readme_publishes_each():
    rules = bench.load_rules((*(spec.name for spec in bench.SPECS), bench.QUIET_RULE))
    assert {rule.for_seconds for rule in rules.values()} >= {60, 120, 300, 600}  # each rule's own `for:`, read
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n### How often the traffic-driven alerts fire, and how fast (`bench/alerts/run.py`)\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    for spec in bench.SPECS:
        for level in spec.steady:
            assert bench.steady_label(spec, level) in section, (spec.name, level)
        for level in spec.steps:
            assert bench.step_label(spec, level) in section, (spec.name, level)
    assert bench.QUIET_RULE in section
    # ModelUnavailable's row with no outage and its row after one, at each of its traffic levels
    header = "| | " + " | ".join(f"{rpm:g} req/min" for rpm in bench.QUIET_TRAFFIC_RPM) + " |"
    assert header in section and "\n| no outage | " in section and "\n| outage | " in section
