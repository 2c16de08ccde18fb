"""Choose the services the test run uses, before Django reads its settings.

Loaded with `-p genesis.pytest_services` (pytest.ini), so it runs before pytest-django imports the
settings. With DATABASE_URL / REDIS_URL set, those are used. Otherwise the local defaults
(Postgres at 127.0.0.1:5432, Redis at 127.0.0.1:6379) are used when they answer, and the embedded
SQLite + file-system broker when they do not — unless GENESIS_REQUIRE_SERVICES=1, which turns a
missing service into an error (CI sets it, so a silent fallback cannot pass for a real run).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    default_port = {"postgres": 5432, "postgresql": 5432, "redis": 6379}.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def choose_services(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Set DATABASE_URL / REDIS_URL in `environ`; return the problems when services are required."""
    required = environ.get("GENESIS_REQUIRE_SERVICES", "") == "1"
    problems = []
    for variable, local_default, name in (
        ("DATABASE_URL", LOCAL_POSTGRES_URL, "PostgreSQL"),
        ("REDIS_URL", LOCAL_REDIS_URL, "Redis"),
    ):
        url = environ.get(variable) or local_default
        if _reachable(url):
            environ[variable] = url
        elif required:
            problems.append(f"{name} is not reachable at {url} (set {variable}, or start it)")
        else:
            environ.pop(variable, None)
    return problems


_problems = choose_services(os.environ)
# Tests never talk to a real provider: the simulator accepts this key.
os.environ.setdefault("GENESIS_SIMULATOR_API_KEY", "sim-key")
# Tests start simulators and stub servers on free loopback ports: the simulator's key, and accounts
# without a key, may call any of them (tests/models_app/test_provider_destinations.py checks the rules).
os.environ.setdefault("GENESIS_PROVIDER_HOSTS", "GENESIS_SIMULATOR_API_KEY=127.0.0.1:*,127.0.0.1:*")
os.environ["GENESIS_ENV"] = "dev"


def pytest_configure(config: pytest.Config) -> None:
    if _problems:
        raise pytest.UsageError(
            "GENESIS_REQUIRE_SERVICES=1 but " + "; ".join(_problems)
        )


def pytest_report_header(config: pytest.Config) -> str:
    database = os.environ.get("DATABASE_URL", "embedded SQLite")
    redis = os.environ.get("REDIS_URL", "none (file-system broker, local cache)")
    return f"genesis services: database={database} redis={redis}"
