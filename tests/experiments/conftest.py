"""Experiments tests: every test starts with an empty routing table and no leftover routing keys
in Redis (the table and the counters outlive a test's database transaction)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from experiments import routing
from tests.experiments.factories import rollout_team

# Read once: a test may point settings.REDIS_URL at a dead port.
REDIS_URL = settings.REDIS_URL


def _clear_redis_keys() -> None:
    if not REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(routing.GENERATION_KEY, routing.EXPOSURE_LIST_KEY, routing.EXPOSURE_DEAD_LETTER_KEY)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _fresh_routing() -> Iterator[None]:
    routing.reset()
    _clear_redis_keys()
    yield
    routing.reset()
    _clear_redis_keys()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The real hasher costs ~0.2 s a user; these tests make several users each and test no passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team():
    """The people of a rollout (tests/experiments/factories.py rollout_team); test_admin overrides it
    to let them see experiments in the admin too."""
    return rollout_team()
