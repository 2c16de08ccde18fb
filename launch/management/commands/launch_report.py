"""`manage.py launch_report [--agent A] [--format md|html|json] [--out FILE]`: the Go/No-Go report.
Exit 0 when every agent with a candidate is GO, 1 otherwise, 2 usage (unknown agent, unwritable --out)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from genesis.errors import NotFound
from launch import report
from launch.selectors import launch_report_facts


class Command(BaseCommand):
    help = (
        "Go/No-Go report per agent: candidate, benchmark verdict and relative improvement with its interval, suite "
        "size, per-tag wins and regressions, training-data audit, rollout state, cost so far, and a recommendation "
        "with its reasons. Exit 0 when every agent with a candidate is GO, 1 otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", metavar="A", help="only this agent")
        parser.add_argument("--format", dest="fmt", choices=tuple(report.FORMATS), default="md")
        parser.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")

    def handle(self, *args: Any, agent: str | None, fmt: str, out: str | None, **options: Any) -> None:
        try:
            entries = launch_report_facts(agent_slug=agent)
        except NotFound as exc:
            raise CommandError(exc.message, returncode=2) from None
        text = report.render(entries, fmt=fmt, generated_at=timezone.now())
        go = report.all_go(entries)
        if out:
            try:
                Path(out).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {out}: {exc.strerror or exc}", returncode=2) from None
            decided = [(f["agent"], report.judge(f).decision) for f in entries if f.get("candidate")]
            self.stdout.write(f"wrote the {fmt} report to {out}: " + (
                ", ".join(f"{name} {decision}" for name, decision in decided) or "no agent has a candidate"))
        else:
            self.stdout.write(text)
        if not go:
            # The report says why; exit 1 tells a script that not every candidate may launch.
            no_go = [f["agent"] for f in entries if report.judge(f).decision == report.NO_GO]
            self.stderr.write(f"NO-GO: {', '.join(no_go)}")
            sys.exit(1)
