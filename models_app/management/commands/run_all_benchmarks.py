"""`manage.py run_all_benchmarks [--json] [--as USERNAME] [--override-reason TEXT]`: `benchmark_finetuned`
for every agent with a candidate — a fine-tune registered, approved for rollout or being benchmarked; the
others are named on stderr with their newest fine-tune's status (`--override-reason`, given `--as` a user with costs.override_budget,
goes over a hard budget for each run it refuses).

Each agent gets its own run (stored on its own); the runs go to the workers together and the command
waits for all of them. Exit 0 when every run PASSes, 1 otherwise (or when a run could not start).

With --json: a list with one object per agent, each the contract's object plus "agent" and "gate"; an agent whose
run could not start (refused, or no worker) has "run": null and nulls for what was not measured. Why
a run could not start or has no verdict goes to stderr.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from genesis.commands import command_user
from genesis.errors import DomainError
from models_app.benchmarks.models import BenchmarkVerdict
from models_app.benchmarks.selectors import agents_left_out_of_benchmarks, agents_with_benchmark_candidates
from models_app.benchmarks.services import benchmark_run_create
from models_app.management.commands._benchmark_cli import (
    add_actor_arguments,
    comparison_text,
    json_object,
    not_started_object,
    require_worker,
    wait_or_stop,
    write_json,
)


class Command(BaseCommand):
    help = "Benchmark the candidate of every agent that has one; exit 0 only if all PASS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print a JSON list, one object per agent")
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = command_user(options["username"])
        agents = agents_with_benchmark_candidates()
        left_out = agents_left_out_of_benchmarks(benchmarked=agents)
        if left_out:  # a fine-tune rolling out or live has passed its gate; one rejected waits for a new one
            self.stderr.write(f"not benchmarked, no fine-tune waiting for its benchmark: {'; '.join(left_out)}")
        if not agents:
            if options["json"]:
                self.stdout.write("[]")
            else:
                self.stdout.write("no agent has a fine-tuned candidate to benchmark")
            return
        try:
            require_worker()
        except CommandError as exc:
            if options["json"]:
                self.stdout.write(json.dumps([{"agent": agent.slug, **not_started_object(str(exc))} for agent in agents]))
            raise
        started, refused = [], []
        for agent in agents:
            try:
                run = benchmark_run_create(agent=agent, requested_via="command: run_all_benchmarks", actor=actor,
                                           budget_override_reason=options["override_reason"])
            except DomainError as exc:
                refused.append({"agent": agent.slug, **not_started_object(exc.message)})
                self.stderr.write(f"{agent.slug}: not started: {exc.message}")
                continue
            started.append(run.pk)
        if not options["json"]:
            self.stderr.write(f"{len(started)} run(s) queued; waiting for the workers…")
        runs = wait_or_stop(self, started)
        if options["json"]:
            objects = [{"agent": run.agent.slug, **json_object(run)} for run in runs] + refused
            write_json(self, sorted(objects, key=lambda entry: entry["agent"]), runs=runs)
        else:
            self.stdout.write("\n\n".join(comparison_text(run) for run in runs))
            verdicts = ", ".join(f"{run.agent.slug} {run.verdict or run.status}" for run in runs)
            self.stdout.write(f"\nsummary: {verdicts}" + (f"; not started: {', '.join(r['agent'] for r in refused)}" if refused else ""))
        if refused or any(run.verdict != BenchmarkVerdict.PASS for run in runs):
            raise SystemExit(1)
