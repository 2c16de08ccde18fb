"""Routing throughput: `POST /api/v1/route` against an authenticated no-op endpoint on the same server.

Targets (issue 5): route throughput >= 0.8x the no-op's; route p99 < 25 ms at half of its own
saturation throughput.

What runs: gunicorn (sync workers, DEBUG off) serving genesis with one extra endpoint on the same
NinjaAPI, `POST /api/v1/bench/noop` (bench/route/noop_urls.py) — the same middleware, URL depth and
API-key auth as every API call, and nothing else. qa_agent gets a running experiment at its first stage, so
`/route` does the whole job: auth (cached), the in-process config, the hash, the exposure buffer
(flushed to Redis every 2 s) and the JSON answer. Load comes from `--clients` processes on the same
machine, each sending one request at a time with a fresh user id; each endpoint is measured
`--rounds` times, alternating, and the best round counts. Then open-loop runs at half the measured
route throughput give the latency percentiles (measured from each request's *scheduled* time, so a
stall is not hidden by the client waiting for it), again `--rounds` alternating rounds, best p99.
The machine running this is shared with the load generator (and, on a dev box, with anything else
running): compare the two endpoints of one run, not runs with each other.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/route/run.py \
        [--seconds 8] [--clients 6] [--workers 2] [--rounds 2] [--port 8811]

It migrates and seeds the database it is given (seed_demo is idempotent) and leaves qa_agent's
experiment running; use a scratch database.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET_THROUGHPUT_RATIO = 0.8
TARGET_P99_MS = 25.0


def setup_world() -> str:
    """Migrate, seed, make sure qa_agent runs an experiment; return an API key for qa_agent."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import io

    import django

    django.setup()
    from django.core.management import call_command

    from experiments.models import Experiment
    from experiments.services import experiment_start
    from models_app.models import Agent
    from models_app.services import api_key_create

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=io.StringIO())
    if not Experiment.objects.filter(agent__slug="qa_agent", status="running").exists():
        draft = Experiment.objects.filter(agent__slug="qa_agent", status="draft").order_by("-created_at").first()
        if draft is None:
            raise SystemExit("qa_agent has no draft experiment to start (seed_demo makes one on a fresh database)")
        experiment_start(experiment=draft, actor=None, override_reason="bench/route: load test")
    _, raw_key = api_key_create(label="bench route", agents=[Agent.objects.get(slug="qa_agent")])
    return raw_key


def start_server(*, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GENESIS_DEBUG": "false", "GENESIS_SSL_REDIRECT": "false", "GENESIS_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--pythonpath", str(ROOT / "bench" / "route"), "noop_wsgi:application",
         "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit("gunicorn did not come up within 30 s")


def _send(port: int, path: str, key: str, user: str) -> None:
    body = json.dumps({"agent": "qa_agent", "user_id": user})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", path, body=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}")


def closed_loop(args: tuple[int, str, str, float, int]) -> int:
    port, path, key, seconds, client = args
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        _send(port, path, key, f"bench-{client}-{done}")
        done += 1
    return done


def open_loop(args: tuple[int, str, str, float, int, float]) -> list[float]:
    """Send at a fixed rate; latency from each request's scheduled time (no coordinated omission)."""
    port, path, key, seconds, client, rate = args
    interval, start = 1.0 / rate, time.monotonic() + 0.05 * client / max(rate, 1)
    latencies, sent = [], 0
    while True:
        scheduled = start + sent * interval
        if scheduled - start > seconds:
            return latencies
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _send(port, path, key, f"open-{client}-{sent}")
        latencies.append((time.monotonic() - scheduled) * 1000)
        sent += 1


def throughput(pool: multiprocessing.pool.Pool, *, port: int, path: str, key: str, seconds: float, clients: int) -> float:
    counts = pool.map(closed_loop, [(port, path, key, seconds, c) for c in range(clients)])
    return sum(counts) / seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8811)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        print("set DATABASE_URL (PostgreSQL) and REDIS_URL: the routing cache is refreshed through Redis", file=sys.stderr)
        return 2

    key = setup_world()
    server = start_server(port=args.port, workers=args.workers)
    try:
        with multiprocessing.Pool(args.clients) as pool:
            for path in ("/api/v1/bench/noop", "/api/v1/route"):  # warm-up: key cache, routing table, imports
                throughput(pool, port=args.port, path=path, key=key, seconds=1.0, clients=args.clients)
            best = {"/api/v1/bench/noop": 0.0, "/api/v1/route": 0.0}
            for _ in range(args.rounds):
                for path in best:
                    best[path] = max(best[path], throughput(pool, port=args.port, path=path, key=key,
                                                            seconds=args.seconds, clients=args.clients))
            half = best["/api/v1/route"] / 2
            # Latency rounds alternate too; the least disturbed round (lowest p99) of each path counts.
            latencies: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for path in ("/api/v1/route", "/api/v1/bench/noop"):
                    values = [ms for chunk in pool.map(open_loop, [(args.port, path, key, args.seconds, c, half / args.clients)
                                                                   for c in range(args.clients)]) for ms in chunk]
                    if path not in latencies or percentile(values, 0.99) < percentile(latencies[path], 0.99):
                        latencies[path] = values
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)

    ratio = best["/api/v1/route"] / best["/api/v1/bench/noop"]
    route_p99 = percentile(latencies["/api/v1/route"], 0.99)
    print(f"server: gunicorn, {args.workers} sync workers, DEBUG off; load: {args.clients} client processes on the same machine "
          f"({os.cpu_count()} CPUs)")
    print(f"saturation throughput (best of {args.rounds} x {args.seconds:.0f} s, load average now {os.getloadavg()[0]:.1f}): "
          f"no-op {best['/api/v1/bench/noop']:.0f} req/s, route {best['/api/v1/route']:.0f} req/s")
    print(f"route / no-op throughput: {ratio:.3f} (target >= {TARGET_THROUGHPUT_RATIO}) "
          f"{'PASS' if ratio >= TARGET_THROUGHPUT_RATIO else 'FAIL'}")
    for path, values in latencies.items():
        print(f"{path} at {half:.0f} req/s (half of route's saturation): n={len(values)} "
              f"p50 {percentile(values, 0.50):.1f} ms, p95 {percentile(values, 0.95):.1f} ms, p99 {percentile(values, 0.99):.1f} ms")
    print(f"route p99 at half load: {route_p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms) "
          f"{'PASS' if route_p99 < TARGET_P99_MS else 'FAIL'}")
    return 0 if ratio >= TARGET_THROUGHPUT_RATIO and route_p99 < TARGET_P99_MS else 1


if __name__ == "__main__":
    sys.exit(main())
