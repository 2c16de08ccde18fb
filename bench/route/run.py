"""Routing throughput: `POST /api/v1/route` against a bare Django + django-ninja endpoint on the same server.

Targets (issues 5 and 15): route throughput >= 0.8x the bare endpoint's; route p99 < 25 ms at half of its
own saturation throughput.

What runs: gunicorn (2 gthread workers x 4 threads, DEBUG off, metrics in multiprocess mode as in
production) serving genesis.wsgi — API calls through settings.API_MIDDLEWARE, the rest through the full
stack — plus two endpoints (bench/route/noop_urls.py):
- `POST /bare/route`, the baseline: a NinjaAPI of its own with the same bearer check (genesis.api's
  ApiKeyAuth) and the same body schema (experiments.api.RouteIn), served with no middleware at all,
  answering a fixed body of /route's shape;
- `POST /api/v1/bench/noop`: the project's API stack (middleware, URL depth, key auth) doing nothing.
qa_agent gets a running experiment at its first stage, so `/route` does the whole job: auth (cached), the
in-process config, the hash, the exposure buffer (flushed to Redis every 2 s) and the JSON answer.
Load comes from `--clients` processes on the same machine (wrk is not used: not installed here), each
keeping one HTTP/1.1 connection open and sending one request at a time with a fresh user id; each
endpoint is measured `--rounds` times, alternating, and the best round counts. Then open-loop runs at
half the measured route throughput give the latency percentiles (measured from each request's
*scheduled* time, so a stall is not hidden by the client waiting for it), again `--rounds` alternating
rounds, best p99. The machine running this is shared with the load generator (and, on a dev box, with
anything else running): compare the endpoints of one run, not runs with each other.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/route/run.py \
        [--seconds 8] [--clients 6] [--workers 2] [--threads 4] [--rounds 2] [--port 8811]

Never writes into the database DATABASE_URL names: it seeds `<that name>_route_bench` beside it
(bench/scratch.py, dropped at the end; the server it starts is given that database) and starts qa_agent's
experiment there. REDIS_URL must be an index no one else uses (bench/scratch.py refuses one holding keys
no bench made).
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

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

TARGET_THROUGHPUT_RATIO = 0.8
TARGET_P99_MS = 25.0


def setup_world() -> str:
    """Seed the scratch database (refused anywhere else), start qa_agent's experiment; return an API key for qa_agent."""
    require_scratch()
    import io

    from django.core.management import call_command

    from experiments.models import Experiment
    from experiments.services import experiment_start
    from models_app.registry.models import Agent
    from models_app.registry.services import api_key_create

    call_command("seed_demo", stdout=io.StringIO())
    if not Experiment.objects.filter(agent__slug="qa_agent", status="running").exists():
        draft = Experiment.objects.filter(agent__slug="qa_agent", status="draft").order_by("-created_at").first()
        if draft is None:
            raise SystemExit("qa_agent has no draft experiment to start (seed_demo makes one on a fresh database)")
        experiment_start(experiment=draft, actor=None, override_reason="bench/route: load test")
    _, raw_key = api_key_create(label="bench route", agents=[Agent.objects.get(slug="qa_agent")])
    return raw_key


def start_server(*, port: int, workers: int, threads: int, metrics_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GENESIS_DEBUG": "false", "GENESIS_SSL_REDIRECT": "false", "GENESIS_LOG_LEVEL": "WARNING",
           "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--pythonpath", str(ROOT / "bench" / "route"), "noop_wsgi:application",
         "-w", str(workers), "-k", "gthread", "--threads", str(threads), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning"],
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


_connection: http.client.HTTPConnection | None = None


def _send(port: int, path: str, key: str, user: str) -> None:
    """One request on this client process's kept-alive connection (opened again if the server closed it)."""
    global _connection
    body = json.dumps({"agent": "qa_agent", "user_id": user})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for attempt in (1, 2):
        connection = _connection = _connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            break
        except (http.client.HTTPException, ConnectionError):
            connection.close()
            _connection = None
            if attempt == 2:
                raise
    if response.will_close:
        connection.close()
        _connection = None
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
    latencies: list[float] = []
    sent = 0
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


BARE, NOOP, ROUTE = "/bare/route", "/api/v1/bench/noop", "/api/v1/route"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8811)
    args = parser.parse_args()
    if services_missing("the routing cache is refreshed through Redis", redis=True):
        return 2

    import tempfile

    # The server's workers are given the scratch database (DATABASE_URL, while inside) and stopped before it is dropped.
    with scratch_database("route_bench", redis=True), tempfile.TemporaryDirectory(prefix="bench-route-metrics-") as metrics_dir:
        key = setup_world()
        server = start_server(port=args.port, workers=args.workers, threads=args.threads, metrics_dir=metrics_dir)
        try:
            best, latencies = measure(args, key)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)

    ratio = best[ROUTE] / best[BARE]
    route_p99 = percentile(latencies[ROUTE], 0.99)
    print(f"server: gunicorn, {args.workers} gthread workers x {args.threads} threads, DEBUG off; load: {args.clients} "
          f"client processes with kept-alive connections on the same machine ({os.cpu_count()} CPUs)")
    print(f"saturation throughput (best of {args.rounds} x {args.seconds:.0f} s, load average now {os.getloadavg()[0]:.1f}): "
          f"bare {best[BARE]:.0f} req/s, project no-op {best[NOOP]:.0f} req/s, route {best[ROUTE]:.0f} req/s")
    print(f"project no-op / bare: {best[NOOP] / best[BARE]:.3f}")
    throughput_met = meets_target("route / bare throughput", ratio, at_least=TARGET_THROUGHPUT_RATIO, digits=3)
    for path, values in latencies.items():
        print(f"{path} at {best[ROUTE] / 2:.0f} req/s (half of route's saturation): n={len(values)} "
              f"p50 {percentile(values, 0.50):.1f} ms, p95 {percentile(values, 0.95):.1f} ms, p99 {percentile(values, 0.99):.1f} ms")
    latency_met = meets_target("route p99 at half load", route_p99, at_most=TARGET_P99_MS, digits=1, unit=" ms")
    return 0 if throughput_met and latency_met else 1


def measure(args: argparse.Namespace, key: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    with multiprocessing.Pool(args.clients) as pool:
        for path in (BARE, NOOP, ROUTE):  # warm-up: key cache, routing table, imports
            throughput(pool, port=args.port, path=path, key=key, seconds=1.0, clients=args.clients)
        best = {BARE: 0.0, NOOP: 0.0, ROUTE: 0.0}
        for _ in range(args.rounds):
            for path in best:
                best[path] = max(best[path], throughput(pool, port=args.port, path=path, key=key,
                                                        seconds=args.seconds, clients=args.clients))
        half = best[ROUTE] / 2
        # Latency rounds alternate too; the least disturbed round (lowest p99) of each path counts.
        latencies: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for path in (ROUTE, BARE):
                values = [ms for chunk in pool.map(open_loop, [(args.port, path, key, args.seconds, c, half / args.clients)
                                                               for c in range(args.clients)]) for ms in chunk]
                if path not in latencies or percentile(values, 0.99) < percentile(latencies[path], 0.99):
                    latencies[path] = values
    return best, latencies


if __name__ == "__main__":
    sys.exit(main())
