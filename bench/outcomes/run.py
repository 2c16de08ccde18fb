"""Outcome ingestion speed: events per second through `outcomes_ingest`, the service behind
`POST /api/v1/outcomes` (validation one by one, per batch one COPY into a staging table and one
INSERT … ON CONFLICT DO NOTHING that also records exposures, pricing and the ledger entry).

Target (issue 5): >= 20 000 events/s.

Two measurements, each in batches of 1 000 (the contract's maximum):
* in-process: the service called in a loop from this process (no HTTP);
* HTTP (unless --no-http): gunicorn (--workers sync workers, DEBUG off) with --clients processes
  posting batches concurrently, as agents would.
For reference it also times the bare database insert of the same rows (the INSERT alone), so the
cost of validation, attribution and pricing is visible.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> .venv/bin/python bench/outcomes/run.py \
        [--batches 40] [--workers 2] [--clients 4] [--no-tokens] [--no-http]

Never writes into the database DATABASE_URL names: it seeds `<that name>_outcomes_bench` beside it
(bench/scratch.py, dropped at the end; the server it starts is given that database), starts qa_agent's
experiment and analyzes the outcome and assignment tables there. REDIS_URL, if set, must be an index no
one else uses.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

# As in production, for the in-process measurement too (the HTTP server is started with DEBUG off):
# DEBUG on would wrap every cursor and keep every query in memory.
os.environ.setdefault("GENESIS_DEBUG", "false")

TARGET_EVENTS_PER_SECOND = 20_000
BATCH = 1_000


def make_batches(*, run: str, batches: int, control: str, treatment: str, tokens: bool) -> list[list[dict]]:
    rng = random.Random(42)
    out = []
    for b in range(batches):
        events = []
        for i in range(BATCH):
            treated = rng.random() < 0.1
            event = {
                "event_id": f"{run}-{b}-{i}", "agent": "qa_agent", "user_id": f"user-{rng.randrange(200_000)}",
                "model": treatment if treated else control, "success": rng.random() < 0.9,
                "latency_ms": rng.uniform(200, 900), "quality": rng.random(),
            }
            if tokens:
                event["input_tokens"], event["output_tokens"] = rng.randrange(50, 800), rng.randrange(20, 400)
            events.append(event)
        out.append(events)
    return out


def post_batches(args: tuple[int, str, list[list[dict]]]) -> int:
    port, key, batches = args
    accepted = 0
    for events in batches:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/api/v1/outcomes", body=json.dumps({"events": events}),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        if response.status != 202:
            raise RuntimeError(f"/outcomes answered {response.status}: {body}")
        accepted += body["accepted"]
    return accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=8812)
    parser.add_argument("--no-tokens", action="store_true", help="events without tokens (no pricing, no ledger)")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    if services_missing("outcomes are written as in production"):
        return 2
    with scratch_database("outcomes_bench", redis=True):
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    from bench.route.run import setup_world, start_server  # seed, start qa_agent's experiment

    load_at_start = os.getloadavg()[0]  # other work on the machine: these numbers are wall-clock
    key = setup_world()
    from django.db import connection

    from experiments.models import Assignment, Experiment, OutcomeEvent
    from experiments.outcomes import outcomes_ingest

    # Statistics for the freshly seeded tables, as autovacuum would have them (a scratch server may run
    # without it); the timed parts delete their rows between them.
    with connection.cursor() as cursor:  # autocommit: VACUUM cannot run inside a transaction
        cursor.execute(f"VACUUM (ANALYZE) {OutcomeEvent._meta.db_table}, {Assignment._meta.db_table}")

    experiment = Experiment.objects.select_related("control", "treatment").get(agent__slug="qa_agent", status="running")
    run = f"bench-{uuid.uuid4().hex[:8]}"
    tokens = not args.no_tokens
    batches = make_batches(run=run, batches=args.batches, control=experiment.control.model_id,
                           treatment=experiment.treatment.model_id, tokens=tokens)
    try:
        outcomes_ingest(principal=None, events=batches[0][:10])  # warm-up: imports, price cache, connection
        started, cpu_started = time.perf_counter(), time.process_time()
        accepted = sum(outcomes_ingest(principal=None, events=events).accepted for events in batches)
        in_process, in_process_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert accepted == args.batches * BATCH - 10, accepted

        # The bare INSERT of the same rows, for reference: the same bulk insert (COPY into the staging
        # table, INSERT … SELECT … ON CONFLICT), nothing else
        # (no validation, attribution, exposures, pricing or ledger).
        from django.db import transaction
        from django.utils import timezone

        from experiments.bulk import insert_ignoring_conflicts
        from experiments.outcomes import OUTCOME_COLUMNS

        OutcomeEvent.objects.filter(event_id__startswith=run).delete()
        now = timezone.now()
        rows = [[e["event_id"], experiment.agent_id, experiment.pk, "control", e["user_id"], e["model"], e["success"],
                 e["latency_ms"], e.get("input_tokens"), e.get("output_tokens"), e["quality"], None, now, now]
                for events in batches for e in events]
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            with transaction.atomic():
                insert_ignoring_conflicts(table="experiments_outcomeevent", columns=OUTCOME_COLUMNS,
                                          rows=rows[start : start + BATCH], conflict=["agent_id", "event_id"], returning="event_id")
        bare = time.perf_counter() - started
        OutcomeEvent.objects.filter(event_id__startswith=run).delete()

        http_seconds = None
        if not args.no_http:
            http_run = make_batches(run=f"{run}-http", batches=args.batches, control=experiment.control.model_id,
                                    treatment=experiment.treatment.model_id, tokens=tokens)
            # One thread a worker: the sync workers this bench was written for; metrics as in production.
            metrics_dir = tempfile.mkdtemp(prefix="genesis-outcomes-bench-")
            server = start_server(port=args.port, workers=args.workers, threads=1, metrics_dir=metrics_dir)
            try:
                shares = [http_run[c :: args.clients] for c in range(args.clients)]
                with multiprocessing.Pool(args.clients) as pool:
                    pool.map(post_batches, [(args.port, key, [share[0][:5]]) for share in shares])  # warm-up
                    started = time.perf_counter()
                    http_accepted = sum(pool.map(post_batches, [(args.port, key, share) for share in shares]))
                    http_seconds = time.perf_counter() - started
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=15)
                shutil.rmtree(metrics_dir, ignore_errors=True)
            assert http_accepted == args.batches * BATCH - 5 * args.clients, http_accepted
    finally:
        OutcomeEvent.objects.filter(event_id__startswith=run).delete()

    events_total = args.batches * BATCH
    rate = events_total / in_process
    print(f"{args.batches} batches of {BATCH} events, tokens {'priced onto the ledger' if tokens else 'absent'}; "
          f"{os.cpu_count()} CPUs shared by server, clients and PostgreSQL; load average {load_at_start:.1f} at the start")
    # The rest of each batch's time is PostgreSQL working (or waiting for a CPU) while this process waits.
    print(f"in-process outcomes_ingest: {rate:,.0f} events/s ({in_process / args.batches * 1000:.1f} ms per batch, "
          f"of which {in_process_cpu / args.batches * 1000:.1f} ms CPU in this process)")
    print(f"bare INSERT of the same rows: {events_total / bare:,.0f} events/s; service / bare time: {in_process / bare:.2f}x")
    best = rate
    if http_seconds is not None:
        http_rate = events_total / http_seconds
        best = max(best, http_rate)
        print(f"HTTP POST /outcomes, {args.workers} gunicorn workers, {args.clients} clients: {http_rate:,.0f} events/s")
    met = meets_target("best of the two", best, at_least=TARGET_EVENTS_PER_SECOND, digits=0, unit=" events/s")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
