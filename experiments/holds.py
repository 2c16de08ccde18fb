"""What stands between a running experiment's current stage and the next — the holds: the stage's
minimum time, its minimum users per arm, the guardrails, the sample ratio and whether each arm was
served its own model. Shown on the board, the
queue, the experiment page and by `rollout_models --status`; the services refuse an approval while one
is open."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from experiments import stats
from experiments.models import Experiment
from experiments.selectors import ARMS, ExperimentMetrics, experiment_guardrail_results, experiment_metrics

# The share of an arm's outcomes in a stage that another model than the arm's may serve before the
# stage holds: the line of the fallback alert (ops/prometheus/alerts.yml, HighFallbackRate). At a true
# 5 % and 150 outcomes the share exceeds it 0.4 % of the time, at a true 10 % 43 % — binomial, so for
# independent outcomes. Outcomes cluster by user: if each user's all fall back or none do, 150 outcomes
# of 75 users exceed it 3.4 % / 48 % of the time, of 30 users 6.1 % / 35 % (binomials over users; README).
MAX_SERVED_BY_OTHER_MODEL = 0.10


@dataclass(frozen=True)
class Hold:
    name: str  # min_time | min_samples | guardrails | srm | served | status
    cleared: bool
    detail: str
    clears_at: datetime | None = None  # when an open hold clears by itself (min_time); None: it waits for data

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "clears_at": self.clears_at.isoformat() if self.clears_at else None}

    @property
    def label(self) -> str:
        """The hold as pages and messages name it ("min users" for min_samples: it counts users)."""
        return HOLD_LABELS.get(self.name, self.name)


HOLD_LABELS = {"min_time": "min stage time", "min_samples": "min users", "guardrails": "guardrails", "srm": "sample ratio",
               "served": "arms served their models",
               "status": "status"}


def holds_wait(holds: list[Hold]) -> str:
    """When a request held by `holds` can be approved, in words: "after 2026-12-08 10:00 UTC (min stage
    time)", "once min users and guardrails clear", both, or "" when nothing holds it."""
    open_holds = [hold for hold in holds if not hold.cleared]
    timed = [hold for hold in open_holds if hold.clears_at is not None]
    waiting = [hold.label for hold in open_holds if hold.clears_at is None]
    parts = [f"after {hold.clears_at:%Y-%m-%d %H:%M} UTC ({hold.label})" for hold in timed]
    if waiting:
        parts.append(f"once {' and '.join(waiting)} clear{'s' if len(waiting) == 1 else ''}")
    return " and ".join(parts)


def stage_holds(
    *, experiment: Experiment, metrics: ExperimentMetrics | None = None, now: datetime | None = None
) -> list[Hold]:
    """What stands between the current stage and the next: time, users, guardrails, SRM, arms served."""
    now = now or timezone.now()
    stage = experiment.current_stage
    if experiment.status != "running" or stage is None or stage.started_at is None:
        return [Hold("status", False, f"the experiment is {experiment.status}; only a running experiment advances")]
    metrics = metrics or experiment_metrics(experiment=experiment)
    holds = []

    required = timedelta(hours=experiment.min_stage_hours)
    elapsed = now - stage.started_at
    if elapsed >= required:
        holds.append(Hold("min_time", True, f"{_hours(elapsed)} in this stage (minimum {_hours(required)})"))
    else:
        holds.append(Hold(
            "min_time", False,
            f"{_hours(elapsed)} of the {_hours(required)} minimum in this stage; clears at "
            f"{(stage.started_at + required):%Y-%m-%d %H:%M} UTC",
            clears_at=stage.started_at + required,
        ))

    # Users, not outcomes: the statistics cluster by user, so 150 outcomes from 3 heavy users carry
    # about the information of 3. min_samples_per_arm (ROLLOUT_MIN_SAMPLES_PER_ARM) counts users.
    need = experiment.min_samples_per_arm
    control_n, treatment_n = metrics.stage_users_control, metrics.stage_users_treatment
    holds.append(Hold(
        "min_samples", control_n >= need and treatment_n >= need,
        f"control {control_n} and treatment {treatment_n} users with outcomes in this stage (minimum {need} per arm)",
    ))

    guardrails = experiment_guardrail_results(experiment=experiment, metrics=metrics)
    unhealthy = [g for g in guardrails if g.state not in ("healthy", "not_reported")]
    holds.append(Hold(
        "guardrails", not unhealthy,
        "; ".join(g.reason for g in unhealthy) if unhealthy else "all guardrails healthy",
    ))

    split = (
        f"split {metrics.stage_users_control}/{metrics.stage_users_treatment} users vs planned "
        f"{100 - (metrics.stage_percent or 0)}/{metrics.stage_percent} %"
    )
    if metrics.srm_p is None:
        holds.append(Hold("srm", True, f"{split}: no control arm to compare with"))
    else:
        holds.append(Hold(
            "srm", not metrics.srm_flagged,
            f"{split}: any-time SRM p = {stats.format_number(metrics.srm_p)} ({metrics.srm_rule})"
            + (" — mismatch: check assignment and logging" if metrics.srm_flagged else ""),
        ))
    holds.append(_served_hold(metrics))
    return holds


def _served_hold(metrics: ExperimentMetrics) -> Hold:
    """Each arm of the current stage served by its own model. Outcomes count by assignment (intention to
    treat), so a client that never routes — everyone served the live model — splits perfectly and
    clears every other hold: this one sees it, as it sees a candidate failing over to the live model."""
    current, parts, over = metrics.current, [], []
    for arm in ARMS:
        cell = current.arm(arm) if current is not None else None
        if cell is None or not cell.outcomes:
            continue
        share = cell.served_other / cell.outcomes
        # One decimal: rounded to whole percents, 15 of 144 (10.4 %) read "(10%) — over 10%".
        parts.append(f"{arm} {cell.served_other} of {cell.outcomes} ({share:.1%})")
        if share > MAX_SERVED_BY_OTHER_MODEL:
            over.append(arm)
    detail = "outcomes in this stage another model than the arm's served: " + (", ".join(parts) or "none yet")
    if over:
        detail += (
            f" — over {MAX_SERVED_BY_OTHER_MODEL:.0%} in {' and '.join(over)}: a router that does not route (a stale "
            "config, a hash of its own) or the candidate failing over to the live model; check the agent's router "
            "and the candidate's errors"
        )
    return Hold("served", not over, detail)


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 100 else f"{hours:.0f} h"
