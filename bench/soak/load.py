"""Soak traffic: the five agents routing users and reporting outcomes at a steady, modest rate.

One process, asyncio + httpx, so the load generator itself stays cheap on a small machine. Each agent
asks `POST /api/v1/route` for a mix of returning users (a fixed pool) and new ones, and reports one
outcome per decision (tokens included, so the ledger charges) in batches to `POST /api/v1/outcomes`;
now and then it re-sends an event (idempotency) and reads the operators' endpoints: experiment
results, the cost summary, agent health, `/metrics` and `/readyz`.

    .venv/bin/python bench/soak/load.py --base http://127.0.0.1:8311 --keys-dir /tmp/soak \
        --rate 35 --minutes 55 --out /tmp/soak/latency.csv

`--keys-dir` holds one file per agent, `key_<agent>`, with the key `create_api_key --agent <agent>`
printed, and `key_all` (a key for all agents, for the cost summary and results). Prints one line a
minute and appends to `--out` one CSV row per minute and request kind:
`minute_start,kind,count,errors,p50_ms,p99_ms,max_ms` (errors: transport failures and 5xx; a 4xx is
counted by status in the minute's printed line, a transport failure by its exception's name). Stop it
with Ctrl-C or let `--minutes` run out. It takes about 8 % of one core at 35 decisions a second.

A whole soak, as an operator runs Genesis (README "Scaling out"): a database and a Redis index of its own
(DATABASE_URL, REDIS_URL), `migrate` and `seed_demo`, then the simulator, gunicorn
(`-k gthread -w 2 --threads 4`), a `-Q default` and a `-Q benchmarks` worker and beat, each in the
background with the same environment and PROMETHEUS_MULTIPROC_DIR, their pids written as `name pid` lines
for the monitor. Keys: `create_api_key --agent A` per agent and `--all-agents`. A rollout: run
`benchmark_finetuned --agent qa_agent` (a PASS), `rollout_models --agent qa_agent --start --as admin`, and
approve each stage as a second user in "Rollout approvers" (`--approve --as approver`;
ROLLOUT_MIN_STAGE_HOURS=0 and a low ROLLOUT_MIN_SAMPLES_PER_ARM let it move within the hour). Then this
script, `bench/soak/monitor.py` beside it, and `bench/soak/report.py` on their CSVs. The server's
autovacuum must be on, as in production, or the tables' statistics and dead rows say nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

AGENTS = ["qa_agent", "content_agent", "legal_agent", "support_agent", "analyst_agent"]


class Minute:
    """Latencies and errors of the current minute, per request kind."""

    def __init__(self) -> None:
        self.started = time.time()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.statuses: dict[int | str, int] = defaultdict(int)

    def record(self, kind: str, seconds: float, status: int | None, failure: str = "") -> None:
        self.latencies[kind].append(seconds * 1000)
        if status is None or status >= 500:
            self.errors[kind] += 1
        # A transport failure is counted by its exception's name (RemoteProtocolError, ReadTimeout …).
        self.statuses[status if status is not None else failure] += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        keys_dir = Path(args.keys_dir)
        self.keys = {agent: (keys_dir / f"key_{agent}").read_text().strip() for agent in AGENTS}
        self.key_all = (keys_dir / "key_all").read_text().strip()
        self.client = httpx.AsyncClient(
            base_url=args.base, timeout=30, limits=httpx.Limits(max_connections=args.concurrency)
        )
        self.minute = Minute()
        self.pending: dict[str, list[dict]] = defaultdict(list)
        self.sent_ids: list[tuple[str, dict]] = []
        self.new_user_counter = 0
        self.rng = random.Random(args.seed)
        self.slots = asyncio.Semaphore(args.concurrency)
        self.out = open(args.out, "a", newline="")  # noqa: SIM115 — kept open for the whole run
        self.writer = csv.writer(self.out)
        if self.out.tell() == 0:
            self.writer.writerow(["minute_start", "kind", "count", "errors", "p50_ms", "p99_ms", "max_ms"])

    async def call(self, kind: str, method: str, url: str, key: str | None, **kwargs: Any) -> httpx.Response | None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.slots:
            started = time.perf_counter()
            try:
                response = await self.client.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                self.minute.record(kind, time.perf_counter() - started, None, type(exc).__name__)
                return None
            self.minute.record(kind, time.perf_counter() - started, response.status_code)
            return response

    def user_id(self) -> str:
        if self.rng.random() < self.args.new_user_share:
            self.new_user_counter += 1
            return f"new-{self.args.seed}-{self.new_user_counter}"
        return f"user-{self.rng.randrange(self.args.returning_users)}"

    async def route_and_outcome(self, agent: str) -> None:
        user = self.user_id()
        response = await self.call(
            "route", "POST", "/api/v1/route", self.keys[agent],
            json={"agent": agent, "user_id": user, "attributes": {"country": self.rng.choice(["FR", "DE", "US"])}},
        )
        if response is None or response.status_code != 200:
            return
        decision = response.json()
        treatment = decision["variant"] == "treatment"
        success = self.rng.random() < (0.97 if treatment else 0.96)
        event = {
            "event_id": uuid.uuid4().hex,
            "agent": agent,
            "user_id": user,
            "model": decision["model"],
            "success": success,
            "latency_ms": round(self.rng.lognormvariate(6.6, 0.4), 1),
            "input_tokens": self.rng.randint(80, 400),
            "output_tokens": self.rng.randint(40, 200),
            "quality": round(min(1.0, max(0.0, self.rng.gauss(0.8 if treatment else 0.75, 0.1))), 3),
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        self.pending[agent].append(event)

    async def flush_outcomes(self, agent: str) -> None:
        events, self.pending[agent] = self.pending[agent], []
        if not events:
            return
        # A client retrying after a lost answer: some ids it already sent come back (counted once).
        resent = [e for a, e in self.sent_ids[-200:] if a == agent and self.rng.random() < 0.02]
        response = await self.call(
            "outcomes", "POST", "/api/v1/outcomes", self.keys[agent], json={"events": events + resent[:5]}
        )
        if response is not None and response.status_code == 202:
            self.sent_ids.extend((agent, e) for e in events)
            del self.sent_ids[:-1000]

    async def operator_reads(self, tick: int) -> None:
        if tick % 20 == 0:
            await self.call("results", "GET", "/api/v1/experiments/qa_agent-rollout/results", self.key_all)
            for key in ("content_agent-rollout",):
                await self.call("results", "GET", f"/api/v1/experiments/{key}/results", self.key_all)
        if tick % 15 == 0:
            await self.call("costs", "GET", "/api/v1/costs/summary", self.key_all)
        if tick % 10 == 0:
            agent = AGENTS[(tick // 10) % len(AGENTS)]
            await self.call("health", "GET", f"/api/v1/agents/{agent}/health", self.keys[agent])
            await self.call("config", "GET", f"/api/v1/agents/{agent}/config", self.keys[agent])
        if tick % 15 == 5:
            await self.call("metrics", "GET", "/metrics", None)
        if tick % 10 == 3:
            await self.call("readyz", "GET", "/readyz", None)

    def close_minute(self) -> None:
        minute, self.minute = self.minute, Minute()
        stamp = datetime.fromtimestamp(minute.started, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        parts = []
        for kind, values in sorted(minute.latencies.items()):
            p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            self.writer.writerow([stamp, kind, len(values), minute.errors[kind], f"{p50:.1f}", f"{p99:.1f}",
                                  f"{max(values):.1f}"])
            if kind in ("route", "outcomes"):
                parts.append(f"{kind} n={len(values)} p50={p50:.0f}ms p99={p99:.0f}ms err={minute.errors[kind]}")
        self.out.flush()
        statuses = ",".join(f"{s}:{n}" for s, n in sorted(minute.statuses.items(), key=str))
        print(f"{stamp} {' | '.join(parts)} | status {statuses}", flush=True)

    async def run(self) -> None:
        deadline = time.monotonic() + self.args.minutes * 60
        tasks: set[asyncio.Task] = set()
        next_second = time.monotonic()
        tick = 0
        while time.monotonic() < deadline:
            # Poisson arrivals for this second, spread over it.
            arrivals = sorted(self.rng.random() for _ in range(self._poisson(self.args.rate)))
            for offset in arrivals:
                await asyncio.sleep(max(0.0, next_second + offset - time.monotonic()))
                task = asyncio.create_task(self.route_and_outcome(self.rng.choice(AGENTS)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            next_second += 1
            tick += 1
            if tick % self.args.batch_seconds == 0:
                for agent in AGENTS:
                    task = asyncio.create_task(self.flush_outcomes(agent))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            task = asyncio.create_task(self.operator_reads(tick))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.time() - self.minute.started >= 60:
                self.close_minute()
        await asyncio.gather(*tasks, return_exceptions=True)
        for agent in AGENTS:
            await self.flush_outcomes(agent)
        self.close_minute()
        await self.client.aclose()
        self.out.close()

    def _poisson(self, mean: float) -> int:
        # Knuth's method is slow for large means; a rounded normal is close enough at these rates.
        return max(0, round(self.rng.gauss(mean, mean**0.5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8311")
    parser.add_argument("--keys-dir", default="/tmp/soak")
    parser.add_argument("--rate", type=float, default=35, help="route decisions per second, all agents")
    parser.add_argument("--minutes", type=float, default=55)
    parser.add_argument("--batch-seconds", type=int, default=2, help="each agent posts its outcomes this often")
    parser.add_argument("--returning-users", type=int, default=3000)
    parser.add_argument("--new-user-share", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="soak-latency.csv")
    args = parser.parse_args()
    try:
        asyncio.run(Soak(args).run())
    except KeyboardInterrupt:
        pass
    print("done", flush=True)


if __name__ == "__main__":
    main()
