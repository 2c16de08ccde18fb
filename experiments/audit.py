"""The audit trail of online evaluation: every change to an experiment, and every refusal, leaves an
ExperimentEvent with who, when, the state before and after, and why. Written by the services
(experiments/services.py) and the guardrail check (experiments/guardrail_check.py) inside their
transactions; read by the experiment page, the metrics and
the rollback alert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction

from experiments.models import EventAction, Experiment, ExperimentEvent
from genesis.errors import AlreadyDone, DomainError
from genesis.permissions import Actor

_T = TypeVar("_T")


def snapshot(experiment: Experiment) -> dict[str, Any]:
    """What an entry shows as the experiment's state before and after a change."""
    stage = experiment.current_stage
    return {
        "status": experiment.status,
        "stage_percent": stage.percent if stage else None,
        "config_version": experiment.config_version,
    }


def record_event(
    experiment: Experiment,
    *,
    action: str,
    actor: Actor,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
    reason_code: str = "",
) -> ExperimentEvent:
    return ExperimentEvent.objects.create(
        experiment=experiment,
        action=action,
        actor=actor,
        before=before or {},
        after=after if after is not None else snapshot(experiment),
        reason=reason,
        reason_code=reason_code,
    )


def actor_name(actor: Actor) -> str:
    """Who acted, as the trail and the alerts name them (None: Genesis itself)."""
    return actor.get_username() if actor is not None else "genesis"


def recording_refusals(action: str, run: Callable[[], _T], *, experiment: Experiment, actor: Actor) -> _T:
    """Run `run` atomically; when the domain refuses, keep a REFUSAL entry (in its own transaction,
    after the refused one rolled back) and re-raise. What was already done (AlreadyDone) is no refusal
    and leaves no entry."""
    try:
        with transaction.atomic():
            return run()
    except AlreadyDone:
        raise
    except DomainError as exc:
        with transaction.atomic():
            record_event(
                experiment,
                action=EventAction.REFUSAL,
                actor=actor if getattr(actor, "pk", None) else None,
                before=snapshot(Experiment.objects.get(pk=experiment.pk)),
                after={"attempted": action},
                reason=exc.message,
                reason_code=type(exc).__name__.lower(),
            )
        raise
