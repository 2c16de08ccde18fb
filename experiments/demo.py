"""The experiments part of the demo world `seed_demo` builds: the two roles of a staged rollout as
groups, and a draft experiment per agent with a candidate. Idempotent."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from experiments.models import Experiment
from experiments.services import experiment_create
from models_app.models import Agent
from models_app.selectors import candidate_versions, live_version

# Four-eyes needs two people: operators start, request and roll back; approvers approve stages.
DEMO_GROUPS: dict[str, tuple[str, ...]] = {
    "Rollout operators": (
        "view_experiment", "add_experiment", "change_experiment", "start_experiment", "request_stage",
        "pause_experiment", "rollback_experiment",
    ),
    "Rollout approvers": ("view_experiment", "approve_stage"),
}


def seed_experiments(*, out) -> None:  # type: ignore[no-untyped-def]
    for name, codenames in DEMO_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="experiments", codename__in=codenames))
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
