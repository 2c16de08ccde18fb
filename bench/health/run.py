"""Agent health's operating characteristic: P(ok / degraded / failing | true error rate, true p95,
traffic per 5 minutes) for one read of GET /agents/{agent}/health (and the Agent admin column), from the
real `experiments.health.health_status`.

Assumptions (say them wherever the numbers are quoted): steady traffic — N requests in the 5-minute
window and 3·N in the 15-minute one, which holds the 5-minute one; each request fails independently with
probability p; latencies are log-normal (σ = 0.6 on the log scale) scaled so that their true 95th
percentile is the given p95, and the window's p95 is PERCENTILE_CONT(0.95) of its latencies, as the
selector computes it.

Error table: exact. Every (errors in the last 5 minutes, errors in the 10 before) pair is passed to
`health_status` and weighted by its binomial probability (latency fast: p95 0.8 s). Latency table:
simulated, --reads reads per cell (no errors), each probability ± at most 0.8 points (one binomial
standard error at 4 000 reads).

    .venv/bin/python bench/health/run.py [--reads 4000] [--seed 20261207] [--before] [--json]

--before prints the same tables for the rule this replaced (a copy below: the 5-minute window from 10
requests, else the 15-minute window with any count; failing above 25 % errors; latency read at any count).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.health import WindowStats, health_status  # noqa: E402

TRAFFIC_PER_5M = (3, 7, 10, 20, 50, 100)
ERROR_RATES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15, 0.25, 0.5)
P95_SECONDS = (2.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0)
LATENCY_TRAFFIC = (3, 10, 20, 50, 100)
FAST_P95_MS = 800.0
LOG_SIGMA = 0.6
STATUSES = ("ok", "degraded", "failing")

Rule = Callable[..., str]


def before_status(*, window_5m: WindowStats, window_15m: WindowStats) -> str:
    """The rule before this bench existed (experiments/health.py at 687a724), for comparison only."""
    if window_15m.requests == 0:
        return "idle"
    window = window_5m if window_5m.requests >= 10 else window_15m
    ratio = window.error_ratio or 0.0
    p95 = window.latency_p95_ms or 0.0
    if ratio > 0.25 or p95 > 10_000.0:
        return "failing"
    if ratio > 0.05 or p95 > 5_000.0:
        return "degraded"
    return "ok"


def error_cell(rule: Rule, *, per_5m: int, error_rate: float) -> dict[str, float]:
    """Exact P(status) at N = per_5m requests per 5 minutes and a true error rate."""
    rest = 2 * per_5m
    p_recent = scipy_stats.binom.pmf(np.arange(per_5m + 1), per_5m, error_rate)
    p_rest = scipy_stats.binom.pmf(np.arange(rest + 1), rest, error_rate)
    found = dict.fromkeys(STATUSES, 0.0)
    for recent_errors, p_a in enumerate(p_recent):
        if p_a == 0:
            continue
        window_5m = WindowStats(per_5m, recent_errors, FAST_P95_MS)
        for older_errors, p_b in enumerate(p_rest):
            if p_b == 0:
                continue
            window_15m = WindowStats(3 * per_5m, recent_errors + older_errors, FAST_P95_MS)
            found[rule(window_5m=window_5m, window_15m=window_15m)] += float(p_a * p_b)
    return found


def latency_cell(rule: Rule, *, per_5m: int, p95_s: float, reads: int, rng: np.random.Generator) -> dict[str, float]:
    """Simulated P(status) at N requests per 5 minutes whose latencies have the given true p95."""
    median_ms = p95_s * 1000 / np.exp(LOG_SIGMA * scipy_stats.norm.ppf(0.95))
    latencies = median_ms * np.exp(LOG_SIGMA * rng.standard_normal((reads, 3 * per_5m)))
    p95_5m = np.percentile(latencies[:, :per_5m], 95, axis=1)  # linear: PERCENTILE_CONT
    p95_15m = np.percentile(latencies, 95, axis=1)
    found = dict.fromkeys(STATUSES, 0.0)
    for recent, whole in zip(p95_5m, p95_15m, strict=True):
        status = rule(window_5m=WindowStats(per_5m, 0, float(recent)), window_15m=WindowStats(3 * per_5m, 0, float(whole)))
        found[status] += 1 / reads
    return found


def characteristic(rule: Rule, *, reads: int, seed: int) -> dict[str, list[dict[str, float]]]:
    rng = np.random.default_rng(seed)
    errors = [{"per_5m": n, "error_rate": p, **error_cell(rule, per_5m=n, error_rate=p)}
              for p in ERROR_RATES for n in TRAFFIC_PER_5M]
    latency = [{"per_5m": n, "p95_s": s, **latency_cell(rule, per_5m=n, p95_s=s, reads=reads, rng=rng)}
               for s in P95_SECONDS for n in LATENCY_TRAFFIC]
    return {"errors": errors, "latency": latency}


def _pct(value: float) -> str:
    return f"{value * 100:.1f}"


def _table(title: str, cells: list[dict[str, float]], *, row_head: str, rows: list[tuple[float, str]],
           key: str, traffic: tuple[int, ...]) -> list[str]:
    """A markdown table of P(degraded) / P(failing): one line per `rows` value (cells whose `key` equals
    it, in traffic order), one column per requests-per-5-minutes level."""
    lines = [title, "", f"| {row_head} | " + " | ".join(f"{n}/5 min" for n in traffic) + " |",
             "|---|" + "---|" * len(traffic)]
    for value, label in rows:
        row = [c for c in cells if c[key] == value]
        lines.append(f"| {label} | " + " | ".join(f"{_pct(c['degraded'])} / {_pct(c['failing'])}" for c in row) + " |")
    return lines


def render(numbers: dict[str, list[dict[str, float]]]) -> str:
    errors = _table("P(degraded) / P(failing) per read, in %, by true error rate (rows) and requests per 5 minutes "
                    "(columns); latency fast. Exact binomial.", numbers["errors"], row_head="true error rate",
                    rows=[(p, f"{p * 100:g} %") for p in ERROR_RATES], key="error_rate", traffic=TRAFFIC_PER_5M)
    latency = _table("P(degraded) / P(failing) per read, in %, by true p95 latency (rows) and requests per 5 minutes "
                     "(columns); no errors. Simulated.", numbers["latency"], row_head="true p95",
                     rows=[(s, f"{s:g} s") for s in P95_SECONDS], key="p95_s", traffic=LATENCY_TRAFFIC)
    return "\n".join([*errors, "", *latency])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--before", action="store_true", help="the rule this replaced, for comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rule: Rule = before_status if args.before else health_status
    numbers = characteristic(rule, reads=args.reads, seed=args.seed)
    print(json.dumps(numbers, indent=1) if args.json else render(numbers))


if __name__ == "__main__":
    main()
