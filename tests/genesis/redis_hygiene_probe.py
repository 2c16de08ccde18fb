"""Run by tests/genesis/test_redis_hygiene.py in a pytest session of its own (not collected here)."""

import os

from django.core.cache import cache


def test_writes_to_redis_like_the_suite_does():
    # The Django cache (judge answers) and a Celery message to a queue no worker reads (kombu
    # bindings and the queue list) — the keys a real run leaves behind.
    cache.set(f"genesis-hygiene-probe:{os.environ['PROBE_ID']}", "x", timeout=None)
    from genesis.celery import app

    with app.connection_for_write() as connection:
        producer = connection.Producer()
        producer.publish({"probe": os.environ["PROBE_ID"]}, routing_key=f"hygiene-probe-{os.environ['PROBE_ID']}",
                         declare=[], retry=False)
