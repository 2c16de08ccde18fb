"""The demo world `seed_demo` builds, step by step; every step is idempotent, so the command can run
again after an upgrade and only adds what is missing. Each app owns its own step."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.core.management.base import OutputWrapper
from django.db import transaction

from audits.demo import seed_audits
from costs.demo import seed_costs
from experiments.demo import seed_experiments
from genesis.schedules import install_default_schedules
from models_app.benchmarks.demo import seed_benchmark_suites
from models_app.registry.demo import seed_registry

DEMO_ADMIN_USERNAME = "admin"


def seed_admin(*, out: OutputWrapper) -> None:
    """The superuser. Its password comes from GENESIS_ADMIN_PASSWORD, or is generated and printed
    once, when the user is created; it is never printed again."""
    User = get_user_model()
    if User.objects.filter(username=DEMO_ADMIN_USERNAME).exists():
        out.write(f"admin: user '{DEMO_ADMIN_USERNAME}' already exists (password unchanged)")
        return
    password = os.environ.get("GENESIS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=DEMO_ADMIN_USERNAME, email="admin@example.com", password=password)
    if os.environ.get("GENESIS_ADMIN_PASSWORD"):
        out.write(f"admin: created superuser '{DEMO_ADMIN_USERNAME}' with the password from GENESIS_ADMIN_PASSWORD")
    else:
        out.write(f"admin: created superuser '{DEMO_ADMIN_USERNAME}' with password: {password}  (shown once)")


def seed_schedules(*, out: OutputWrapper) -> None:
    created = install_default_schedules()
    out.write(f"schedules: {len(created)} installed" + (f" ({', '.join(created)})" if created else ""))


# Each app appends its step; order matters where a step uses what an earlier one made.
DEMO_STEPS: list[Callable[..., None]] = [
    seed_admin,
    seed_registry,
    seed_costs,
    seed_benchmark_suites,
    seed_experiments,
    seed_audits,
    seed_schedules,
]


def seed_demo_world(*, out: OutputWrapper) -> None:
    for step in DEMO_STEPS:
        with transaction.atomic():
            step(out=out)
