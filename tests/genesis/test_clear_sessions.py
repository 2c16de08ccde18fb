"""Beat clears expired admin sessions daily with Django's clearsessions (the table kept them forever)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone

from genesis.schedules import DEFAULT_SCHEDULES
from genesis.tasks import clear_expired_sessions
from tests.conftest import ROOT, child_environment

pytestmark = pytest.mark.django_db


def test_the_daily_task_deletes_expired_sessions_only_and_is_scheduled():
    now = timezone.now()
    Session.objects.create(session_key="expired", session_data="x", expire_date=now - timedelta(seconds=1))
    Session.objects.create(session_key="current", session_data="x", expire_date=now + timedelta(days=1))
    clear_expired_sessions()
    assert list(Session.objects.values_list("session_key", flat=True)) == ["current"]
    entry = next(entry for entry in DEFAULT_SCHEDULES if entry.task == "genesis.clear_expired_sessions")
    assert entry.crontab == "45 3 * * *"


def test_a_worker_finds_the_task_by_name():
    """A worker imports each app's tasks module; genesis is no app, so its tasks are discovered apart."""
    script = ("from genesis.celery import app; import django; django.setup(); app.loader.import_default_modules(); "
              "print(sorted(name for name in app.tasks if name.startswith(('genesis.', 'experiments.prune'))))")
    found = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_environment(),
                           capture_output=True, text=True, timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert found == "['experiments.prune_outcomes', 'genesis.clear_expired_sessions']"
