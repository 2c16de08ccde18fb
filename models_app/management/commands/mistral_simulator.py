"""`manage.py mistral_simulator`: serve the Mistral API subset until stopped (see models_app/simulator)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_app.simulator.cli import add_simulator_arguments, config_from_arguments
from models_app.simulator.server import CannotListen, serve


class Command(BaseCommand):
    help = "Serve the Mistral API subset Genesis uses (chat, models, files, fine-tuning jobs) on loopback."
    requires_system_checks: list[str] = []  # a stand-alone server: no database, no checks
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        add_simulator_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = config_from_arguments(options)
        except ValueError as error:
            raise CommandError(f"mistral_simulator: {error}", returncode=2) from None
        try:
            serve(config, announce=self._announce)
        except CannotListen as error:
            raise CommandError(f"mistral_simulator: {error}", returncode=2 if error.usage else 1) from None

    def _announce(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()  # `make run` logs to a file: say we are up now, not at exit
