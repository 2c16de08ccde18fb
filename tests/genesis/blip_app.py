"""A Celery app for tests/genesis/test_broker_outage.py: Genesis's Celery settings and Redis transport
(genesis/settings.py, genesis/broker.py) with one slow task that writes when it starts and ends, and no
lock of its own — as a notice or a report task — so that two runs of one message side by side show."""

from __future__ import annotations

import os
import time

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
django.setup()

app = Celery("blip")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.broker_url = os.environ["BLIP_BROKER_URL"]


@app.task(name="blip.slow")
def slow(path: str, seconds: float) -> None:
    with open(path, "a") as runs:
        runs.write(f"start {time.time()}\n")
    time.sleep(seconds)
    with open(path, "a") as runs:
        runs.write(f"end {time.time()}\n")
