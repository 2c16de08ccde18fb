"""`manage.py export_benchmark_suite --agent NAME --slug SLUG [--suite-version N] [--out FILE]`

Writes a suite version as JSONL (standard output by default), ready for `import_benchmark_suite`.
Exit 0 written, 2 usage error (unknown agent or suite, or an --out path that cannot be written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from genesis.commands import command_agent, usage_error
from models_app.benchmarks.models import BenchmarkSuite
from models_app.benchmarks.selectors import benchmark_suite_jsonl


class Command(BaseCommand):
    help = "Export a benchmark suite version as JSONL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, metavar="NAME")
        parser.add_argument("--slug", required=True, metavar="SLUG")
        parser.add_argument("--suite-version", type=int, default=None, dest="suite_version", help="default: the latest")
        parser.add_argument("--out", default=None, metavar="FILE", help="default: standard output")

    def handle(
        self, *args: Any, agent: str, slug: str, suite_version: int | None, out: str | None, **options: Any
    ) -> None:
        found = command_agent(agent)
        suites = BenchmarkSuite.objects.filter(agent=found, slug=slug)
        suite = (suites.filter(version=suite_version) if suite_version else suites.order_by("-version")).first()
        if suite is None:
            version = f" v{suite_version}" if suite_version else ""
            raise usage_error(f"agent '{found.slug}' has no benchmark suite '{slug}'{version}")
        text = benchmark_suite_jsonl(suite=suite)
        if out:
            try:
                Path(out).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise usage_error(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
            self.stderr.write(f"{suite}: {suite.case_count} cases written to {out}")
        else:
            self.stdout.write(text, ending="")
