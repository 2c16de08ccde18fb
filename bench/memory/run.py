"""Memory of a long-running process: does a web or worker process keep growing, or only warm up?

The soak (bench/soak/, README "Scaling out") saw web workers' RSS grow +4–9 MB in an hour and could not
tell warm-up from a leak. This drives the same work in one process, far faster and with the allocator
watched, in blocks; after each block it collects garbage and records the memory Python holds
(tracemalloc) and the process's RSS, and prints where the block's growth was allocated (top tracebacks).

- `--part web`: genesis.wsgi.application called directly (the split API / full-stack handler gunicorn
  serves, DEBUG off, production middleware, PROMETHEUS_MULTIPROC_DIR set unless `--no-multiproc`), with the
  soak's traffic (bench/soak/load.py): each "second" 35 `POST /api/v1/route` for returning users (a pool
  of 3 000) and new ones (30 %), every 2 s one `POST /api/v1/outcomes` per agent with those decisions'
  outcomes (tokens included, a few ids sent again), and the operators' reads at the soak's rhythm —
  experiment results, the cost summary, agent health and config, `/metrics`, `/readyz` (a `-Q default`
  worker is started to answer its ping). `--threads 4` serves them from four long-lived threads, as
  gunicorn's gthread worker does.
- `--part tasks`: the Celery task bodies beat runs repeatedly, through Celery's own `apply` (eager, as a
  pool child runs them): the minutely sweeps of genesis/schedules.py, the guardrail check of every running
  experiment (fanned out by evaluate_guardrails), and `experiments.flush_exposures` draining exposure
  batches of new users pushed to Redis as /route pushes them (six flushes per "minute").

Each process measures against itself: the verdict compares the growth of the last block with the first
block's (the warm-up, measured in the same run), per 10 000 requests (web) or 100 "minutes" (tasks).
A leak grows by the same amount every block; warm-up stops growing.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/memory/run.py \
        --part web [--blocks 4] [--block-requests 20000] [--no-multiproc] [--threads 1] [--frames 12]
    … bench/memory/run.py --part tasks [--blocks 4] [--block-minutes 100]

`--frames 0` runs without tracemalloc, several times faster, and judges the RSS: tracemalloc's own
snapshots move the RSS by megabytes, so with it the verdict is on the traced bytes. What 2026-12-07
measured (8 blocks of 20 000 requests; 8 blocks of 100 minutes) is in README "Scaling out".

Never writes into the database DATABASE_URL names: it seeds `<that name>_memory_bench` beside it
(bench/scratch.py, dropped at the end), starts qa_agent's and content_agent's rollouts there, and adds
outcomes, exposures and API keys. REDIS_URL must be an index no one else uses (bench/scratch.py refuses
one holding keys no bench made).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

AGENTS = ["qa_agent", "content_agent", "legal_agent", "support_agent", "analyst_agent"]
ROLLOUTS = ["qa_agent", "content_agent"]
# The last block may grow by at most this share of the first block's growth (same units): warm-up
# flattens towards 0; a leak grows by about the same every block (ratio ~1).
TARGET_LAST_TO_FIRST = 0.25
# ...unless both are noise: below this many bytes per unit the ratio of two small numbers says nothing.
NOISE_BYTES = 64 * 1024


def configure_environment(*, multiproc: bool) -> None:
    """Production-like settings, before Django or prometheus_client is imported."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    os.environ.update(GENESIS_DEBUG="false", GENESIS_SSL_REDIRECT="false", GENESIS_LOG_LEVEL="WARNING")
    if multiproc:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="genesis-memory-metrics-")
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def setup_world() -> dict[str, str]:
    """Seed the scratch database (refused anywhere else), start the two rollouts; return an API key per
    agent and one for all ("all")."""
    require_scratch()
    from django.core.management import call_command

    from experiments.models import Experiment, ExperimentStatus
    from experiments.services import experiment_start
    from models_app.registry.models import Agent
    from models_app.registry.services import api_key_create

    call_command("seed_demo", stdout=io.StringIO())
    for slug in ROLLOUTS:
        if Experiment.objects.filter(agent__slug=slug, status=ExperimentStatus.RUNNING).exists():
            continue
        draft = Experiment.objects.filter(agent__slug=slug, status=ExperimentStatus.DRAFT).order_by("-created_at").first()
        if draft is None:
            raise SystemExit(f"{slug} has no draft experiment to start (seed_demo makes one on a fresh database)")
        experiment_start(experiment=draft, actor=None, override_reason="bench/memory: load test")
    keys = {slug: api_key_create(label=f"bench memory {slug}", agents=[Agent.objects.get(slug=slug)])[1] for slug in AGENTS}
    keys["all"] = api_key_create(label="bench memory all", all_agents=True)[1]
    return keys


# --- measuring --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Blocks:
    """After each block: gc, then the bytes Python holds (tracemalloc, when tracing) and the RSS, and the
    block's top growth by traceback. tracemalloc's own snapshots move the RSS by megabytes, so the RSS
    says something only in a run without it (`--frames 0`), and the verdict is on what was measured
    cleanly: traced bytes when tracing, else the RSS."""

    def __init__(self, *, unit: str, per: int, top: int) -> None:
        self.unit, self.per, self.top = unit, per, top
        self.tracing = tracemalloc.is_tracing()
        self.rows: list[tuple[int, int, int]] = []  # (units done in the block, traced growth, RSS growth)
        gc.collect()
        self.snapshot = tracemalloc.take_snapshot() if self.tracing else None
        self.traced, self.rss = tracemalloc.get_traced_memory()[0], rss_bytes()

    def close_block(self, number: int, units: int, seconds: float) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot() if self.tracing else None
        traced, rss = tracemalloc.get_traced_memory()[0], rss_bytes()
        growth, rss_growth = traced - self.traced, rss - self.rss
        self.rows.append((units, growth, rss_growth))
        scale = self.per / units
        traced_text = (f"traced {traced / 1e6:.2f} MB ({growth * scale / 1024:+,.1f} KiB per {self.per:,} {self.unit}), "
                       if self.tracing else "")
        print(f"block {number}: {units:,} {self.unit} in {seconds:.0f} s; {traced_text}RSS {rss / 1e6:.1f} MB "
              f"({rss_growth * scale / 1024:+,.1f} KiB per {self.per:,} {self.unit})", flush=True)
        if snapshot is not None and self.snapshot is not None:
            for stat in snapshot.compare_to(self.snapshot, "traceback")[: self.top]:
                if stat.size_diff == 0:
                    continue
                # Most recent first; the import machinery's frames left out (an import's code is what grew).
                frames = [f"{frame.filename.removeprefix(str(ROOT) + '/')}:{frame.lineno}" for frame in reversed(stat.traceback)
                          if not frame.filename.startswith("<frozen")]
                imported = " (importing)" if any(f.filename.startswith("<frozen") for f in stat.traceback) else ""
                print(f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks{imported}  {' < '.join(frames[:4])}")
        self.snapshot, self.traced, self.rss = snapshot, traced, rss

    def verdict(self) -> bool:
        column, what = (1, "traced") if self.tracing else (2, "RSS")
        first_units, first = self.rows[0][0], self.rows[0][column]
        last_units, last = self.rows[-1][0], self.rows[-1][column]
        first_rate, last_rate = first * self.per / first_units, last * self.per / last_units
        print(f"{what} growth per {self.per:,} {self.unit}: first block {first_rate / 1024:+,.1f} KiB, "
              f"last block {last_rate / 1024:+,.1f} KiB")
        if abs(last_rate) <= NOISE_BYTES and abs(first_rate) <= NOISE_BYTES:
            return meets_target(f"last block's {what} growth (KiB per {self.per:,} {self.unit}; both blocks within noise)",
                                last_rate / 1024, at_most=NOISE_BYTES / 1024, digits=1)
        return meets_target(f"last block's {what} growth / first block's (warm-up) growth",
                            last_rate / max(first_rate, 1), at_most=TARGET_LAST_TO_FIRST)


def measure_blocks(args: argparse.Namespace, block: Callable[[], int], *, unit: str, per: int) -> Blocks:
    """Run `block` (returning how many `unit`s it did) `args.blocks` times, measuring after each."""
    if args.frames:
        tracemalloc.start(args.frames)
    blocks = Blocks(unit=unit, per=per, top=args.top)
    for number in range(1, args.blocks + 1):
        started = time.monotonic()
        units = block()
        blocks.close_block(number, units, time.monotonic() - started)
    tracemalloc.stop()
    return blocks


# --- the web part -----------------------------------------------------------------------------------


def wsgi_caller(application: Callable[..., Any]) -> Callable[..., tuple[int, bytes]]:
    def call(method: str, path: str, key: str | None = None, payload: Any = None) -> tuple[int, bytes]:
        body = json.dumps(payload).encode() if payload is not None else b""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False,
        }
        if key:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        statuses: list[str] = []
        result = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            content = b"".join(result)
        finally:
            result.close()  # request_finished: what gunicorn does, and what returns the DB connection
        return int(statuses[0].split()[0]), content

    return call


class WebTraffic:
    """bench/soak/load.py's traffic, one simulated second per `tick()`."""

    def __init__(self, call: Callable[..., tuple[int, bytes]], keys: dict[str, str], *, seed: int, threads: int) -> None:
        self.call, self.keys = call, keys
        # gunicorn's gthread worker: long-lived threads taking requests in turn (each with its own
        # database connection, and its own malloc arena).
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.count_lock = threading.Lock()
        self.rng = random.Random(seed)
        self.seed = seed
        self.new_users = 0
        self.ticks = 0
        self.pending: dict[str, list[dict[str, Any]]] = {agent: [] for agent in AGENTS}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.statuses: dict[tuple[str, int], int] = {}

    def request(self, kind: str, method: str, path: str, key: str | None = None, payload: Any = None) -> tuple[int, bytes]:
        status, body = self.call(method, path, key, payload)
        with self.count_lock:
            self.statuses[(kind, status)] = self.statuses.get((kind, status), 0) + 1
        return status, body

    def user_id(self) -> str:
        if self.rng.random() < 0.3:
            with self.count_lock:
                self.new_users += 1
                return f"new-{self.seed}-{self.new_users}"
        return f"user-{self.rng.randrange(3000)}"

    def route(self, agent: str) -> None:
        user = self.user_id()
        status, body = self.request("route", "POST", "/api/v1/route", self.keys[agent],
                                    {"agent": agent, "user_id": user, "attributes": {"country": self.rng.choice(["FR", "DE", "US"])}})
        if status != 200:
            return
        decision = json.loads(body)
        treatment = decision["variant"] == "treatment"
        self.pending[agent].append({
            "event_id": uuid.uuid4().hex, "agent": agent, "user_id": user, "model": decision["model"],
            "success": self.rng.random() < (0.97 if treatment else 0.96),
            "latency_ms": round(self.rng.lognormvariate(6.6, 0.4), 1),
            "input_tokens": self.rng.randint(80, 400), "output_tokens": self.rng.randint(40, 200),
            "quality": round(min(1.0, max(0.0, self.rng.gauss(0.8 if treatment else 0.75, 0.1))), 3),
            "occurred_at": datetime.now(UTC).isoformat(),
        })

    def flush_outcomes(self, agent: str) -> None:
        events, self.pending[agent] = self.pending[agent], []
        if not events:
            return
        resent = [e for a, e in self.sent[-200:] if a == agent and self.rng.random() < 0.02]
        status, _ = self.request("outcomes", "POST", "/api/v1/outcomes", self.keys[agent], {"events": events + resent[:5]})
        if status == 202:
            self.sent.extend((agent, e) for e in events)
            del self.sent[:-1000]

    def operator_reads(self, tick: int) -> None:
        if tick % 20 == 0:
            for slug in ROLLOUTS:
                self.request("results", "GET", f"/api/v1/experiments/{slug}-rollout/results", self.keys["all"])
        if tick % 15 == 0:
            self.request("costs", "GET", "/api/v1/costs/summary", self.keys["all"])
        if tick % 10 == 0:
            agent = AGENTS[(tick // 10) % len(AGENTS)]
            self.request("health", "GET", f"/api/v1/agents/{agent}/health", self.keys[agent])
            self.request("config", "GET", f"/api/v1/agents/{agent}/config", self.keys[agent])
        if tick % 15 == 5:
            self.request("metrics", "GET", "/metrics")
        if tick % 10 == 3:
            self.request("readyz", "GET", "/readyz")

    def tick(self) -> None:
        self.ticks += 1
        self.each(self.route, [self.rng.choice(AGENTS) for _ in range(35)])
        if self.ticks % 2 == 0:
            self.each(self.flush_outcomes, AGENTS)
        self.operator_reads(self.ticks)

    def each(self, work: Callable[[str], None], agents: list[str]) -> None:
        if self.pool is None:
            for agent in agents:
                work(agent)
        else:
            list(self.pool.map(work, agents))

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def start_worker() -> subprocess.Popen[bytes]:
    """A Celery worker of the default queue, as in the soak: /readyz pings it, and it takes the tasks the
    requests send (budget alerts). Not measured: it is another process."""
    from celery import current_app

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "genesis", "worker", "-Q", "default", "-n", f"memory-bench-{os.getpid()}@%h",
         "--pool", "solo", "-l", "WARNING"],
        cwd=ROOT, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not current_app.control.ping(timeout=1.0):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise SystemExit("the Celery worker did not start (or answer a ping) within 60 s")
    return worker


def run_web(args: argparse.Namespace) -> bool:
    keys = setup_world()
    from genesis.wsgi import application

    worker = start_worker()
    try:
        return measure_web(args, application, keys)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def measure_web(args: argparse.Namespace, application: Callable[..., Any], keys: dict[str, str]) -> bool:
    traffic = WebTraffic(wsgi_caller(application), keys, seed=args.seed, threads=args.threads)
    print(f"web: genesis.wsgi.application in-process, DEBUG off, PROMETHEUS_MULTIPROC_DIR "
          f"{os.environ.get('PROMETHEUS_MULTIPROC_DIR', 'unset')}; {args.blocks} blocks of {args.block_requests:,} requests "
          f"(the soak's mix, ~{args.block_requests / 37 / 60:.0f} soak-minutes each at its 37 requests/s)", flush=True)

    def block() -> int:
        done_before = traffic.requests
        # Ending on an even second, when the outcomes just went out: the bench holds none of its own.
        while traffic.requests - done_before < args.block_requests or traffic.ticks % 2:
            traffic.tick()
        return traffic.requests - done_before

    blocks = measure_blocks(args, block, unit="requests", per=10_000)
    errors = {f"{kind} {status}": n for (kind, status), n in sorted(traffic.statuses.items()) if status >= 400}
    print(f"answers: {traffic.requests:,} requests, {traffic.new_users:,} new users; 4xx/5xx: {errors or 'none'}")
    return blocks.verdict() and not any(status >= 500 for (_, status) in traffic.statuses)


# --- the tasks part ---------------------------------------------------------------------------------


def run_tasks(args: argparse.Namespace) -> bool:
    setup_world()
    import redis
    from celery import current_app
    from django.conf import settings
    from django.db import close_old_connections

    from experiments.models import Experiment, ExperimentStatus
    from experiments.routing import EXPOSURE_LIST_KEY
    from genesis.schedules import DEFAULT_SCHEDULES
    from models_app.benchmarks import tasks as benchmark_tasks

    current_app.loader.import_default_modules()  # the tasks modules, as a worker imports them at start
    # Eager: evaluate_guardrails' fan-out (.delay per running experiment) runs here, as the worker would.
    current_app.conf.task_always_eager = True
    # The resume sweep pings the workers and waits for answers; none run here, so wait less.
    benchmark_tasks.PING_TIMEOUT_SECONDS = 0.05
    minutely = [s.task for s in DEFAULT_SCHEDULES if s.every_seconds is not None and s.every_seconds <= 60
                and s.task != "experiments.flush_exposures"]
    every_five = [s.task for s in DEFAULT_SCHEDULES if s.every_seconds is not None and s.every_seconds > 60]
    experiments = dict(Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list("pk", "current_stage_id"))
    pusher = redis.Redis.from_url(settings.REDIS_URL)
    users = 0

    def run(task_name: str) -> None:
        result = current_app.tasks[task_name].apply()
        close_old_connections()  # Celery's Django fix-up does this around each task in a worker
        if result.failed():
            raise SystemExit(f"{task_name} failed: {result.result!r}")

    def minute(number: int) -> None:
        nonlocal users
        for _ in range(6):  # flush_exposures every 10 s, each finding the exposures of 10 s of /route
            batch = []
            for _ in range(args.exposures_per_flush):
                users += 1
                experiment_id = random.choice(list(experiments))
                batch.append([experiment_id, f"task-user-{users}", random.choice(["control", "treatment"]),
                              experiments[experiment_id], time.time()])
            pusher.rpush(EXPOSURE_LIST_KEY, json.dumps(batch, separators=(",", ":")))
            run("experiments.flush_exposures")
        for name in minutely:
            run(name)
        if number % 5 == 0:
            for name in every_five:
                run(name)

    print(f"tasks: every simulated minute {', '.join(minutely)}; 6 x experiments.flush_exposures "
          f"({args.exposures_per_flush} new users' exposures each); every 5 minutes {', '.join(every_five)}. "
          f"{args.blocks} blocks of {args.block_minutes} minutes", flush=True)
    done = 0

    def block() -> int:
        nonlocal done
        for _ in range(args.block_minutes):
            done += 1
            minute(done)
        return args.block_minutes

    blocks = measure_blocks(args, block, unit="minutes", per=100)
    print(f"{done} simulated minutes, {users:,} exposures flushed")
    return blocks.verdict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["web", "tasks"], required=True)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block-requests", type=int, default=20_000, help="web: requests per block")
    parser.add_argument("--block-minutes", type=int, default=100, help="tasks: simulated minutes per block")
    parser.add_argument("--exposures-per-flush", type=int, default=100, help="tasks: new users per exposure batch")
    parser.add_argument("--threads", type=int, default=1, help="web: requests served by this many threads, as gthread's")
    parser.add_argument("--no-multiproc", action="store_true", help="web: PROMETHEUS_MULTIPROC_DIR unset (one process)")
    parser.add_argument("--frames", type=int, default=12, help="traceback depth tracemalloc keeps; 0: no tracemalloc, RSS only")
    parser.add_argument("--top", type=int, default=8, help="tracebacks printed per block")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if services_missing("the memory of the real services' clients is what is measured", redis=True):
        sys.exit(2)
    configure_environment(multiproc=args.part == "web" and not args.no_multiproc)
    try:
        with scratch_database("memory_bench", redis=True):
            met = run_web(args) if args.part == "web" else run_tasks(args)
    finally:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)  # the bench's own folder
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
