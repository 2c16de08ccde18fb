"""What stands between a running experiment's current stage and the next — the holds: the stage's
minimum time, its minimum users per arm, the guardrails, the sample ratio and whether each arm was
served its own model. The services refuse a request's approval while one is open, judging the outcomes
afresh (stage_holds), as the experiment page and `rollout_models --status` show them.

Every hold but the stage's time reads the outcome aggregate (experiments.outcome_aggregate.experiment_metrics,
seconds at a million outcomes). The guardrail task judges every running experiment every minute and
stores what those holds read (StageFigures, with the guardrails' states) on the experiment; the launch
pages — the board, an agent's page, the approvals queue, the Go/No-Go report — show the holds from that
evaluation (stored_evaluation, evaluation_holds), as of its time, instead of reading each rollout's
outcomes on every view, and so does /metrics on every scrape (selectors_monitoring.rollout_states). They
are views: pressing Approve still goes through the services."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from experiments import stats
from experiments.models import Experiment, ExperimentStatus
from experiments.outcome_aggregate import ARMS, EMPTY_CELL, ExperimentMetrics, experiment_metrics
from experiments.results import GuardrailState, experiment_guardrail_results

# The share of an arm's outcomes in a stage that another model than the arm's may serve before the
# stage holds: the line of the fallback alert (ops/prometheus/alerts.yml, HighFallbackRate). At a true
# 5 % and 150 outcomes the share exceeds it 0.4 % of the time, at a true 10 % 43 % — binomial, so for
# independent outcomes. Outcomes cluster by user: if each user's all fall back or none do, 150 outcomes
# of 75 users exceed it 3.4 % / 48 % of the time, of 30 users 6.1 % / 35 % (binomials over users; README).
MAX_SERVED_BY_OTHER_MODEL = 0.10

# A stored evaluation older than this is shown as stale. Beat sends one every minute; after ten minutes
# without a send CeleryBeatStalled fires (ops/prometheus/alerts.yml), the line this takes too: an
# evaluation that old means beat, the worker or the guardrail task is down, and the rollout unguarded.
# RolloutUnguarded (same file) fires on this line, per rollout, whatever the cause (judged_at).
EVALUATION_STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Hold:
    name: str  # min_time | min_samples | guardrails | srm | served | status | evaluation (none stored yet: launch pages)
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
               "status": "status", "evaluation": "the stage's first guardrail evaluation"}


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


@dataclass(frozen=True)
class StageFigures:
    """What the holds read of a running experiment's outcomes — per arm the current stage's users,
    outcomes and those another model served, and its sample-ratio test — and the success-rate lift the
    Go/No-Go report shows, as plain numbers: what the guardrail task stores (Experiment.stage_figures).
    `stage_id`, `stage_started_at` and `config_version` name the stage window and settings they judged:
    after an advance, a resume (it restarts the window) or an edit they are another stage's."""

    stage_id: int
    stage_started_at: datetime
    config_version: int
    stage_percent: int | None
    users: dict[str, int]  # arm → its users with outcomes in the current stage
    outcomes: dict[str, int]  # arm → its outcomes in the current stage
    served_other: dict[str, int]  # arm → of those, the ones another model than the arm's served
    srm_p: float | None
    srm_flagged: bool
    srm_rule: str
    relative_lift: float | None  # the success rate's, every stage so far: experiment_results' relative_lift

    @classmethod
    def of(cls, *, experiment: Experiment, metrics: ExperimentMetrics) -> StageFigures:
        """The figures of a running experiment (in a stage) from its outcome aggregate."""
        stage = experiment.current_stage
        assert stage is not None and stage.started_at is not None  # running: in a started stage
        current = metrics.current
        cells = {arm: current.arm(arm) if current is not None else EMPTY_CELL for arm in ARMS}
        return cls(
            stage_id=stage.pk, stage_started_at=stage.started_at, config_version=experiment.config_version,
            stage_percent=metrics.stage_percent,
            users={arm: cell.users for arm, cell in cells.items()},
            outcomes={arm: cell.outcomes for arm, cell in cells.items()},
            served_other={arm: cell.served_other for arm, cell in cells.items()},
            srm_p=metrics.srm_p, srm_flagged=metrics.srm_flagged, srm_rule=metrics.srm_rule,
            relative_lift=_success_rate_lift(metrics),
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "stage_started_at": self.stage_started_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageFigures | None:
        """The stored figures; None for figures stored with other fields (by an older or newer version
        of this class): shown as not evaluated until the next evaluation, a minute later, stores them anew."""
        if set(data) != {member.name for member in fields(cls)}:
            return None
        return cls(**{**data, "stage_started_at": datetime.fromisoformat(data["stage_started_at"])})


def _success_rate_lift(metrics: ExperimentMetrics) -> float | None:
    """experiment_results' top-level relative_lift (the success rate's, stratified over the stages so
    far: stats.compare), without computing the other metrics' comparisons."""
    comparison = stats.compare(metrics.strata("success_rate"))
    lift = comparison.relative_lift if comparison is not None else None
    return float(lift) if lift is not None and math.isfinite(lift) else None


def _guardrail_state(stored: dict[str, Any]) -> GuardrailState:
    """A guardrail's state as the task stored it (GuardrailState.as_json); a field it did not store (one
    added since) reads None until its next run, a minute later."""
    values: dict[str, Any] = {member.name: stored.get(member.name) for member in fields(GuardrailState)}
    interval = values["interval"]
    return GuardrailState(**{**values, "interval": (interval[0], interval[1]) if interval else None})


@dataclass(frozen=True)
class Evaluation:
    """A running experiment's current stage judged from its outcomes at `at`: the figures the holds read
    and each guardrail's state — judged now (stage_holds) or by the guardrail task (stored_evaluation)."""

    figures: StageFigures
    guardrails: list[GuardrailState]
    at: datetime

    def is_stale(self, now: datetime) -> bool:
        return now - self.at > EVALUATION_STALE_AFTER


def stored_stage_figures(*, experiment: Experiment) -> StageFigures | None:
    """The figures the guardrail task last stored, when they are of the experiment's current stage window
    (its stage, since that stage's latest start); None otherwise. A paused experiment keeps its stage
    window until it resumes, so these are the split it paused on (as of the last evaluation before)."""
    stage = experiment.current_stage
    if stage is None or not experiment.stage_figures:
        return None
    figures = StageFigures.from_json(experiment.stage_figures)
    if figures is None or (figures.stage_id, figures.stage_started_at) != (stage.pk, stage.started_at):
        return None
    return figures


def stored_evaluation(*, experiment: Experiment) -> Evaluation | None:
    """The latest guardrail evaluation of the running experiment's current stage, as the task stored it
    (no query: it is on the experiment's row); None while there is none of this stage window at these
    settings — just started, advanced, resumed or edited since — or the experiment is not running."""
    checked_at = experiment.guardrails_checked_at
    if experiment.status != ExperimentStatus.RUNNING or checked_at is None:
        return None
    figures = stored_stage_figures(experiment=experiment)
    if figures is None or figures.config_version != experiment.config_version:
        return None
    return Evaluation(figures, [_guardrail_state(state) for state in experiment.guardrail_states], checked_at)


def judged_at(*, experiment: Experiment) -> datetime | None:
    """When the guardrail task last judged the running experiment — before it has judged the current
    stage, when that stage started (or resumed) instead, so that a rollout never judged ages as one whose
    judgements stopped (genesis_rollout_guardrails_checked_timestamp_seconds: RolloutUnguarded fires once it
    is EVALUATION_STALE_AFTER old). None when the experiment is not running. An evaluation made under
    settings edited since still counts: the task ran, a minute later it judges the new ones."""
    stage = experiment.current_stage
    if experiment.status != ExperimentStatus.RUNNING or stage is None or stage.started_at is None:
        return None
    checked_at = experiment.guardrails_checked_at
    return max(checked_at, stage.started_at) if checked_at is not None else stage.started_at


def unguarded_since(*, experiment: Experiment, now: datetime) -> datetime | None:
    """judged_at, when it is more than EVALUATION_STALE_AFTER before `now`: since then the guardrail task
    has not judged the running experiment — nothing guards it (RolloutUnguarded). None otherwise."""
    judged = judged_at(experiment=experiment)
    return judged if judged is not None and now - judged > EVALUATION_STALE_AFTER else None


def _status_hold(experiment: Experiment) -> Hold | None:
    stage = experiment.current_stage
    if experiment.status != ExperimentStatus.RUNNING or stage is None or stage.started_at is None:
        return Hold("status", False, f"the experiment is {experiment.status}; only a running experiment advances")
    return None


def stage_holds(
    *, experiment: Experiment, metrics: ExperimentMetrics | None = None, now: datetime | None = None
) -> list[Hold]:
    """What stands between the current stage and the next — time, users, guardrails, SRM, arms served —
    judged now from the outcomes (`metrics`, else read here): what a request and an approval decide on."""
    status = _status_hold(experiment)
    if status is not None:
        return [status]
    metrics = metrics or experiment_metrics(experiment=experiment)
    evaluation = Evaluation(StageFigures.of(experiment=experiment, metrics=metrics),
                            experiment_guardrail_results(experiment=experiment, metrics=metrics), timezone.now())
    return evaluation_holds(experiment=experiment, evaluation=evaluation, now=now)


def evaluation_holds(*, experiment: Experiment, evaluation: Evaluation | None, now: datetime | None = None) -> list[Hold]:
    """The holds as `evaluation` judged them (stage_holds', or the stored one the launch pages show), the
    stage's time at `now`. Without an evaluation of this stage one open hold, "evaluation", stands for
    the holds that need its figures."""
    status = _status_hold(experiment)
    if status is not None:
        return [status]
    stage = experiment.current_stage
    assert stage is not None and stage.started_at is not None  # _status_hold: running, in a started stage
    holds = [_min_time_hold(started_at=stage.started_at, min_stage_hours=experiment.min_stage_hours, now=now or timezone.now())]
    if evaluation is None:
        holds.append(Hold(
            "evaluation", False,
            "the guardrail task has not judged this stage yet (beat runs it every minute): its users, sample ratio, "
            "arms served and guardrails are shown after its next run",
        ))
        return holds
    figures = evaluation.figures

    # Users, not outcomes: the statistics cluster by user, so 150 outcomes from 3 heavy users carry
    # about the information of 3. min_samples_per_arm (ROLLOUT_MIN_SAMPLES_PER_ARM) counts users.
    need = experiment.min_samples_per_arm
    control_n, treatment_n = figures.users["control"], figures.users["treatment"]
    holds.append(Hold(
        "min_samples", control_n >= need and treatment_n >= need,
        f"control {control_n} and treatment {treatment_n} users with outcomes in this stage (minimum {need} per arm)",
    ))

    unhealthy = [g for g in evaluation.guardrails if g.state not in ("healthy", "not_reported")]
    holds.append(Hold(
        "guardrails", not unhealthy,
        "; ".join(g.reason for g in unhealthy) if unhealthy else "all guardrails healthy",
    ))

    split = (
        f"split {control_n}/{treatment_n} users vs planned "
        f"{100 - (figures.stage_percent or 0)}/{figures.stage_percent} %"
    )
    if figures.srm_p is None:
        holds.append(Hold("srm", True, f"{split}: no control arm to compare with"))
    else:
        holds.append(Hold(
            "srm", not figures.srm_flagged,
            f"{split}: any-time SRM p = {stats.format_number(figures.srm_p)} ({figures.srm_rule})"
            + (" — mismatch: check assignment and logging" if figures.srm_flagged else ""),
        ))
    holds.append(_served_hold(figures))
    return holds


def _min_time_hold(*, started_at: datetime, min_stage_hours: float, now: datetime) -> Hold:
    required = timedelta(hours=min_stage_hours)
    elapsed = now - started_at
    if elapsed >= required:
        return Hold("min_time", True, f"{_hours(elapsed)} in this stage (minimum {_hours(required)})")
    return Hold(
        "min_time", False,
        f"{_hours(elapsed)} of the {_hours(required)} minimum in this stage; clears at "
        f"{(started_at + required):%Y-%m-%d %H:%M} UTC",
        clears_at=started_at + required,
    )


def _served_hold(figures: StageFigures) -> Hold:
    """Each arm of the current stage served by its own model. Outcomes count by assignment (intention to
    treat), so a client that never routes — everyone served the live model — splits perfectly and
    clears every other hold: this one sees it, as it sees a candidate failing over to the live model."""
    parts, over = [], []
    for arm in ARMS:
        outcomes, served_other = figures.outcomes[arm], figures.served_other[arm]
        if not outcomes:
            continue
        share = served_other / outcomes
        # One decimal: rounded to whole percents, 15 of 144 (10.4 %) read "(10%) — over 10%".
        parts.append(f"{arm} {served_other} of {outcomes} ({share:.1%})")
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
