"""Soak watch: samples, once a minute, what a Genesis deployment holds on to, into a long-format CSV.

    DATABASE_URL=postgres://… REDIS_URL=redis://…/7 .venv/bin/python bench/soak/monitor.py \
        --pids /tmp/soak/pids --var var --out /tmp/soak/monitor.csv [--every 60] [--minutes 60]

`--pids` lists `name pid` lines (the processes started for the soak); each one's children (gunicorn
workers, Celery pool processes) are sampled too, as `name/child-pid`. One CSV row per sample and
measure: `time,group,key,value`, groups:

* `rss_kb`, `fds`, `threads` — per process, from /proc;
* `redis` — `used_memory`, `dbsize` of the REDIS_URL index, `clients` connected to it, queue lengths (`queue:default`,
  `queue:benchmarks`), and keys per pattern (`keys:<pattern>`: the key with digits and hex runs
  replaced by `#`), plus `no_ttl:<pattern>` — keys without an expiry;
* `pg_rows`, `pg_dead`, `pg_bytes` — per table (pg_stat_user_tables, pg_total_relation_size);
  `pg_conn` — connections to the database by application name and state;
* `files` — bytes per file under `--var` (logs, prometheus files; `prometheus_files` counts them);
* `log_errors` / `log_warnings` — lines at ERROR / WARNING (or with a Traceback) per log file so far.

Prints one summary line per sample. `bench/soak/report.py` turns the CSV into start/end/slope tables.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

PATTERN_NOISE = re.compile(r"[0-9a-f]{6,}|\d+")


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def process_sample(pid: int) -> dict[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"].strip()),
        "fds": fds,
    }


def key_pattern(key: str) -> str:
    return PATTERN_NOISE.sub("#", key)


def count_log_lines(path: Path) -> tuple[int, int]:
    errors = warnings = 0
    with path.open(errors="replace") as handle:
        for line in handle:
            if '"level": "ERROR"' in line or " ERROR" in line or "Traceback" in line or "[ERROR" in line:
                errors += 1
            elif '"level": "WARNING"' in line or "WARNING" in line:
                warnings += 1
    return errors, warnings


Row = Callable[[str, str, float], None]


def sample_processes(pids_file: str, row: Row) -> int:
    total_rss = 0
    for line in Path(pids_file).read_text().splitlines():
        name, pid_text = line.split()
        pid = int(pid_text)
        for label, member in [(name, pid)] + [(f"{name}/{child}", child) for child in children_of(pid)]:
            measures = process_sample(member)
            if measures is None:
                continue
            for group, value in measures.items():
                row(group, label, value)
            total_rss += measures["rss_kb"]
    return total_rss


def sample_redis(rcache: redis.Redis, row: Row) -> int:
    info = rcache.info("memory")
    row("redis", "used_memory", info["used_memory"])
    row("redis", "dbsize", rcache.dbsize())
    db = rcache.connection_pool.connection_kwargs.get("db", 0)
    row("redis", "clients", sum(1 for client in rcache.client_list() if int(client.get("db", -1)) == db))
    for queue in ("default", "benchmarks"):
        row("redis", f"queue:{queue}", rcache.llen(queue))
    patterns: Counter[str] = Counter()
    no_ttl: Counter[str] = Counter()
    for key in rcache.scan_iter(count=1000):
        pattern = key_pattern(key.decode(errors="replace"))
        patterns[pattern] += 1
        if rcache.ttl(key) == -1:
            no_ttl[pattern] += 1
    for pattern, count in patterns.items():
        row("redis", f"keys:{pattern}", count)
    for pattern, count in no_ttl.items():
        row("redis", f"no_ttl:{pattern}", count)
    return int(info["used_memory"])


def sample_postgres(pg: psycopg.Connection, row: Row) -> int:
    with pg.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables"
        )
        for table, live, dead, size in cursor.fetchall():
            row("pg_rows", table, live)
            row("pg_dead", table, dead)
            row("pg_bytes", table, size)
        cursor.execute(
            "SELECT coalesce(nullif(application_name, ''), '?') || '/' || coalesce(state, '?'), count(*) "
            "FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1"
        )
        connections = 0
        for label, count in cursor.fetchall():
            row("pg_conn", label, count)
            connections += count
    row("pg_conn", "total", connections)
    return connections


def sample_files(var: Path, row: Row) -> int:
    prometheus_files = 0
    for path in var.rglob("*"):
        if path.is_file() and "media" not in path.parts and "staticfiles" not in path.parts:
            if path.suffix == ".db" and "prometheus" in path.parts:
                prometheus_files += 1
            row("files", str(path.relative_to(var)), path.stat().st_size)
    row("files", "prometheus_files", prometheus_files)
    log_errors = 0
    for log in sorted((var / "log").glob("*")):
        errors, warnings = count_log_lines(log)
        row("log_errors", log.name, errors)
        row("log_warnings", log.name, warnings)
        log_errors += errors
    return log_errors


def sample(args: argparse.Namespace, writer: Any, rcache: redis.Redis, pg: psycopg.Connection) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def row(group: str, key: str, value: float) -> None:
        writer.writerow([stamp, group, key, value])

    total_rss = sample_processes(args.pids, row)
    used_memory = sample_redis(rcache, row)
    connections = sample_postgres(pg, row)
    log_errors = sample_files(Path(args.var), row)
    return (f"{stamp} rss={total_rss // 1024} MB redis={used_memory // 1024} kB keys={rcache.dbsize()} "
            f"pg_conn={connections} log_errors={log_errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pids", default="/tmp/soak/pids")
    parser.add_argument("--var", default="var")
    parser.add_argument("--out", default="soak-monitor.csv")
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--minutes", type=float, default=60)
    args = parser.parse_args()
    rcache = redis.Redis.from_url(os.environ["REDIS_URL"])
    deadline = time.monotonic() + args.minutes * 60
    with open(args.out, "a", newline="") as out, psycopg.connect(
        os.environ["DATABASE_URL"], autocommit=True, application_name="soak-monitor"
    ) as pg:
        writer = csv.writer(out)
        if out.tell() == 0:
            writer.writerow(["time", "group", "key", "value"])
        while time.monotonic() < deadline:
            started = time.monotonic()
            print(sample(args, writer, rcache, pg), flush=True)
            out.flush()
            time.sleep(max(0.0, min(args.every - (time.monotonic() - started), deadline - time.monotonic())))


if __name__ == "__main__":
    main()
