"""Soak report: start, end and growth per hour of every series `bench/soak/monitor.py` sampled, and
the load generator's latency per minute (`bench/soak/load.py --out`).

    .venv/bin/python bench/soak/report.py --monitor /tmp/soak/monitor.csv [--latency /tmp/soak/latency.csv] \
        [--skip-minutes 5] [--group rss_kb] [--all]

Prints, per series (group/key), the first and last value, the least-squares slope per hour over the
samples after `--skip-minutes` of warm-up, and the slope of the second half alone (growth that keeps
going shows in both; warm-up shows in the first only). Without `--all` only series whose value moved
are printed. The latency table gives p50/p99 of route and outcomes per 5 minutes and their slopes.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from datetime import datetime


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    if var_t == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var_t * 3600


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def monitor_table(path: str, skip_minutes: float, groups: set[str] | None, show_all: bool) -> None:
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if groups and row["group"] not in groups:
                continue
            series[(row["group"], row["key"])].append((parse_time(row["time"]), float(row["value"])))
    if not series:
        return
    first_time = min(points[0][0] for points in series.values())
    print(f"{'group':<12} {'key':<58} {'start':>14} {'end':>14} {'/hour':>12} {'/hour 2nd half':>15} samples")
    for (group, key), points in sorted(series.items()):
        steady = [(t, v) for t, v in points if t - first_time >= skip_minutes * 60] or points
        half = [(t, v) for t, v in steady if t >= (steady[0][0] + steady[-1][0]) / 2]
        if not show_all and all(v == points[0][1] for _, v in points):
            continue
        print(f"{group:<12} {key[:58]:<58} {points[0][1]:>14.0f} {points[-1][1]:>14.0f} "
              f"{slope_per_hour(steady):>12.1f} {slope_per_hour(half):>15.1f} {len(points)}")


def latency_table(path: str) -> None:
    rows: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
    with open(path) as handle:
        for row in csv.DictReader(handle):
            rows[row["kind"]].append((parse_time(row["minute_start"]), row))
    for kind in ("route", "outcomes", "results", "costs", "health", "metrics", "readyz"):
        if kind not in rows:
            continue
        points = rows[kind]
        start = points[0][0]
        print(f"\n{kind}: per 5 minutes — requests, errors, median of the minutes' p50 / p99 (ms)")
        buckets: dict[int, list[dict[str, str]]] = defaultdict(list)
        for moment, row in points:
            buckets[int((moment - start) // 300)].append(row)
        for bucket, members in sorted(buckets.items()):
            p50s = sorted(float(m["p50_ms"]) for m in members)
            p99s = sorted(float(m["p99_ms"]) for m in members)
            print(f"  +{bucket * 5:>3} min  n={sum(int(m['count']) for m in members):>6} "
                  f"err={sum(int(m['errors']) for m in members):>3}  p50={p50s[len(p50s) // 2]:>7.1f}  "
                  f"p99={p99s[len(p99s) // 2]:>7.1f}")
        print(f"  slope per hour: p50 {slope_per_hour([(t, float(r['p50_ms'])) for t, r in points]):+.1f} ms, "
              f"p99 {slope_per_hour([(t, float(r['p99_ms'])) for t, r in points]):+.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--monitor", default="soak-monitor.csv")
    parser.add_argument("--latency")
    parser.add_argument("--skip-minutes", type=float, default=5)
    parser.add_argument("--group", action="append", help="only these groups (repeatable)")
    parser.add_argument("--all", action="store_true", help="also the series that never moved")
    args = parser.parse_args()
    monitor_table(args.monitor, args.skip_minutes, set(args.group) if args.group else None, args.all)
    if args.latency:
        latency_table(args.latency)


if __name__ == "__main__":
    main()
