"""Measuring the refusal detector and the judge against a person's labels. Pure (stdlib only).

The build's judge/detector agreement is a consistency check between two automatic labellers, not a
measure of either: with the simulator both follow nearly the same refusal phrases and the only
disagreements are the simulator's injected label noise. What the detector and a judge get right on
real responses is measured only against labels a person gives — `review_waltzrl --sample` exports a
seeded sample of a build's items without the automatic labels, a person fills in `refusal`, `unsafe`
and `overrefuse`, and `review_waltzrl --score` compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

HUMAN_LABELS = ("refusal", "unsafe", "overrefuse")


def confusion(pairs: Iterable[tuple[bool, bool]]) -> dict[str, Any]:
    """(predicted, true) pairs → counts, precision, recall and agreement (None where undefined)."""
    tp = fp = fn = tn = 0
    for predicted, true in pairs:
        if predicted and true:
            tp += 1
        elif predicted:
            fp += 1
        elif true:
            fn += 1
        else:
            tn += 1
    n = tp + fp + fn + tn
    return {
        "n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "agreement": round((tp + tn) / n, 4) if n else None,
    }


def human_label(row: dict[str, Any], name: str) -> bool | None:
    """A person's label from a review row: true / false, or None when left blank. Anything else is an
    error naming the item, so a typo is not read as "no"."""
    value = row.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    raise ValueError(f"item {row.get('item')}: {name} must be true, false or null, got {value!r}")
