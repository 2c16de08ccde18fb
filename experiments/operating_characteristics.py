"""The default success-rate guardrail's operating curve, as measured — published beside the rule on
the admin's experiment page and in the README.

These are measurements, not settings: `bench/decisions/run.py --part guardrails` (seed 20261206,
500 simulated rollouts per drop) printed them on 2026-12-06, with α spent over resumes (the first
segment, before any resume, at α/ζ(3)); re-run it and update both places when
the rule in experiments/stats.py changes. tests/experiments/test_stats.py checks the same shape at a
smaller scale on every run.

The page shows the curve only to an experiment whose settings are those it was measured at (the
defaults: `curve_differences`); another is told what differs and the `--part curve` command that
measures its own (`curve_command`), rather than a curve that is not its.
"""

from __future__ import annotations

import math
from typing import Any

SUCCESS_RATE_ROLLBACK_CURVE = {
    "conditions": (
        "tolerance 5 points, alpha 5 %, base rate 0.9, 2 000 users/h, stages 10 → 25 → 50 % of 48 h each, checked "
        "every minute; at base rate 0.6 a 5-point drop is rolled back 2.2 %, a 10-point one in 4.3 h median; at "
        "200 users/h 0.4 % and 29 h; a resume restarts the stage's test at a smaller share of alpha (README)"
    ),
    "rows": [
        {"drop_points": 0, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 2, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 3, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 4, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 5, "rollback": "0.6 %", "median_hours": "13"},
        {"drop_points": 6, "rollback": "100 %", "median_hours": "53"},
        {"drop_points": 8, "rollback": "100 %", "median_hours": "6.8"},
        {"drop_points": 10, "rollback": "100 %", "median_hours": "2.9"},
        {"drop_points": 15, "rollback": "100 %", "median_hours": "0.95"},
        {"drop_points": 20, "rollback": "100 %", "median_hours": "0.78"},
    ],
}

# The settings SUCCESS_RATE_ROLLBACK_CURVE was measured at (the defaults): an experiment that differs in
# any of them has a curve of its own, which the page does not guess but tells how to measure.
MEASURED_STAGE_PLAN = [10, 25, 50, 100]
MEASURED_STAGE_HOURS = 48.0
MEASURED_MIN_USERS_PER_ARM = 150
MEASURED_PLANNED_USERS_PER_ARM = 2_000
MEASURED_TOLERANCE = 0.05
MEASURED_ALPHA = 0.05


def success_rate_rollback_rule(guardrails: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The experiment's success-rate rule that rolls back (what the curve is about), if any."""
    return next((rule for rule in guardrails if rule.get("metric") == "success_rate"
                 and rule.get("on_violation") == "breach"), None)


def curve_differences(
    *, stage_plan: list[int], min_stage_hours: float, min_samples_per_arm: int, planned_samples_per_arm: int,
    guardrails: list[dict[str, Any]], alpha: float | None,
) -> list[str]:
    """How an experiment's settings differ from those the published curve was measured at ([]: it applies).
    ``alpha`` is the level its success-rate rule is tested at (guardrail_alpha shared by the rules that roll
    back)."""
    rule = success_rate_rollback_rule(guardrails)
    if rule is None:
        return ["it has no success-rate rule that rolls back"]
    found = []
    if (rule.get("harmful_direction"), rule.get("threshold_kind")) != ("decrease", "absolute") or not math.isclose(
            float(rule.get("threshold", -1)), MEASURED_TOLERANCE):
        found.append(f"success-rate rule {rule.get('harmful_direction')} {rule.get('threshold')} "
                     f"({rule.get('threshold_kind')}), not down 0.05 (absolute)")
    if alpha is not None and not math.isclose(alpha, MEASURED_ALPHA):
        found.append(f"the rule is tested at α {alpha * 100:.4g} % (shared by the rules that roll back), not 5 %")
    if list(stage_plan) != MEASURED_STAGE_PLAN:
        found.append(f"stages {', '.join(map(str, stage_plan))} %, not 10, 25, 50, 100 %")
    if not math.isclose(min_stage_hours, MEASURED_STAGE_HOURS):
        found.append(f"{min_stage_hours:g} h a stage, not 48 h")
    if min_samples_per_arm != MEASURED_MIN_USERS_PER_ARM:
        found.append(f"{min_samples_per_arm} minimum users per arm, not 150")
    if planned_samples_per_arm != MEASURED_PLANNED_USERS_PER_ARM:
        found.append(f"{planned_samples_per_arm} planned users per arm, not 2 000")
    return found


def curve_command(
    *, stage_plan: list[int], min_stage_hours: float, min_samples_per_arm: int, planned_samples_per_arm: int,
    guardrails: list[dict[str, Any]], alpha: float | None, users_per_hour: float = 2_000, base_rate: float = 0.9,
) -> str:
    """The bench command that measures the success-rate rollback curve at an experiment's own settings."""
    rule = success_rate_rollback_rule(guardrails) or {}
    stages = ",".join(str(percent) for percent in stage_plan if percent < 100) or "100"
    return (f"python bench/decisions/run.py --part curve --stages {stages} --stage-hours {min_stage_hours:g} "
            f"--tolerance {float(rule.get('threshold', MEASURED_TOLERANCE)):g} --min-users {min_samples_per_arm} "
            f"--planned-users {planned_samples_per_arm} --alpha {alpha if alpha is not None else MEASURED_ALPHA:g} "
            f"--users-per-hour {users_per_hour:g} --base-rate {base_rate:g}")
