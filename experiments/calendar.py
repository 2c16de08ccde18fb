"""The launch calendar of a staged rollout (pure): when each stage can start at the earliest, given
the minimum hours a stage must run, beside the date the operator aims for — the prototype's
"Monday 10 %, Wednesday 25 %, Friday 50 %, next Monday 100 %". Plain data in and out, no Django.

A stage that has started shows when; one still ahead can start no sooner than the stage before it
started (or now, if that is later) plus the minimum hours. It is *late* when its target has passed
and it has not started, or it started after its target; *at risk* when even its earliest start is
after its target. Samples and guardrails can hold a stage longer still: the earliest time is what
time alone allows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PlannedStage:
    percent: int
    status: str  # pending | active | done | rolled_back | planned (a draft's plan)
    started_at: datetime | None


@dataclass(frozen=True)
class CalendarEntry:
    percent: int
    status: str
    started_at: datetime | None
    earliest_start: datetime | None
    target: datetime | None
    late: bool
    at_risk: bool

    @property
    def flag(self) -> str:
        return "late" if self.late else "at risk" if self.at_risk else ""


def rollout_calendar(
    *, stages: list[PlannedStage], min_stage_hours: float, targets: dict[int, datetime], now: datetime,
    running: bool = True,
) -> list[CalendarEntry]:
    step = timedelta(hours=min_stage_hours)
    entries: list[CalendarEntry] = []
    previous_start: datetime | None = None
    for stage in stages:
        target = targets.get(stage.percent)
        if stage.started_at is not None:
            earliest = stage.started_at
            late = target is not None and stage.started_at > target
            at_risk = False
        elif stage.status == "rolled_back" or not running and stage.status != "planned":
            entries.append(CalendarEntry(stage.percent, stage.status, None, None, target, False, False))
            previous_start = None
            continue
        else:
            earliest = max(previous_start + step, now) if previous_start is not None else now
            late = target is not None and now > target
            at_risk = not late and target is not None and earliest > target
        entries.append(CalendarEntry(stage.percent, stage.status, stage.started_at, earliest, target, late, at_risk))
        previous_start = earliest
    return entries
