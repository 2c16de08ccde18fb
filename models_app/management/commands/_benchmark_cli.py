"""What `benchmark_finetuned` and `run_all_benchmarks` share: resolving names given on the command
line, checking a worker is there, waiting for runs with a progress bar, and printing comparisons.
(The leading underscore keeps Django from listing this module as a command.)"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from costs.budgeting import format_usd
from genesis.commands import usage_error
from genesis.errors import DomainError, ServiceUnavailable
from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite, BenchmarkVerdict
from models_app.benchmarks.reruns import confidence_text
from models_app.benchmarks.selectors import (
    benchmark_run_gate,
    benchmark_run_get,
    benchmark_run_summary,
    benchmark_summary_not_started,
    comparison_only_warning,
    run_verdict_note,
    version_named,
)
from models_app.benchmarks.tasks import benchmark_runs_resume, benchmark_workers
from models_app.registry.models import Agent, ModelStatus, ModelVersion

START_WORKER_COMMAND = ".venv/bin/celery -A genesis worker -Q default,benchmarks --loglevel INFO"
POLL_SECONDS = 0.5
RESUME_CHECK_SECONDS = 30.0


def add_actor_arguments(parser: CommandParser) -> None:
    """`--as` and `--override-reason`, as `fine_tune create` takes them: the budget refusal's advice
    ("pass an override reason as a user with costs.override_budget") is done here; the service checks
    the permission."""
    parser.add_argument("--as", dest="username", metavar="USERNAME",
                        help="start the run as this user (permissions and history); default: the system")
    parser.add_argument("--override-reason", metavar="TEXT",
                        help="go over a hard budget that refuses the run (needs --as a user with costs.override_budget); "
                             "kept on the run and as a budget override")


def resolve_suite(agent: Agent, slug: str | None) -> BenchmarkSuite | None:
    if slug is None:
        return None
    suite = BenchmarkSuite.objects.filter(agent=agent, slug=slug).order_by("-version").first()
    if suite is None:
        known = ", ".join(sorted(set(agent.benchmark_suites.values_list("slug", flat=True)))) or "none"
        raise usage_error(f"agent '{agent.slug}' has no benchmark suite '{slug}'; its suites: {known}")
    return suite


def resolve_version(agent: Agent, model_id: str | None, role: str) -> ModelVersion | None:
    if model_id is None:
        return None
    try:
        return version_named(agent=agent, model_id=model_id, field=f"--{role}")
    except DomainError as exc:
        raise usage_error(exc.message) from None


def require_worker(timeout: float = 3.0) -> None:
    try:
        workers = benchmark_workers(timeout=timeout)
    except ServiceUnavailable as exc:
        raise CommandError(exc.message, returncode=1) from None
    if not workers:
        raise CommandError(
            f"no Celery worker consuming the 'benchmarks' queue answered within {timeout:g} s; start one with:\n"
            f"  {START_WORKER_COMMAND}\n(or `make run`, which starts one), then run this command again",
            returncode=1,
        )


def raw_stream(wrapper: Any) -> TextIO:
    """The stream under a command's OutputWrapper: the bar redraws with '\r', and the wrapper
    would end every write with a newline."""
    return getattr(wrapper, "_out", wrapper)


class ProgressBar:
    """A one-line bar on stderr, redrawn in place; only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.last = ""

    def draw(self, runs: list[BenchmarkRun]) -> None:
        if not self.enabled:
            return
        done = sum(run.completed_items for run in runs)
        total = sum(run.total_items for run in runs) or 1
        width = 30
        filled = int(width * done / total)
        states = ", ".join(sorted({run.status for run in runs}))
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} pairs ({100 * done / total:.0f} %) {states}"
        if line != self.last:
            self.stream.write(line + " " * max(0, len(self.last) - len(line)))
            self.stream.flush()
            self.last = line

    def close(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\n")
            self.stream.flush()


def wait_for_runs(run_ids: list[int], *, stderr: TextIO = sys.stderr) -> list[BenchmarkRun]:
    """Poll until every run is finished; hand dead workers' chunks on now and then (as beat does)."""

    bar = ProgressBar(stderr)
    last_resume = time.monotonic()
    try:
        while True:
            runs = [_existing_run(run_id) for run_id in run_ids]
            bar.draw(runs)
            if all(run.is_finished for run in runs):
                return runs
            if time.monotonic() - last_resume >= RESUME_CHECK_SECONDS:
                # Without beat (a bare worker), a killed worker's chunks would wait forever.
                benchmark_runs_resume.delay()
                last_resume = time.monotonic()
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()


def _existing_run(run_id: int) -> BenchmarkRun:
    run = benchmark_run_get(run_id=run_id)
    if run is None:
        raise CommandError(f"run #{run_id} was deleted while waiting for it (admin: Benchmark runs)", returncode=1)
    return run


def wait_or_stop(command: BaseCommand, run_ids: list[int]) -> list[BenchmarkRun]:
    """`wait_for_runs` with the progress on the command's stderr. Ctrl-C stops the waiting only (exit
    130): the runs go on in the workers."""
    try:
        return wait_for_runs(run_ids, stderr=raw_stream(command.stderr)) if run_ids else []
    except KeyboardInterrupt:
        runs = ", ".join(f"#{pk}" for pk in run_ids)
        command.stderr.write(f"\nstopped waiting; run {runs} going on in the workers (admin: Benchmark runs)")
        raise SystemExit(130) from None


def write_json(command: BaseCommand, payload: Any, *, runs: list[BenchmarkRun]) -> None:
    """The --json answer on stdout; why a run has no verdict on stderr."""
    command.stdout.write(json.dumps(payload))
    for run in runs:
        if note := no_verdict_note(run) or verdict_note_line(run):
            command.stderr.write(note)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} %"


def comparison_text(run: BenchmarkRun) -> str:
    summary = benchmark_run_summary(run=run)
    comparison = run.comparison or {}
    lines = [
        f"run #{run.pk} {run.agent.slug}: {run.candidate.model_id} vs {run.baseline.model_id} "
        f"on suite {run.suite.slug} v{run.suite_version} ({run.total_items // 2} cases) — {run.status}",
    ]
    for side in ("baseline", "candidate"):
        entry = summary[side]
        mean = "—" if entry["mean_score"] is None else f"{entry['mean_score']:.3f}"
        lines.append(f"  {side:<9}  {entry['model']:<45} mean {mean}  (n={entry['n']})")
    if run.verdict:
        ci = summary["ci95"]
        # A re-run reads a wider interval than 95 % (reruns.rerun_alpha): say which.
        level = f"{confidence_text(float(comparison.get('confidence', 0.95)))} CI"
        interval = f"{level} [{percent(ci[0])}, {percent(ci[1])}]" if ci else f"{level} —"
        lines.append(
            f"  relative improvement {percent(summary['relative_improvement'])}, {interval} "
            f"(threshold {percent(comparison.get('threshold'))})"
        )
        lines.append(f"  verdict: {run.verdict}")
        if note := run_verdict_note(run=run):
            lines.append(f"  {note} (the baseline was not the live version: this run only compares)")
        gate = benchmark_run_gate(run=run)
        lines.append(f"  rule: {gate.rule} — {gate.rule_text}")
        lines.append(f"  {gate.rerun_text}")
        if gate.mc_se:
            errors = ", ".join("—" if se is None else f"±{se:.5f}" for se in gate.mc_se)
            lines.append(f"  {gate.resamples} resamples, seed {gate.seed}; Monte-Carlo error of the interval's ends {errors}"
                         + (" — within MC error of flipping" if gate.mc_close else ""))
        lines += [f"    - {reason}" for reason in comparison.get("reasons", [])]
        per_tag = comparison.get("per_tag", [])
        if per_tag:
            lines.append("  per tag:" + "".join(
                f"\n    {row['tag']:<24} n={row['n']:<4} baseline {row['baseline_mean']:.3f}  candidate {row['candidate_mean']:.3f}"
                for row in per_tag
            ))
        worse = comparison.get("regressions", [])
        if worse:
            lines.append(f"  worse on {len(worse)} case(s): " + ", ".join(r["key"] for r in worse[:10]) + (" …" if len(worse) > 10 else ""))
        if comparison.get("candidate_status"):
            lines.append(f"  candidate is now {comparison['candidate_status']}")
    if run.error:
        lines.append(f"  error: {run.error}")
    lines.append(f"  suite's power: {benchmark_run_gate(run=run).plan.summary()}")
    lines.append(f"  cost: {format_usd(Decimal(summary['cost_usd']))} (estimated {format_usd(run.estimated_cost_usd)})")
    return "\n".join(lines)


def json_object(run: BenchmarkRun) -> dict[str, Any]:
    """The contract's object, with its keys whatever became of the run, plus two extra keys: "gate" (the
    rule applied, the resampling and its Monte-Carlo error, and the suite's sample-size plan) and
    "error" (null when the gate decided). A failed or cancelled run decided nothing: its verdict is
    INCONCLUSIVE — the contract's verdict is one of PASS, FAIL, INCONCLUSIVE — and "error" says why."""
    summary = benchmark_run_summary(run=run)
    error = None
    if summary["verdict"] is None:
        summary["verdict"] = BenchmarkVerdict.INCONCLUSIVE.value
        error = f"run {run.status}" + (f": {run.error}" if run.error else "")
    return {**summary, "gate": benchmark_run_gate(run=run).as_dict(), "error": error}


def not_started_object(reason: str) -> dict[str, Any]:
    """The object of a run that could not start: the contract's keys, "run" and "gate" null, nothing
    measured, verdict INCONCLUSIVE (no conclusion could be drawn) and `reason` as "error"."""
    return {**benchmark_summary_not_started(), "verdict": BenchmarkVerdict.INCONCLUSIVE.value, "gate": None,
            "error": reason}


def verdict_note_line(run: BenchmarkRun) -> str | None:
    """For standard error beside --json (whose object keeps the contract's keys): a verdict that decides
    nothing about the candidate, said plainly."""
    note = run_verdict_note(run=run)
    return f"run #{run.pk} {run.agent.slug}: {note} (the baseline was not the live version: this run only compares)" if note else None


def starting_note(run: BenchmarkRun) -> str | None:
    """Said as a run starts whose baseline is not the live version."""
    return None if run.baseline.status == ModelStatus.LIVE else comparison_only_warning(run=run)


def no_verdict_note(run: BenchmarkRun) -> str | None:
    """Why a finished run has no verdict, or None when it has one."""
    if run.verdict:
        return None
    return f"run #{run.pk} {run.agent.slug}: {run.status}" + (f": {run.error}" if run.error else "")
