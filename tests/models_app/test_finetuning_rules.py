"""The pure rules of fine-tuning job tracking (no Django, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models_app.finetuning import rules

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# A job's life as the provider reports it: (seconds after T0, status), in order.
LIFE = [(0, "QUEUED"), (1, "VALIDATED"), (1, "RUNNING"), (5, "RUNNING"), (9, "SUCCESS")]


def apply_all(snapshots: list[tuple[int, str]]) -> tuple[str | None, datetime | None]:
    status, modified = None, None
    for seconds, incoming in snapshots:
        moment = T0 + timedelta(seconds=seconds)
        if not rules.snapshot_is_stale(
            current_status=status, current_modified_at=modified, incoming_status=incoming, incoming_modified_at=moment
        ):
            status, modified = incoming, moment
    return status, modified


@given(st.permutations(LIFE))
def test_snapshots_arriving_in_any_order_leave_the_latest(order: list[tuple[int, str]]) -> None:
    assert apply_all(order) == ("SUCCESS", T0 + timedelta(seconds=9))


@given(st.permutations([(0, "QUEUED"), (2, "RUNNING"), (3, "CANCELLATION_REQUESTED"), (3, "RUNNING"), (4, "CANCELLED")]))
def test_a_cancellation_is_never_undone_by_an_older_running_snapshot(order: list[tuple[int, str]]) -> None:
    assert apply_all(order)[0] == "CANCELLED"


def test_a_terminal_status_is_final_even_against_a_later_timestamp() -> None:
    assert rules.snapshot_is_stale(
        current_status="SUCCESS", current_modified_at=T0, incoming_status="RUNNING", incoming_modified_at=T0 + timedelta(hours=1)
    )
    assert not rules.snapshot_is_stale(
        current_status="SUCCESS", current_modified_at=T0, incoming_status="SUCCESS", incoming_modified_at=T0
    )


def test_a_row_that_knows_nothing_takes_any_snapshot() -> None:
    assert not rules.snapshot_is_stale(current_status=None, current_modified_at=None, incoming_status="QUEUED", incoming_modified_at=T0)
    # REFUSED is ours, not the provider's: a later answer replaces it.
    assert not rules.snapshot_is_stale(current_status="REFUSED", current_modified_at=T0, incoming_status="RUNNING", incoming_modified_at=T0)


def test_training_tokens_follow_epochs_or_steps() -> None:
    assert rules.estimate_training_tokens(file_tokens=1000) == 1000
    assert rules.estimate_training_tokens(file_tokens=1000, epochs=2.5) == 2500
    assert rules.estimate_training_tokens(file_tokens=1000, training_steps=3) == 3 * 131_072
    with pytest.raises(ValueError):
        rules.estimate_training_tokens(file_tokens=1000, epochs=0)


def test_file_tokens_are_a_quarter_of_the_characters() -> None:
    assert rules.estimate_file_tokens(characters=4003, samples=10) == 1000
    assert rules.estimate_file_tokens(characters=2, samples=1) == 1
    assert rules.estimate_file_tokens(characters=0, samples=0) == 0


@pytest.mark.parametrize(
    ("hyperparameters", "problem"),
    [
        ({"epochs": 1, "learning_rate": 1e-4}, None),
        ({"weight_decay": 0.0}, None),
        ({"training_steps": 5, "epochs": 1}, "not both"),
        ({"momentum": 0.9}, "not a fine-tuning hyperparameter"),
        ({"learning_rate": 0}, "must be positive"),
        ({"epochs": "two"}, "must be a number"),
        ({"epochs": True}, "must be a number"),
        ({"training_steps": 2.5}, "whole number"),
    ],
)
def test_hyperparameter_problems(hyperparameters: dict, problem: str | None) -> None:
    found = rules.hyperparameter_problems(hyperparameters)
    if problem is None:
        assert found == []
    else:
        assert any(problem in text for text in found), found


def audit(**overrides: object) -> dict[str, object]:
    report: dict[str, object] = {
        "format_errors": [], "format_errors_total": 0, "pii": {"email": 0, "phone": 0},
        "duplicates": {"exact": 0, "near": 0}, "difficulty": {"easy": 0.3, "medium": 0.45, "hard": 0.25},
    }
    return report | overrides


def test_pii_and_format_errors_block_duplicates_and_a_skew_only_warn() -> None:
    assert rules.training_data_findings(audit()) == rules.TrainingDataFindings(blocking=(), warnings=())
    found = rules.training_data_findings(audit(pii={"email": 6, "phone": 12, "iban": 0}, format_errors_total=1))
    assert found.blocking == ("1 format error", "18 PII occurrences (email 6, phone 12)") and found.warnings == ()
    found = rules.training_data_findings(
        audit(duplicates={"exact": 2, "near": 1}, difficulty={"easy": 0.9, "medium": 0.1, "hard": 0.0})
    )
    assert found.blocking == ()
    assert found.warnings == ("2 exact and 1 near duplicate lines", "difficulty skewed: 90% of the examples are easy")
