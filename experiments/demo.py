"""The experiments part of the demo world `seed_demo` builds: the two roles of a staged rollout as
groups, and a draft experiment per agent with a candidate. Idempotent."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.core.management.base import OutputWrapper

from experiments.models import Experiment
from experiments.services import experiment_create
from models_app.registry.models import Agent
from models_app.registry.selectors import candidate_versions, live_version

# Four-eyes needs two people: operators benchmark, start, request and roll back; approvers approve
# stages. Both may read the evidence a stage is judged on: the candidate, its benchmark runs, its
# fine-tuning job and the audit of its training data ("app.codename"; bare names are experiments').
EVIDENCE = (
    "view_experiment", "models_app.view_agent", "models_app.view_modelversion", "models_app.view_benchmarkrun",
    "models_app.view_benchmarksuite", "models_app.view_finetuningjob", "models_app.view_trainingfile",
    "audits.view_dataset", "audits.view_auditrun", "costs.view_costentry",
)
DEMO_GROUPS: dict[str, tuple[str, ...]] = {
    "Rollout operators": (
        *EVIDENCE, "add_experiment", "change_experiment", "start_experiment", "request_stage",
        "pause_experiment", "rollback_experiment", "models_app.add_benchmarkrun",
    ),
    "Rollout approvers": (*EVIDENCE, "approve_stage"),
}


def _permissions(names: tuple[str, ...]) -> list[Permission]:
    found: list[Permission] = []
    for name in names:
        app_label, codename = name.split(".") if "." in name else ("experiments", name)
        found.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
    return found


def seed_experiments(*, out: OutputWrapper) -> None:
    for name, codenames in DEMO_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*_permissions(codenames))
    drafts = []
    for agent in Agent.objects.order_by("slug"):
        if Experiment.objects.filter(agent=agent).exists() or live_version(agent=agent) is None:
            continue
        candidate = candidate_versions(agent=agent).first()
        if candidate is None:
            continue
        experiment = experiment_create(
            agent=agent, treatment=candidate, key=f"{agent.slug}-rollout",
            description="demo: the fine-tuned candidate against the live baseline",
        )
        drafts.append(experiment.key)
    out.write(
        f"experiments: groups {', '.join(DEMO_GROUPS)}; "
        + (f"draft experiments {', '.join(drafts)}" if drafts else "no new draft experiments")
    )
