"""The model-version lifecycle as a transition table (pure: no Django).

registered → benchmarking → approved_for_rollout → rolling_out → live → retired, or rejected.
A benchmark that is not decisive sends the version back to registered; a rollout that is rolled back —
by the guardrails or by a person — rejects it (experiments/services.py `_rollback`).
A baseline needs no benchmark against itself, so it may go straight from registered to live.
"""

from __future__ import annotations

REGISTERED = "registered"
BENCHMARKING = "benchmarking"
APPROVED_FOR_ROLLOUT = "approved_for_rollout"
ROLLING_OUT = "rolling_out"
LIVE = "live"
RETIRED = "retired"
REJECTED = "rejected"

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    REGISTERED: frozenset({BENCHMARKING, APPROVED_FOR_ROLLOUT, REJECTED, RETIRED, LIVE}),
    BENCHMARKING: frozenset({REGISTERED, APPROVED_FOR_ROLLOUT, REJECTED}),
    APPROVED_FOR_ROLLOUT: frozenset({BENCHMARKING, ROLLING_OUT, REJECTED, RETIRED}),
    ROLLING_OUT: frozenset({LIVE, APPROVED_FOR_ROLLOUT, REJECTED}),
    LIVE: frozenset({RETIRED}),
    RETIRED: frozenset(),
    # A rejected version comes back only through a recorded verdict override (see transition_refusal).
    REJECTED: frozenset({RETIRED, APPROVED_FOR_ROLLOUT}),
}


# What a person may do by hand (the admin's "Change status…"): take a version out of service. Every
# other move belongs to a process that checks its own evidence: a benchmark run (benchmarking,
# approved_for_rollout, back to registered), a verdict override with its permission and reason, and a
# rollout with its four-eyes approvals (rolling_out, live). A baseline needs no evidence to go live.
MANUAL_TARGETS = frozenset({RETIRED, REJECTED})


def manual_targets(*, current: str, kind: str) -> list[str]:
    """The statuses a person may move a version to by hand, in a stable order."""
    allowed = set(ALLOWED_TRANSITIONS[current]) & MANUAL_TARGETS
    if kind == "baseline" and current == REGISTERED:
        allowed.add(LIVE)
    return sorted(allowed)


def transition_refusal(*, current: str, target: str, kind: str, verdict_overridden: bool = False) -> str | None:
    """Why `current → target` is not allowed for a version of `kind`, or None when it is.

    `verdict_overridden` is set by the service once a person with the override permission has given
    a reason to skip a missing or non-PASS benchmark verdict."""
    if target not in ALLOWED_TRANSITIONS:
        return f"'{target}' is not a model status"
    if target == current:
        return f"the version is already {current}"
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none (final state)"
        return f"a {current} version cannot become {target}; allowed next: {allowed}"
    if current == REJECTED and target == APPROVED_FOR_ROLLOUT and not verdict_overridden:
        return (
            "a rejected version can be approved for rollout only by overriding its verdict, with the "
            "permission and a reason"
        )
    if current == REGISTERED and target in (LIVE, APPROVED_FOR_ROLLOUT) and kind != "baseline" and not (
        target == APPROVED_FOR_ROLLOUT and verdict_overridden
    ):
        return (
            f"a fine-tuned version cannot become {target} without a benchmark: run "
            "`manage.py benchmark_finetuned` first, or override the verdict with a reason"
        )
    return None
