"""The guardrail task's work on one running experiment (beat sends it every minute for each): judge
it now, store what the launch pages and /metrics show of it (the guardrails' states and the figures
the holds read, experiments.holds.stored_evaluation), and act on the verdict — a breached guardrail
rolls the experiment back, a sample-ratio mismatch pauses it, both through experiments/services.py as
Genesis (actor None), and a guardrail newly at "warning" is logged and recorded on the audit trail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from experiments import audit, stats
from experiments.holds import StageFigures
from experiments.models import EventAction, Experiment, ExperimentStatus
from experiments.outcome_aggregate import experiment_metrics
from experiments.results import experiment_guardrail_results
from experiments.services import experiment_pause, experiment_rollback

# The logger the warning line had while this lived in services.py: on-call searches and filters by the
# logger field, and a move between modules is no reason to change what they find.
logger = logging.getLogger("experiments.services")


@dataclass(frozen=True)
class GuardrailCheck:
    action: str  # "none", "paused", "rolled_back", "skipped"
    reason: str = ""
    states: list[dict[str, Any]] = field(default_factory=list)


@transaction.atomic
def guardrails_check(*, experiment_id: int) -> GuardrailCheck:
    """Judge one running experiment now (the beat task's work): a breach rolls it back, a sample-ratio
    mismatch pauses it, new warnings are logged and recorded; no data changes nothing. Idempotent."""
    experiment = Experiment.objects.select_for_update(skip_locked=True).filter(pk=experiment_id).first()
    if experiment is None or experiment.status != ExperimentStatus.RUNNING:
        return GuardrailCheck(action="skipped", reason="not running (or being changed right now)")
    metrics = experiment_metrics(experiment=experiment)
    results = experiment_guardrail_results(experiment=experiment, metrics=metrics)
    states = [result.as_json() for result in results]
    previous = {state["metric"]: state["state"] for state in experiment.guardrail_states or []}
    # With the states, what the holds read of this stage: the launch pages show the rollout from them
    # (holds.stored_evaluation) rather than reading its outcomes again on every view.
    experiment.guardrail_states = states
    experiment.stage_figures = StageFigures.of(experiment=experiment, metrics=metrics).as_json()
    experiment.guardrails_checked_at = timezone.now()
    experiment.save(update_fields=["guardrail_states", "stage_figures", "guardrails_checked_at"])

    breaches = [result for result in results if result.state == "breach"]
    if breaches:
        first = breaches[0]
        reason = "guardrail breached — " + "; ".join(result.reason for result in breaches)
        experiment_rollback(experiment=experiment, actor=None, reason=reason, reason_code=f"guardrail_{first.metric}")
        return GuardrailCheck(action="rolled_back", reason=reason, states=states)
    if metrics.srm_flagged and metrics.srm_p is not None:
        reason = (
            f"sample-ratio mismatch: {metrics.stage_users_control} control and {metrics.stage_users_treatment} treatment "
            f"users in this {metrics.stage_percent} % stage (any-time p = {stats.format_number(metrics.srm_p)}; "
            f"{metrics.srm_rule}); check assignment and outcome logging before resuming"
        )
        experiment_pause(experiment=experiment, actor=None, reason=reason, reason_code="srm")
        return GuardrailCheck(action="paused", reason=reason, states=states)
    for result in results:
        if result.state == "warning" and previous.get(result.metric) != "warning":
            audit.record_event(experiment, action=EventAction.GUARDRAIL_WARNING, actor=None, reason=result.reason,
                    reason_code=f"guardrail_{result.metric}")
            message = f"experiment {experiment.key}: guardrail warning — {result.reason}"
            transaction.on_commit(partial(logger.warning, message))
    return GuardrailCheck(action="none", states=states)
