"""`manage.py benchmark_finetuned --agent NAME [--suite SLUG] [--candidate MODEL] [--baseline MODEL] [--json]
[--as USERNAME] [--override-reason TEXT]`

Runs the suite on both models through Celery (a worker must consume the `benchmarks` queue), waits,
and prints the comparison. Only a PASS against the agent's live model (the default baseline) approves
the candidate for rollout; a verdict against another --baseline is a comparison, said so in the text and on
stderr beside --json. Exit 0 on PASS, 1 otherwise (FAIL, INCONCLUSIVE, a refusal such as the
budget, a failed run, no worker), 2 on a usage error (a name that matches nothing, or arguments the
service refuses as invalid, such as the same model as candidate and baseline).

With --json, every exit 0 or 1 prints the contract's object with all its keys (nulls for what does not
exist: a run that never started has "run": null), plus "gate" (the rule applied, the resampling and its
Monte-Carlo error, the suite's sample-size plan); the reason for a missing verdict goes to stderr.

A hard budget that cannot take the run's estimate refuses it (exit 1) unless `--override-reason` is
given `--as` a user with costs.override_budget (the service checks the permission and records the
override).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from costs.budgeting import format_usd
from genesis.commands import command_agent, command_user, usage_error
from genesis.errors import DomainError, InvalidInput
from models_app.benchmarks.models import BenchmarkVerdict
from models_app.benchmarks.services import benchmark_run_create
from models_app.management.commands._benchmark_cli import (
    add_actor_arguments,
    comparison_text,
    json_object,
    not_started_object,
    require_worker,
    resolve_suite,
    resolve_version,
    starting_note,
    wait_or_stop,
    write_json,
)


class Command(BaseCommand):
    help = "Benchmark an agent's fine-tuned candidate against its baseline through Celery and print the verdict."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, metavar="NAME", help="agent slug, e.g. qa_agent")
        parser.add_argument("--suite", metavar="SLUG", help="suite slug (default: the agent's latest suite)")
        parser.add_argument("--candidate", metavar="MODEL", help="candidate model id (default: the newest fine-tune that is registered, approved "
                                 "or being benchmarked; refused, naming the run, while it is)")
        parser.add_argument("--baseline", metavar="MODEL", help="baseline model id (default: the live model; a PASS against "
                                 "any other version is a comparison, not an approval)")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        agent = command_agent(options["agent"])
        suite = resolve_suite(agent, options["suite"])
        candidate = resolve_version(agent, options["candidate"], "candidate")
        baseline = resolve_version(agent, options["baseline"], "baseline")
        actor = command_user(options["username"])
        try:
            require_worker()
            run = benchmark_run_create(
                agent=agent, suite=suite, candidate=candidate, baseline=baseline,
                requested_via="command: benchmark_finetuned", actor=actor,
                budget_override_reason=options["override_reason"],
            )
        except InvalidInput as exc:
            raise usage_error(exc.message) from None
        except (DomainError, CommandError) as exc:
            # Refused (budget, a candidate already in a run, …) or no worker: nothing started.
            if options["json"]:
                self.stdout.write(json.dumps(not_started_object(str(exc))))
            raise CommandError(str(exc), returncode=1) from None
        if note := starting_note(run):
            self.stderr.write(note)
        if not options["json"]:
            self.stderr.write(
                f"run #{run.pk}: {run.candidate.model_id} vs {run.baseline.model_id}, {run.total_items} pairs, "
                f"estimated {format_usd(run.estimated_cost_usd)}; waiting for the workers…"
            )
        (finished,) = wait_or_stop(self, [run.pk])
        if options["json"]:
            write_json(self, json_object(finished), runs=[finished])
        else:
            self.stdout.write(comparison_text(finished))
        if finished.verdict != BenchmarkVerdict.PASS:
            raise SystemExit(1)
