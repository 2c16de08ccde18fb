"""Builders for experiment tests: an agent with a live baseline and an approved candidate, people
with exactly the permissions a test names, and outcome batches with chosen success rates."""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Any

from django.contrib.auth.models import Permission

from experiments.assignment import bucket
from experiments.guardrail_check import guardrails_check
from experiments.models import Experiment
from experiments.outcomes import outcomes_ingest
from experiments.services import experiment_create, experiment_start
from models_app.registry.models import Agent, ModelVersion
from models_app.registry.services import model_version_transition
from tests.factories import AgentFactory, ModelVersionFactory, UserFactory

_event_ids = itertools.count()


def person(username: str, *perms: str, superuser: bool = False):
    """A staff user holding exactly `perms` (codenames of the experiments app, or 'app.codename')."""
    user = UserFactory(username=username, is_superuser=superuser)
    for perm in perms:
        app_label, codename = perm.split(".") if "." in perm else ("experiments", perm)
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return type(user).objects.get(pk=user.pk)  # drop the permission cache


def rollout_team() -> dict[str, Any]:
    """starter (creates, starts, requests), approver, second approver, roller (rolls back), nobody."""
    return {
        "starter": person("starter", "add_experiment", "change_experiment", "start_experiment", "request_stage",
                          "approve_stage", "pause_experiment", "override_verdict"),
        "requester": person("requester", "request_stage", "approve_stage"),
        "approver": person("approver", "approve_stage", "view_experiment"),
        "roller": person("roller", "rollback_experiment", "pause_experiment"),
        "nobody": person("nobody"),
    }


def agent_with_candidate(slug: str = "qa_agent", *, candidate_status: str = "approved_for_rollout") -> tuple[Agent, ModelVersion, ModelVersion]:
    agent = AgentFactory(slug=slug)
    baseline = ModelVersionFactory(agent=agent, model_id="open-mistral-7b", kind="baseline")
    model_version_transition(version=baseline, to_status="live", reason="test: serves today")
    candidate = ModelVersionFactory(agent=agent, model_id=f"ft:open-mistral-7b:{zlib.crc32(slug.encode()):08x}:20261101:cafebabe")
    path = {"registered": [], "benchmarking": ["benchmarking"],
            "approved_for_rollout": ["benchmarking", "approved_for_rollout"]}[candidate_status]
    for status in path:
        candidate = model_version_transition(version=candidate, to_status=status, reason="test")
    baseline.refresh_from_db()
    return agent, baseline, candidate


def draft_experiment(slug: str = "qa_agent", *, actor: Any = None, **options: Any) -> Experiment:
    agent, _, candidate = agent_with_candidate(slug, candidate_status=options.pop("candidate_status", "approved_for_rollout"))
    options.setdefault("min_stage_hours", 0)
    options.setdefault("min_samples_per_arm", 20)
    return experiment_create(agent=agent, treatment=candidate, actor=actor, key=options.pop("key", f"{slug}-exp"), **options)


def user_in_buckets(experiment: Experiment, *, base: str, low: float, high: float) -> str:
    """`base`, or else the first of `base~1`, `base~2`… whose bucket in the experiment lies in [low, high)."""
    for attempt in itertools.count():
        user_id = f"{base}~{attempt}" if attempt else base
        if low <= bucket(seed=experiment.seed, user_id=user_id) < high:
            return user_id
    raise AssertionError("unreachable")


def user_in_arm(experiment: Experiment, arm: str, *, percent: int, base: str) -> str:
    """A user the experiment's hash assigns to `arm` when the stage is at `percent`."""
    fraction = percent / 100
    low, high = (0.0, fraction) if arm == "treatment" else (fraction, 1.0)
    return user_in_buckets(experiment, base=base, low=low, high=high)


def outcome_events(
    experiment: Experiment,
    *,
    arm: str,
    n: int,
    success_rate: float,
    latency_ms: float = 400.0,
    quality: float | None = None,
    seed: int = 0,
    user_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """`n` events from distinct users of the arm, served by the arm's model; exactly round(n·rate)
    succeed. While the experiment runs, the users are ones its hash assigns to `arm` at the current
    stage (`user_prefix-i`, or the nearest `user_prefix-i~k`): outcomes count in the arm the user was
    assigned to, as /route answered, whichever model served (experiments/outcomes.py)."""
    rng = random.Random(seed)
    model = (experiment.treatment if arm == "treatment" else experiment.control).model_id
    successes = set(rng.sample(range(n), round(n * success_rate)))
    prefix = user_prefix or f"{arm}-{seed}"
    percent = Experiment.objects.filter(pk=experiment.pk, status="running").values_list("current_stage__percent", flat=True).first()
    events = []
    for i in range(n):
        user_id = f"{prefix}-{i}" if percent is None else user_in_arm(experiment, arm, percent=percent, base=f"{prefix}-{i}")
        event = {
            "event_id": f"evt-{next(_event_ids)}",
            "agent": experiment.agent.slug,
            "user_id": user_id,
            "model": model,
            "success": i in successes,
            "latency_ms": latency_ms * rng.uniform(0.8, 1.2),
        }
        if quality is not None:
            event["quality"] = min(1.0, max(0.0, rng.gauss(quality, 0.05)))
        events.append(event)
    return events


def feed(experiment: Experiment, **kwargs: Any) -> int:
    """Ingest a batch through the real service; returns the number accepted."""
    events = outcome_events(experiment, **kwargs)
    accepted = 0
    for start in range(0, len(events), 1000):
        accepted += outcomes_ingest(principal=None, events=events[start : start + 1000]).accepted
    return accepted


def evaluate(experiment: Experiment) -> str:
    """What beat does every minute: the guardrail task judges the running experiment and stores its
    evaluation, which the launch pages show (experiments.holds.stored_evaluation). Returns its action."""
    return guardrails_check(experiment_id=experiment.pk).action


def running_rollout(slug: str, *, evaluated: bool = True) -> Experiment:
    """A running rollout of `slug` (10 % stage, at least 20 users per arm) with a healthy split of outcomes,
    judged once by the guardrail task as beat does every minute — unless `evaluated` is False: just
    started, no outcome, not judged yet."""
    experiment = experiment_start(experiment=draft_experiment(slug), actor=None)
    if evaluated:
        feed(experiment, arm="control", n=60, success_rate=0.9, seed=1)
        feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=2)
        assert evaluate(experiment) == "none"
    return Experiment.objects.select_related("agent", "current_stage").get(pk=experiment.pk)
