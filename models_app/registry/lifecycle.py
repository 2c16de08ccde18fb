"""The model-version lifecycle as a transition table (pure: no Django).

registered → benchmarking → approved_for_rollout → rolling_out → live → retired, or rejected.
A benchmark that is not decisive sends the version back to registered; a rollout that is rolled back —
by the guardrails or by a person — rejects it (experiments/services.py `_rollback`).

Who may make a version live is the point of the whole control plane, so it is decided here, for every
caller (the admin's "Change status…", seed_demo, the rollout services):

* A version replaces an agent's live model only by completing a rollout (rolling_out → live, from an
  experiment whose candidate passed the benchmark gate, or had its verdict overridden with a reason,
  and whose stages were approved by a second person). The live version it replaces is retired then,
  in the same transaction (registry/services.py `model_version_transition`).
* The one exception is an agent's first model: a registered *baseline* may go straight to live while
  the agent has no live version — there is nothing to compare it against and nobody it would replace.
* A live version is never retired on its own: that would leave the agent with no model, and an agent
  with no live version takes any registered baseline by the exception above — retire-then-bootstrap
  would be a by-hand replacement without a benchmark or approvals.
"""

from __future__ import annotations

# How Mistral (and the simulator, and OpenAI) name a fine-tuned model: ft:<base>:…
FINE_TUNED_PREFIX = "ft:"

REGISTERED = "registered"
BENCHMARKING = "benchmarking"
APPROVED_FOR_ROLLOUT = "approved_for_rollout"
ROLLING_OUT = "rolling_out"
LIVE = "live"
RETIRED = "retired"
REJECTED = "rejected"

BASELINE = "baseline"

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # → live only as an agent's first baseline; → approved_for_rollout only by a verdict override.
    REGISTERED: frozenset({BENCHMARKING, APPROVED_FOR_ROLLOUT, REJECTED, RETIRED, LIVE}),
    BENCHMARKING: frozenset({REGISTERED, APPROVED_FOR_ROLLOUT, REJECTED}),
    # → registered when another version goes live: its approval was a PASS against the model it replaced.
    APPROVED_FOR_ROLLOUT: frozenset({REGISTERED, BENCHMARKING, ROLLING_OUT, REJECTED, RETIRED}),
    ROLLING_OUT: frozenset({LIVE, APPROVED_FOR_ROLLOUT, REJECTED}),
    # A live version is retired when its successor goes live (model_version_transition), never on its own.
    LIVE: frozenset(),
    RETIRED: frozenset(),
    # A rejected version comes back only through a recorded verdict override (see transition_refusal).
    REJECTED: frozenset({RETIRED, APPROVED_FOR_ROLLOUT}),
}


# What a person may do by hand (the admin's "Change status…"): take a version that serves nobody out
# of the running, and put a registered version live — which the rules below allow only for an agent's
# first baseline. Every other move belongs to a process that checks its own evidence: a benchmark run
# (benchmarking, approved_for_rollout, back to registered), a verdict override with its permission and
# reason, and a rollout with its four-eyes approvals (rolling_out, and live from rolling_out).
MANUAL_TARGETS = frozenset({RETIRED, REJECTED})
# Versions that serve users: a rolling-out one serves its experiment's treatment arm, and leaves it only
# by the rollout's own services (a rollback rejects it and stops the routing; completion makes it live).
SERVING = frozenset({ROLLING_OUT, LIVE})


def manual_targets(*, current: str, kind: str, agent_has_live: bool) -> list[str]:
    """The statuses a person may move a version to by hand, in a stable order."""
    if current in SERVING:
        return []
    targets = set(MANUAL_TARGETS) | ({LIVE} if current == REGISTERED else set())
    return sorted(
        target
        for target in ALLOWED_TRANSITIONS[current] & targets
        if transition_refusal(current=current, target=target, kind=kind, agent_has_live=agent_has_live) is None
    )


def transition_refusal(
    *, current: str, target: str, kind: str, agent_has_live: bool, verdict_overridden: bool = False
) -> str | None:
    """Why `current → target` is not allowed for a version of `kind`, or None when it is.

    `agent_has_live`: whether the version's agent has a live version now (another one: a version
    that is live itself has no transition). `verdict_overridden` is set by the service once a person
    with the override permission has given a reason to skip a missing or non-PASS benchmark verdict."""
    if target not in ALLOWED_TRANSITIONS:
        return f"'{target}' is not a model status"
    if target == current:
        return f"the version is already {current}"
    if current == LIVE:
        return (
            "a live version is retired only when its successor goes live (a rollout completed to 100 %); "
            "retiring it alone would leave the agent with no model"
        )
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none (final state)"
        return f"a {current} version cannot become {target}; allowed next: {allowed}"
    if current == REJECTED and target == APPROVED_FOR_ROLLOUT and not verdict_overridden:
        return (
            "a rejected version can be approved for rollout only by overriding its verdict, with the "
            "permission and a reason"
        )
    if current == REGISTERED and target == APPROVED_FOR_ROLLOUT and not verdict_overridden:
        return (
            f"a registered version cannot become {target} without a benchmark: run "
            "`manage.py benchmark_finetuned` first, or override the verdict with a reason"
        )
    if current == REGISTERED and target == LIVE:
        if kind != BASELINE:
            return (
                "a fine-tuned version cannot become live without a benchmark and a rollout: benchmark it against "
                "the live model (`manage.py benchmark_finetuned`), then roll it out (`manage.py rollout_models --start`)"
            )
        if agent_has_live:
            return (
                "the agent already has a live version, and a baseline goes live by hand only as an agent's "
                "first model; to replace the live model, benchmark this version against it and roll it out "
                "(an experiment whose stages a second person approves)"
            )
    return None
