"""Default Celery beat schedules, installed into django-celery-beat's tables so people can edit or
disable them in the admin. Installing never overwrites an existing entry (an edit survives restarts
and upgrades); run by `seed_demo` and by `manage.py install_schedules` on a deployment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    every_seconds: int | None = None
    crontab: str | None = None  # "minute hour day_of_month month_of_year day_of_week"
    kwargs: dict[str, object] = field(default_factory=dict)
    description: str = ""


# Each app adds its entries here.
DEFAULT_SCHEDULES: list[DefaultSchedule] = []


def install_default_schedules() -> list[str]:
    """Create the missing schedules; return the names created."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = []
    for entry in DEFAULT_SCHEDULES:
        if PeriodicTask.objects.filter(name=entry.name).exists():
            continue
        timing: dict[str, object] = {}
        if entry.every_seconds is not None:
            timing["interval"], _ = IntervalSchedule.objects.get_or_create(
                every=entry.every_seconds, period=IntervalSchedule.SECONDS
            )
        else:
            minute, hour, day_of_month, month_of_year, day_of_week = (entry.crontab or "").split()
            timing["crontab"], _ = CrontabSchedule.objects.get_or_create(
                minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                day_of_week=day_of_week,
            )
        PeriodicTask.objects.create(
            name=entry.name, task=entry.task, kwargs=json.dumps(entry.kwargs), description=entry.description, **timing
        )
        created.append(entry.name)
    return created
