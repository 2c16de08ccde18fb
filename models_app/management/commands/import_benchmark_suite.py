"""`manage.py import_benchmark_suite PATH --agent NAME --slug SLUG [--description TEXT]`

Validates the JSONL file line by line and imports it as the next version of the suite (the same
cases as the latest version import as that version). Exit 0 imported or unchanged, 1 the file was
refused (every problem is printed with its line number), 2 usage error or unreadable file.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from genesis.commands import command_agent, usage_error
from genesis.errors import DomainError
from models_app.benchmarks.services import benchmark_suite_import


class Command(BaseCommand):
    help = "Import a benchmark suite from a JSONL file (validated line by line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", metavar="PATH", help="the JSONL file, '-' for standard input")
        parser.add_argument("--agent", required=True, metavar="NAME")
        parser.add_argument("--slug", required=True, metavar="SLUG", help="the suite's slug (a new one starts a suite)")
        parser.add_argument("--description", default=None)

    def handle(self, *args: Any, path: str, agent: str, slug: str, description: str | None, **options: Any) -> None:
        import sys

        found = command_agent(agent)
        try:
            handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise usage_error(f"cannot read {path}: {exc.strerror}") from None
        try:
            imported = benchmark_suite_import(
                agent=found, slug=slug, lines=handle, description=description, source=f"command: {path}"
            )
        except UnicodeDecodeError:
            raise usage_error(f"{path} is not UTF-8 text") from None
        except DomainError as exc:
            raise CommandError(exc.message.replace("; line", "\n  line"), returncode=1) from None
        finally:
            if handle is not sys.stdin:
                handle.close()
        suite = imported.suite
        state = "imported" if imported.created else "unchanged (same cases as the latest version)"
        self.stdout.write(f"{suite}: {suite.case_count} cases, {state}")
