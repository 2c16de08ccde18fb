"""The health rule itself (experiments/health.py, pure): the alert rules' lines, a minimum of 20 requests, a short window
judged as if its missing requests had succeeded, and the characteristic published beside it in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bench.health import run as bench
from experiments import health
from experiments.health import WindowStats, health_status

ROOT = Path(__file__).resolve().parents[2]
FAST = 800.0


def status(recent: tuple[int, int, float | None], whole: tuple[int, int, float | None]) -> str:
    return health_status(window_5m=WindowStats(*recent), window_15m=WindowStats(*whole))


def test_one_failure_of_three_is_not_failing_in_either_window():
    # The auditor's case: before, the 15-minute window decided at any count and 1/3 read "failing".
    assert status((3, 1, FAST), (3, 1, FAST)) == "ok"
    assert status((3, 2, FAST), (3, 2, FAST)) == "degraded"  # 2 of (at least) 20: 10 %, not above it
    assert status((3, 3, FAST), (3, 3, FAST)) == "failing"  # 3 of 20: 15 %
    assert status((0, 0, None), (19, 1, FAST)) == "ok"  # 1/19 is 5.3 % of 19, but 5 % of the 20 it takes


def test_the_5_minute_window_decides_from_20_requests():
    calm = (60, 0, FAST)
    assert status((20, 3, FAST), calm) == "failing"  # 15 % of 20 in 5 minutes
    assert status((19, 3, FAST), calm) == "ok"  # 19 say too little: the 15-minute window (0 of 60) decides
    assert status((19, 3, FAST), (60, 4, FAST)) == "degraded"  # 6.7 % over 15 minutes


def test_latency_needs_20_requests_in_the_deciding_window():
    assert status((3, 0, 12_000), (9, 0, 12_000)) == "ok"  # the p95 of nine requests is about their slowest
    assert status((3, 0, 12_000), (20, 0, 12_000)) == "failing"
    assert status((20, 0, 6_000), (20, 0, 6_000)) == "degraded"
    assert status((0, 0, None), (0, 0, None)) == "idle"


@pytest.mark.parametrize(("errors", "expected"), [(1, "ok"), (2, "ok"), (3, "degraded"), (5, "degraded"), (6, "failing")])
def test_the_lines_are_above_5_and_above_10_percent(errors, expected):
    assert status((50, errors, FAST), (150, errors, FAST)) == expected  # 2, 4, 6, 10, 12 %


def _alert(name: str) -> dict:
    groups = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())["groups"]
    return next(rule for group in groups for rule in group["rules"] if rule.get("alert") == name)


def test_the_lines_are_the_alert_rules_and_the_minimum_is_below_their_gate():
    """README and the module say "the alert rules' lines": hold them to it."""
    def number(expr: str, pattern: str) -> float:
        found = re.search(pattern, expr)
        assert found, (pattern, expr)
        return float(found.group(1))

    error_rate = _alert("HighModelErrorRate")["expr"]
    assert number(error_rate, r"\)\s*>\s*([\d.]+)") == health.DEGRADED_ERROR_RATIO
    # The pages need more requests than one read (they hold for minutes); health never waits for more.
    assert number(error_rate, r">=\s*(\d+)") >= health.MIN_REQUESTS_TO_JUDGE
    assert 1 - number(_alert("LowSuccessRate")["expr"], r"\)\s*<\s*([\d.]+)") == pytest.approx(health.FAILING_ERROR_RATIO)
    for name, line in (("HighModelLatency", health.DEGRADED_P95_MS), ("VeryHighModelLatency", health.FAILING_P95_MS)):
        expr = _alert(name)["expr"]
        assert number(expr, r"\)\)\)\s*>\s*([\d.]+)") * 1000 == line
        assert number(expr, r">=\s*(\d+)") >= health.MIN_REQUESTS_TO_JUDGE


def test_the_readme_publishes_the_rules_measured_characteristic():
    """The exact (binomial) error table of bench/health/run.py stands in the README as the bench prints it."""
    numbers = {"errors": [{"per_5m": n, "error_rate": p, **bench.error_cell(health_status, per_5m=n, error_rate=p)}
                          for p in bench.ERROR_RATES for n in bench.TRAFFIC_PER_5M], "latency": []}
    table = bench.render(numbers).split("\n\n")[1]
    assert table in (ROOT / "README.md").read_text()
    # The auditor's figures, before → after: a false "degraded" at 10 requests per 5 minutes.
    cell = bench.error_cell(health_status, per_5m=10, error_rate=0.01)
    assert round(cell["degraded"] + cell["failing"], 3) == 0.036
    before = bench.error_cell(bench.before_status, per_5m=10, error_rate=0.01)
    assert round(before["degraded"] + before["failing"], 3) == 0.096
