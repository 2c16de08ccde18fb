from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from genesis.schedules import install_default_schedules


class Command(BaseCommand):
    help = ("Install the default Celery beat schedules that are missing; existing ones keep their timing, task, "
            "arguments and switch, edited or not, and take this release's description.")

    def handle(self, *args: Any, **options: Any) -> None:
        created = install_default_schedules()
        self.stdout.write(f"installed {len(created)} schedule(s): {', '.join(created) or 'none missing'}")
