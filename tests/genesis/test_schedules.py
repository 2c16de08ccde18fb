"""Installing the default beat schedules on an upgraded database: the entries a release adds are created,
the ones already there keep what a person may have edited (timing, switch) and take the release's
description. An installation upgraded from 2026-12-06 kept the audits' sweep described as acting on
jobs "killed past the time limit" after it had come to act within a minute of a worker's death."""

from __future__ import annotations

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from genesis.schedules import DEFAULT_SCHEDULES, install_default_schedules

AUDITS_SWEEP = "audits: resend stranded audits"
OLD_RELEASE_TEXT = "Sends again the audits and dataset copies whose message was lost (queued > 10 min, or killed past the time limit)."


@pytest.mark.django_db
def test_an_upgrade_brings_descriptions_up_to_date_and_keeps_a_persons_edits():
    install_default_schedules()
    every_two_minutes, _ = IntervalSchedule.objects.get_or_create(every=120, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name=AUDITS_SWEEP).update(description=OLD_RELEASE_TEXT, interval=every_two_minutes, enabled=False)
    missing = DEFAULT_SCHEDULES[-1].name
    PeriodicTask.objects.filter(name=missing).delete()

    created = install_default_schedules()

    assert created == [missing]
    sweep = PeriodicTask.objects.get(name=AUDITS_SWEEP)
    release = next(entry for entry in DEFAULT_SCHEDULES if entry.name == AUDITS_SWEEP)
    assert sweep.description == release.description
    assert (sweep.interval.every, sweep.enabled) == (120, False)
    assert PeriodicTask.objects.filter(name__in=[entry.name for entry in DEFAULT_SCHEDULES]).count() == len(DEFAULT_SCHEDULES)
