"""What an experiment's settings may be: a stage plan that can complete, guardrails that can always
roll back, sample sizes above a floor — and which edits would loosen a started experiment. Plain
values in, cleaned values out; a refusal is InvalidInput naming the field. The services (create,
update) and the admin form apply the same rules through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from genesis.config.schema import rollout_stage_problem
from genesis.errors import InvalidInput

GUARDRAIL_METRICS = ("success_rate", "latency_ms", "quality", "cost_per_request")
# Floors no experiment may go below (see validate_guardrails and validate_sample_size): without them
# one person could create a rollout whose guardrails can never fire. Time in a stage may be 0 (a
# demo, a test); the approver sees the holds, and a started experiment's holds only tighten.
MIN_SAMPLES_PER_ARM_FLOOR = 20
MAX_SUCCESS_RATE_DROP = 0.20


def validate_stage_plan(plan: Sequence[Any]) -> list[int]:
    """Whole percentages checked by genesis.config.schema.rollout_stage_problem: at least two,
    strictly increasing, the first below 100 and the last 100 (the last approval makes the candidate live)."""
    if any(isinstance(value, bool) for value in plan):
        raise InvalidInput(f"stage_plan: {list(plan)!r} must be whole percentages, e.g. 10,25,50,100")
    try:
        stages = [int(value) for value in plan]
    except (TypeError, ValueError):
        raise InvalidInput(f"stage_plan: {list(plan)!r} must be whole percentages, e.g. 10,25,50,100") from None
    if any(str(value).strip() != str(stage) for value, stage in zip(plan, stages) if not isinstance(value, int)):
        raise InvalidInput(f"stage_plan: {list(plan)!r} must be whole percentages, e.g. 10,25,50,100")
    problem = rollout_stage_problem(stages)  # the same rule as ROLLOUT_STAGES
    if problem:
        raise InvalidInput(f"stage_plan: {problem}")
    return stages


def validate_guardrails(rules: Any) -> list[dict[str, Any]]:
    if not isinstance(rules, list):
        raise InvalidInput("guardrails: must be a list of rules")
    cleaned = []
    for index, rule in enumerate(rules):
        where = f"guardrails[{index}]"
        if not isinstance(rule, dict):
            raise InvalidInput(f"{where}: must be an object")
        unknown = set(rule) - {"metric", "harmful_direction", "threshold", "threshold_kind", "on_violation"}
        if unknown:
            raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        metric = rule.get("metric")
        if metric not in GUARDRAIL_METRICS:
            raise InvalidInput(f"{where}.metric: '{metric}' is not one of {', '.join(GUARDRAIL_METRICS)}")
        direction = rule.get("harmful_direction", "decrease" if metric in ("success_rate", "quality") else "increase")
        if direction not in ("decrease", "increase"):
            raise InvalidInput(f"{where}.harmful_direction: must be 'decrease' or 'increase'")
        kind = rule.get("threshold_kind", "absolute")
        if kind not in ("absolute", "relative"):
            raise InvalidInput(f"{where}.threshold_kind: must be 'absolute' or 'relative'")
        action = rule.get("on_violation", "breach")
        if action not in ("breach", "warning"):
            raise InvalidInput(f"{where}.on_violation: must be 'breach' (rolls back) or 'warning' (tells people)")
        threshold = rule.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise InvalidInput(f"{where}.threshold: must be a number >= 0")
        cleaned.append({"metric": metric, "harmful_direction": direction, "threshold": float(threshold),
                        "threshold_kind": kind, "on_violation": action})
    if len({rule["metric"] for rule in cleaned}) != len(cleaned):
        raise InvalidInput("guardrails: one rule per metric")
    # Success rate is what the rollout protects users with: it must always be able to roll back.
    success = next((rule for rule in cleaned if rule["metric"] == "success_rate"), None)
    if success is None or success["harmful_direction"] != "decrease" or success["on_violation"] != "breach":
        raise InvalidInput(
            "guardrails: a success_rate rule with harmful_direction 'decrease' and on_violation 'breach' is required "
            "(it rolls the candidate back when it fails users), e.g. "
            '{"metric": "success_rate", "harmful_direction": "decrease", "threshold": 0.05}'
        )
    if success["threshold"] > MAX_SUCCESS_RATE_DROP:
        raise InvalidInput(
            f"guardrails: the success_rate threshold {success['threshold']:g} is above {MAX_SUCCESS_RATE_DROP:g}; "
            "a rollout that tolerates a bigger drop is not guarded"
        )
    return cleaned


def validate_sample_size(name: str, value: Any) -> int:
    return validate_number(name, value, minimum=MIN_SAMPLES_PER_ARM_FLOOR, integer=True)


def loosenings(*, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """How `after` (the edited settings) would make a started experiment easier to advance or harder
    to roll back than `before`. Tightening is fine: the approvers agreed to the looser settings."""
    found = []
    if after.get("min_stage_hours", before["min_stage_hours"]) < before["min_stage_hours"]:
        found.append("lowers min_stage_hours")
    if after.get("min_samples_per_arm", before["min_samples_per_arm"]) < before["min_samples_per_arm"]:
        found.append("lowers min_samples_per_arm")
    if after.get("planned_samples_per_arm", before["planned_samples_per_arm"]) != before["planned_samples_per_arm"]:
        found.append("changes planned_samples_per_arm (it tunes the sequential test)")
    new_rules = {rule["metric"]: rule for rule in after.get("guardrails", before["guardrails"])}
    for old in before["guardrails"]:
        metric, new = old["metric"], new_rules.get(old["metric"])
        if new is None:
            found.append(f"removes the {metric} guardrail")
        elif (new["harmful_direction"], new["threshold_kind"]) != (old["harmful_direction"], old["threshold_kind"]):
            found.append(f"changes what the {metric} guardrail measures")
        elif new["threshold"] > old["threshold"]:
            found.append(f"raises the {metric} threshold")
        elif old["on_violation"] == "breach" and new["on_violation"] != "breach":
            found.append(f"turns the {metric} guardrail from breach (rolls back) into warning")
    return found


def validate_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise InvalidInput(f"{name}: must be a number >= {minimum:g}")
    if integer and int(value) != value:
        raise InvalidInput(f"{name}: must be a whole number")
    return int(value) if integer else float(value)
