"""`make test` leaves no keys in its Redis database (issue 18, finding 12): a pytest session of its own
writes to Redis as the suite does (the cache, a Celery message), and once it has ended none of the
keys it made is left, while a key that was there before is."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis

from tests.conftest import ROOT, child_environment


def test_a_test_session_deletes_the_redis_keys_it_created(settings):
    if not settings.REDIS_URL:
        pytest.skip("no Redis configured for this run")
    client = redis.Redis.from_url(settings.REDIS_URL)
    probe = uuid.uuid4().hex
    kept = f"genesis-hygiene-kept:{probe}"
    client.set(kept, "there before")
    try:
        before = set(client.scan_iter(count=1000))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/genesis/redis_hygiene_probe.py"],
            cwd=ROOT, env=child_environment(PROBE_ID=probe), capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "1 passed" in done.stdout
        left = {key for key in client.scan_iter(count=1000) if key not in before}
        assert left == set(), left
        assert client.get(kept) == b"there before"
    finally:
        client.delete(kept)
