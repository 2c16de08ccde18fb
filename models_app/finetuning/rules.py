"""Rules of fine-tuning job tracking, as plain values (no Django): which statuses exist and which are
still moving, whether a provider snapshot is newer than what a job row holds, and how many training
tokens — and so how many dollars — a job is expected to use.

The statuses are the provider's own (Mistral's `status` field, mirrored exactly), plus two local ones
for a job the provider does not (or no longer) know: NOT_CREATED and REFUSED.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The provider's statuses, exactly as Mistral (and the simulator) spell them.
QUEUED = "QUEUED"
VALIDATING = "VALIDATING"
VALIDATED = "VALIDATED"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
FAILED_VALIDATION = "FAILED_VALIDATION"
CANCELLED = "CANCELLED"
CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
PROVIDER_STATUSES = (
    QUEUED, VALIDATING, VALIDATED, RUNNING, SUCCESS, FAILED, FAILED_VALIDATION, CANCELLED, CANCELLATION_REQUESTED,
)

# Local statuses: the row exists but the provider has no job for it (yet), or refuses to talk about it.
NOT_CREATED = "NOT_CREATED"
REFUSED = "REFUSED"

TERMINAL_STATUSES = frozenset({SUCCESS, FAILED, FAILED_VALIDATION, CANCELLED})
# Ended without a charge: no cost goes on the ledger for these, so no estimate is shown for them either.
UNCHARGED_STATUSES = frozenset({REFUSED, FAILED, FAILED_VALIDATION, CANCELLED})
# What the provider may still change: beat polls these.
MOVING_STATUSES = frozenset({QUEUED, VALIDATING, VALIDATED, RUNNING, CANCELLATION_REQUESTED})
STARTABLE_STATUSES = frozenset({QUEUED, VALIDATING, VALIDATED})
CANCELLABLE_STATUSES = frozenset({QUEUED, VALIDATING, VALIDATED, RUNNING})

# Order of progress at the same provider timestamp (Mistral's modified_at has one-second resolution,
# so two snapshots a second apart can carry the same time).
_PROGRESS_RANK = {
    QUEUED: 0,
    VALIDATING: 1,
    VALIDATED: 2,
    RUNNING: 3,
    CANCELLATION_REQUESTED: 4,
    SUCCESS: 5,
    FAILED: 5,
    FAILED_VALIDATION: 5,
    CANCELLED: 5,
}

# HTTP statuses with which a provider says a file (or the route to it) is gone (Mistral's deprecated
# fine-tuning routes answer 404/410).
GONE_HTTP_STATUSES = frozenset({404, 405, 410})
# …and those with which it says it does not serve the fine-tuning routes at all: 501 too (a server
# that implements only chat, an OpenAI-compatible gateway in front of a Mistral-kind account).
ROUTE_MISSING_HTTP_STATUSES = GONE_HTTP_STATUSES | {501}
# A refusal of a job's routes that still leaves the job followed. On get (sync): the key was refused (a
# person fixes it, and the next sync goes on) or a rate limit; any other refusal (404/410 of a retired
# route, 501, a 400/422 "deprecated", …) ends the job's tracking: REFUSED, its budget hold released, the
# answer shown. Polling a job the provider will not answer for would go on forever.
# On start and cancel only a missing route (404/405/410/501) ends it. Any other refusal — a 400/422 "job
# cannot be cancelled in its current state", a 409 — says nothing about whether the job still runs: it
# may be training and, if it succeeds, cost money and deliver a model. So it stays followed with its
# hold, the answer is shown, and the next sync (a get) says where it is.
_STILL_FOLLOWED_AFTER = frozenset({401, 403, 429})


def job_refusal_ends_tracking(status_code: int | None, *, asked_to_act: bool) -> bool:
    """Whether a provider's refusal (an HTTP error answer, `status_code`) on a job's get
    (`asked_to_act` False) or start/cancel (True) route means the job can no longer be followed."""
    if status_code is None or not 400 <= status_code < 600:
        return False
    if asked_to_act:
        return status_code in ROUTE_MISSING_HTTP_STATUSES
    return status_code not in _STILL_FOLLOWED_AFTER


# Mistral reports `train_tokens_per_step` per job; 131 072 is its value for the small models (and the
# simulator's). Used only to estimate a job given in training steps before the provider has seen it.
DEFAULT_TOKENS_PER_STEP = 131_072
CHARS_PER_TOKEN = 4  # the estimate the simulator (and Mistral's own rule of thumb) uses
MAX_SUFFIX_LENGTH = 18  # Mistral refuses longer model suffixes

HYPERPARAMETER_NAMES = frozenset(
    {"training_steps", "epochs", "learning_rate", "weight_decay", "warmup_fraction", "fim_ratio", "seq_len"}
)


def snapshot_is_stale(
    *,
    current_status: str | None,
    current_modified_at: datetime | None,
    incoming_status: str,
    incoming_modified_at: datetime,
) -> bool:
    """True when a snapshot must not overwrite what the row holds, because the row already reflects
    something later: syncs run concurrently (beat, a person's "sync now", a redelivered task) and the
    one that fetched first may write last. A terminal status is final at the provider, so nothing
    replaces it but the same status."""
    if current_status is None or current_status not in _PROGRESS_RANK:
        return False
    if current_status in TERMINAL_STATUSES and incoming_status != current_status:
        return True
    if current_modified_at is None:
        return False
    current = (current_modified_at, _PROGRESS_RANK[current_status])
    incoming = (incoming_modified_at, _PROGRESS_RANK.get(incoming_status, -1))
    return incoming < current


def estimate_file_tokens(*, characters: int, samples: int) -> int:
    """Tokens of a training file: about one per four characters of sample text."""
    if samples <= 0:
        return 0
    return max(1, characters // CHARS_PER_TOKEN)


def estimate_training_tokens(
    *,
    file_tokens: int,
    epochs: float | None = None,
    training_steps: int | None = None,
    tokens_per_step: int = DEFAULT_TOKENS_PER_STEP,
) -> int:
    """Tokens a job trains on: steps × tokens per step when given in steps, else the file's tokens ×
    epochs (one epoch when neither is given) — what the provider bills as training tokens."""
    if file_tokens < 0:
        raise ValueError("file_tokens cannot be negative")
    if training_steps is not None:
        if training_steps < 1:
            raise ValueError("training_steps must be at least 1")
        return training_steps * tokens_per_step
    epochs = 1.0 if epochs is None else float(epochs)
    if not math.isfinite(epochs) or epochs <= 0:
        raise ValueError("epochs must be a positive number")
    return math.ceil(file_tokens * epochs)


def hyperparameter_problems(hyperparameters: dict[str, object]) -> list[str]:
    """What is wrong with a hyperparameter dict, before the provider is asked (it checks ranges)."""
    problems = []
    for name, value in hyperparameters.items():
        if name not in HYPERPARAMETER_NAMES:
            problems.append(f"'{name}' is not a fine-tuning hyperparameter; known: {', '.join(sorted(HYPERPARAMETER_NAMES))}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"'{name}' must be a number, got {value!r}")
            continue
        zero_allowed = name in ("weight_decay", "warmup_fraction", "fim_ratio")
        if value < 0 or (value == 0 and not zero_allowed):
            problems.append(f"'{name}' must be {'zero or more' if zero_allowed else 'positive'}, got {value!r}")
    if "training_steps" in hyperparameters and "epochs" in hyperparameters:
        problems.append("give training_steps or epochs, not both")
    steps = hyperparameters.get("training_steps")
    if isinstance(steps, float) and not steps.is_integer():
        problems.append(f"'training_steps' must be a whole number, got {steps!r}")
    return problems


# One difficulty level holding more than this share of the examples: the model learns little of the others.
DIFFICULTY_SKEW_SHARE = 0.8


@dataclass(frozen=True)
class TrainingDataFindings:
    """What a training file's audit means for fine-tuning on it: `blocking` findings refuse the job
    unless a person gives a reason; `warnings` are shown, never refuse."""

    blocking: tuple[str, ...]
    warnings: tuple[str, ...]


def training_data_findings(report: Mapping[str, Any]) -> TrainingDataFindings:
    """The rule, from an audit report (the `audit_dataset --json` object): PII would be sent to the
    provider and learnt by the model, and a format error fails the job, so both block; duplicates and a
    difficulty skew only weaken the model, so they warn."""
    blocking = []
    format_errors = int(report.get("format_errors_total", len(report.get("format_errors") or [])))
    if format_errors:
        blocking.append(f"{format_errors} format error{'s' if format_errors != 1 else ''}")
    pii = {kind: int(count) for kind, count in (report.get("pii") or {}).items() if count}
    if pii:
        total = sum(pii.values())
        by_type = ", ".join(f"{kind} {count}" for kind, count in sorted(pii.items()))
        blocking.append(f"{total} PII occurrence{'s' if total != 1 else ''} ({by_type})")
    warnings = []
    duplicates = report.get("duplicates") or {}
    exact, near = int(duplicates.get("exact") or 0), int(duplicates.get("near") or 0)
    if exact or near:
        warnings.append(f"{exact} exact and {near} near duplicate lines")
    difficulty = {level: float(share) for level, share in (report.get("difficulty") or {}).items()}
    if difficulty:
        level, share = max(difficulty.items(), key=lambda item: item[1])
        if share > DIFFICULTY_SKEW_SHARE:
            warnings.append(f"difficulty skewed: {share:.0%} of the examples are {level}")
    return TrainingDataFindings(blocking=tuple(blocking), warnings=tuple(warnings))
