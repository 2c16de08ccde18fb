"""The benchmark part of the demo world `seed_demo` builds: one suite per demo agent, imported from
models_app/benchmarks/suites/<agent>.jsonl (≥ 30 cases each). Every case's prompt carries the
simulator's answer marker, so on the demo a model's score follows the simulator's quality setting for
it (fine-tuned `ft:*` 0.85 against base 0.55 by default: the fine-tunes PASS). Idempotent: an
unchanged file imports as the existing version."""

from __future__ import annotations

from django.core.management.base import OutputWrapper

from models_app.benchmarks.services import benchmark_suite_import
from models_app.benchmarks.suites import demo_suite_path
from models_app.registry.demo import DEMO_AGENTS
from models_app.registry.models import Agent

DEMO_SUITE_SLUG = "core"


def seed_benchmark_suites(*, out: OutputWrapper) -> None:
    lines = []
    for slug in DEMO_AGENTS:
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None:
            continue  # the registry step makes the agents; nothing to attach a suite to without it
        path = demo_suite_path(slug)
        with path.open(encoding="utf-8") as handle:
            imported = benchmark_suite_import(agent=agent, slug=DEMO_SUITE_SLUG, lines=handle, source=f"seed_demo: {path.name}")
        state = "imported" if imported.created else "unchanged"
        lines.append(f"{slug}/{DEMO_SUITE_SLUG} v{imported.suite.version} ({imported.suite.case_count} cases, {state})")
    out.write("benchmarks: " + ", ".join(lines))
