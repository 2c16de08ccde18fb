"""Benchmark-runner throughput: 400 cases × 2 models against the simulator (50 ms a call), provider
concurrency 16. Prints the wall time against the ideal N·L/C and their ratio (target: ≥ 0.8).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/genesis REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python bench/benchmark_runner/run.py [--mode celery|inline] [--workers 1] [--worker-concurrency 2]

What runs is the real path: `benchmark_run_create` (estimate, budget check, chunks), then chunks
executed by real Celery workers on the `benchmarks` queue (`--mode celery`, the default) or by threads
of this process calling the same chunk service (`--mode inline`, no broker in the way); results and
their ledger entries are written as in production. The simulator runs as its own process so its
CPU does not share this process's interpreter lock.

The script makes a scratch database `<your database>_benchmark_runner` (migrated, destroyed at the
end) and uses REDIS_URL as broker and cache — give it a Redis database nothing else uses, or a running
`make run` worker would take the bench's messages; it claims that database (bench/scratch.py) before
purging its queues, and refuses one holding keys no bench made.

The ideal is N·L/C = 800 × 0.050 s / 16 = 2.5 s. Wall time is from the request (`benchmark_run_create`)
to the run row saying completed, verdict included (its finished_at: this process looks every 50 ms,
and how often it looks changes neither the figure nor, much, the CPU left to the run); the run's own
started→finished span is printed too. `--timeline` adds where the time and the machine's CPU went.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
os.environ.setdefault("GENESIS_SIMULATOR_API_KEY", "sim-key")
# The simulator runs on a free port, so its key may go to any loopback port (here and in the workers).
os.environ.setdefault("GENESIS_PROVIDER_HOSTS", "GENESIS_SIMULATOR_API_KEY=127.0.0.1:*")
# As in production (this process and the workers it starts): DEBUG on would wrap every cursor and
# keep every query in memory.
os.environ.setdefault("GENESIS_DEBUG", "false")

from bench.scratch import scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

if TYPE_CHECKING:
    from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite
    from models_app.registry.models import Agent, ModelVersion

TARGET_RATIO = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "models_app.simulator", "--port", str(port), "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the simulator did not start")


def case_lines(cases: int) -> list[str]:
    from models_app.simulator.markers import format_answer_marker

    lines = []
    for index in range(cases):
        a, b = 17 + index, 3 + index % 11
        prompt = f"Case {index}: what is {a} × {b}? Answer with the number only. {format_answer_marker(str(a * b))}"
        lines.append(json.dumps({
            "id": f"bench-{index:04d}", "messages": [{"role": "user", "content": prompt}], "reference": a * b,
            "scorer": {"name": "numeric", "tolerance": 0}, "tags": [f"difficulty:{('easy', 'medium', 'hard')[index % 3]}"],
        }))
    return lines


def build_world(
    *, simulator_url: str, cases: int, concurrency: int, kind: str
) -> tuple[Agent, BenchmarkSuite, ModelVersion, ModelVersion]:
    from costs.services import price_upsert
    from models_app.benchmarks.services import benchmark_suite_import
    from models_app.registry.services import agent_upsert, model_version_register, provider_account_upsert

    # A rate limit the slots cannot reach (a generous tier): the shared limiter does not pace it, so
    # what is measured is the concurrency limit. A reachable limit costs each call one more Redis round
    # trip to book its start (~0.4 ms of a worker's CPU a call, measured here with --timeline).
    provider = provider_account_upsert(
        name="bench-simulator", kind=kind, base_url=simulator_url, api_key_env="GENESIS_SIMULATOR_API_KEY",
        max_concurrency=concurrency, rate_limit_per_minute=10_000_000, timeout_seconds=30,
    )
    agent = agent_upsert(slug="bench_agent", name="Bench agent", system_prompt="Answer with the number only.")
    baseline = model_version_register(agent=agent, provider=provider, model_id="open-mistral-7b",
                                      base_model="open-mistral-7b", kind="baseline")
    candidate = model_version_register(agent=agent, provider=provider, model_id="ft:open-mistral-7b:0000bench:20261101:0000bench",
                                       base_model="open-mistral-7b", kind="fine_tuned")
    price_upsert(model="open-mistral-7b", effective_from=date(2024, 6, 1), input_usd_per_million="0.25",
                 output_usd_per_million="0.25", source="bench", source_date=date(2024, 6, 1))
    suite = benchmark_suite_import(agent=agent, slug="bench", lines=case_lines(cases)).suite
    return agent, suite, baseline, candidate


def start_workers(count: int, concurrency: int, database_url: str, *, separate_default: bool) -> list[subprocess.Popen[bytes]]:
    """`count` workers on the benchmarks queue; with `separate_default`, one more on `default` (the
    ledger postings), as the README's scaling section suggests — else the same workers take both."""
    from genesis.celery import app

    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    plan = [("benchmarks" if separate_default else "benchmarks,default", concurrency)] * count
    if separate_default:
        plan.append(("default", 1))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "genesis", "worker", "-Q", queues, "--concurrency",
             str(processes), "--pool", "prefork", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "-n", f"bench-{index}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        for index, (queues, processes) in enumerate(plan)
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= len(plan):
            return workers
    raise SystemExit("the Celery workers did not answer a ping within 60 s")


def raw_provider_seconds(*, simulator_url: str, cases: int, concurrency: int, processes: int, kind: str) -> float:
    """The reference measured in the same run: the same 2·cases calls through the same provider
    class, `concurrency` threads split over `processes` processes, nothing else (no database, no
    scoring, no Celery). What the machine and the SDK allow; the runner can only add to it."""
    import multiprocessing

    per_process = [list(range(index, 2 * cases, processes)) for index in range(processes)]
    threads = max(1, concurrency // processes)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.starmap(_raw_calls, [(simulator_url, [], threads, kind)] * processes)  # warm up (imports, connections)
        started = time.perf_counter()
        pool.starmap(_raw_calls, [(simulator_url, calls, threads, kind) for calls in per_process])
        return time.perf_counter() - started


def _raw_calls(simulator_url: str, calls: list[int], threads: int, kind: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from models_app.providers import build_provider
    from models_app.simulator.markers import format_answer_marker

    provider = build_provider(kind=kind, base_url=simulator_url, api_key="sim-key", max_concurrency=threads)

    def call(index: int) -> None:
        prompt = f"Case {index}: what is {index} × 3? {format_answer_marker(str(index * 3))}"
        provider.chat(model="open-mistral-7b", messages=[{"role": "user", "content": prompt}],
                      parameters={"temperature": 0.2, "max_tokens": 512})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, calls or range(threads)))
    provider.close()


def execute_inline(run_id: int, threads: int) -> None:
    """The chunk service called by `threads` threads of this process, as workers would call it."""
    from django.db import connection

    from models_app.benchmarks.models import BenchmarkChunk
    from models_app.benchmarks.runner import benchmark_chunk_execute

    queue = list(BenchmarkChunk.objects.filter(run_id=run_id).order_by("index").values_list("pk", flat=True))
    lock = threading.Lock()

    def work() -> None:
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    chunk_id = queue.pop(0)
                benchmark_chunk_execute(chunk_id=chunk_id, worker=f"inline-{threading.get_ident()}")
        finally:
            connection.close()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def cpu_seconds_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process on the machine, keyed "pid name"
    (Linux /proc; empty elsewhere). Compared before and after a run, it says who used the cores."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    usage = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            name, _, rest = (entry / "stat").read_text().partition(") ")
            fields = rest.split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        usage[f"{entry.name} {cmdline[:90] or name.partition('(')[2]}"] = (int(fields[11]) + int(fields[12])) / ticks
    return usage


def print_cpu(before: dict[str, float], after: dict[str, float], *, calls: int) -> None:
    used = sorted(((after[key] - before.get(key, 0.0), key) for key in after), reverse=True)
    total = sum(seconds for seconds, _ in used)
    print(f"    CPU used on the machine during the run: {total:.2f} s ({1000 * total / calls:.2f} ms a call); the largest:")
    for seconds, key in used[:14]:
        if seconds >= 0.05:
            print(f"      {seconds:6.2f} s  {key}")


def print_timeline(run: BenchmarkRun, *, requested_at: float) -> None:
    """Where a run's time went: each chunk's process and span (seconds after the request), and the
    provider latency the calls measured (50 ms plus what the client and the simulator added)."""
    latencies = sorted(run.results.values_list("latency_ms", flat=True))
    print(f"    run row created {run.created_at.timestamp() - requested_at:.3f} s after the request")
    for chunk in run.chunks.order_by("started_at"):
        start = chunk.started_at.timestamp() - requested_at if chunk.started_at else float("nan")
        end = chunk.finished_at.timestamp() - requested_at if chunk.finished_at else float("nan")
        print(f"    chunk {chunk.index}: {len(chunk.items)} pairs, {chunk.worker.rpartition('@')[0] or chunk.worker}"
              f"#{chunk.worker.rpartition('#')[2]}, {start:.3f} → {end:.3f} s ({end - start:.3f} s), {chunk.attempts} claim(s)")
    if latencies:
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        print(f"    call latency ms: mean {sum(latencies) / len(latencies):.1f}, p50 {pick(0.5):.1f}, p90 {pick(0.9):.1f}, "
              f"p99 {pick(0.99):.1f}, max {latencies[-1]:.1f}")
    if run.finished_at:
        print(f"    run finished {run.finished_at.timestamp() - requested_at:.3f} s after the request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("celery", "inline"), default="celery")
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16, help="the provider account's max_concurrency")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (celery mode)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="prefork pool size of each worker")
    parser.add_argument("--shared-queues", action="store_true",
                        help="the benchmark workers also post the ledger entries (default: a separate `-Q default` worker)")
    parser.add_argument("--chunk-size", type=int, default=None, help="pairs per chunk (default: the service's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeline", action="store_true",
                        help="also print each chunk's worker and start/finish times, and the calls' latency percentiles")
    parser.add_argument(
        "--provider-kind", choices=("simulator", "openai_compatible"), default="simulator",
        help="simulator: the Mistral SDK path the demo uses (default); openai_compatible: plain HTTP to the same "
        "simulator, to see the runner's own cost without the SDK's (its answers are not marked, so the verdict is FAIL)",
    )
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. `timeout`) must still stop the workers below: left running, they would take
    # the next bench's or test run's messages from the same Redis database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if services_missing("the runner's leases and call slots live in Redis", redis=True):
        return 2

    import django

    django.setup()

    from genesis.celery import app
    from models_app.benchmarks.ledger import benchmark_run_post_all_costs
    from models_app.benchmarks.models import BenchmarkResult, BenchmarkRun
    from models_app.benchmarks.services import benchmark_run_create

    scratch = ExitStack()  # left last in `finally`, once the workers that hold connections to it are gone
    database_url = scratch.enter_context(scratch_database("benchmark_runner", redis=True))
    simulator: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = []
    try:
        simulator, simulator_url = start_simulator(args.latency_ms)  # in the try: if it fails, the scratch database still goes
        agent, suite, baseline, candidate = build_world(simulator_url=simulator_url, cases=args.cases,
                                                        concurrency=args.concurrency, kind=args.provider_kind)
        app.control.purge()
        if args.mode == "celery":
            workers = start_workers(args.workers, args.worker_concurrency, database_url, separate_default=not args.shared_queues)
        parameters = {"chunk_size": args.chunk_size} if args.chunk_size else {}
        ideal = 2 * args.cases * args.latency_ms / 1000 / args.concurrency
        print(f"{2 * args.cases} calls ({args.cases} cases × 2 models), {args.latency_ms:g} ms each, provider concurrency "
              f"{args.concurrency}: ideal N·L/C = {ideal:.3f} s")
        print(f"mode {args.mode}, provider kind {args.provider_kind}"
              + (f", {args.workers} worker(s) × {args.worker_concurrency} processes" if args.mode == "celery" else ""))
        ratios = []
        for repeat in range(args.repeats):
            # As timeit does: a full collection of this process's own heap (the migrations, the
            # world built above; 100–230 ms measured) must not land inside the timed request.
            gc.collect()
            cpu_before = cpu_seconds_by_process() if args.timeline else {}
            requested_at, started = time.time(), time.perf_counter()
            run = benchmark_run_create(agent=agent, suite=suite, candidate=candidate, baseline=baseline, parameters=parameters)
            if args.mode == "inline":
                execute_inline(run.pk, threads=max(2, args.worker_concurrency))
            while not BenchmarkRun.objects.filter(pk=run.pk, status__in=["completed", "failed", "cancelled"]).exists():
                time.sleep(0.05)
            cpu_after = cpu_seconds_by_process() if args.timeline else {}
            run.refresh_from_db()
            wall = (run.finished_at.timestamp() if run.finished_at else time.time()) - requested_at
            if run.status != "completed":
                print(f"run #{run.pk} {run.status}: {run.error}", file=sys.stderr)
                return 1
            while BenchmarkResult.objects.filter(run=run, cost_posted_at__isnull=True).exists():
                if args.mode == "inline":
                    benchmark_run_post_all_costs(run_id=run.pk)
                time.sleep(0.05)
            ledger = time.perf_counter() - started
            assert run.finished_at and run.started_at  # a completed run has both
            span = (run.finished_at - run.started_at).total_seconds()
            chunks = run.chunks.count()
            ratio = ideal / wall
            ratios.append(ratio)
            print(f"  run {repeat + 1}: wall {wall:.3f} s (request → completed), run span {span:.3f} s "
                  f"(first claim → completed), ledger complete at {ledger:.3f} s, {chunks} chunks, verdict {run.verdict}; "
                  f"ideal/wall = {ratio:.2f}")
            if args.timeline:
                print_timeline(run, requested_at=requested_at)
                print_cpu(cpu_before, cpu_after, calls=2 * args.cases)
            # The candidate is approved after a PASS; put it back so the next repeat may run.
            from models_app.registry.models import ModelVersion

            ModelVersion.objects.filter(pk=candidate.pk).update(status="registered")
        best = max(ratios)
        processes = args.workers * args.worker_concurrency if args.mode == "celery" else 1
        raw = raw_provider_seconds(simulator_url=simulator_url, cases=args.cases, concurrency=args.concurrency,
                                   processes=processes, kind=args.provider_kind)
        print(f"reference, same machine and moment: the {2 * args.cases} calls alone through the provider layer "
              f"({processes} process(es), {args.concurrency} threads in all, no database/Celery/scoring) take {raw:.3f} s: "
              f"ideal/raw = {ideal / raw:.2f}; the runner reaches {best * raw / ideal:.2f} of that")
        met = meets_target("best ideal/wall", best, at_least=TARGET_RATIO)
        print(f"load average during the bench: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPU(s)")
        return 0 if met else 1
    finally:
        for worker in workers:
            try:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(worker.pid, signal.SIGKILL)
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=10)
        scratch.close()


if __name__ == "__main__":
    sys.exit(main())
