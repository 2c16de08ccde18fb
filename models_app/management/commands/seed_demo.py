from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from genesis.demo import seed_demo_world


class Command(BaseCommand):
    help = (
        "Build the idempotent demo world: the five agents with a baseline and a fine-tuned model each on "
        "the simulator provider, benchmark suites, the default budget, and a superuser."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        seed_demo_world(out=self.stdout)
        self.stdout.write(self.style.SUCCESS("demo world ready"))
