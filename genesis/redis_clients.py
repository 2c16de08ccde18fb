"""Redis clients for code that must not wait on Redis: a request that can answer without it (the routing
table's generation check, a self-reloading page's record) rather fails at once and goes on."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def fail_fast_redis(url: str, *, timeout: float) -> redis.Redis:
    """A client whose connect and each command give up after `timeout` seconds, with no retries:
    redis-py's default (3 retries with backoff) held a request ~4.5 s when Redis was down. The caller
    keeps it (its pool) for the process."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
