"""Real PII in support-chat contexts is always found: no rule may drop a finding for the words around it.

The corpus (bench/pii/context_positives.py) holds the lines a review found lost by the benign-context
rules of 2026-12-07 (recall 5/33 on its lines) and seeded lines of the same kinds for every type.
"""

from __future__ import annotations

from collections import Counter

import pytest

from audits.pii import scan_text
from bench.pii.context_positives import REVIEW_LINES, build_context_positives

CORPUS = build_context_positives(seed=7, per_type=20)


def test_the_corpus_covers_every_type_in_support_contexts() -> None:
    counts = Counter(kind for _, kind, _ in CORPUS)
    assert len(CORPUS) >= 80
    assert set(counts) == {"phone", "credit_card", "ip_address", "email", "iban", "ssn"}
    assert min(counts.values()) >= 20
    assert set(REVIEW_LINES) <= set(CORPUS)


@pytest.mark.parametrize(("line", "kind", "value"), CORPUS, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(CORPUS)])
def test_pii_in_a_support_context_is_found(line: str, kind: str, value: str) -> None:
    start = line.index(value)
    end = start + len(value)
    found = [(m.type, m.value_in(line)) for m in scan_text(line)]
    assert any(m.type == kind and m.start < end and m.end > start for m in scan_text(line)), (line, found)


@pytest.mark.parametrize("seed", [11, 23])
def test_recall_is_total_on_other_seeds(seed: int) -> None:
    corpus = build_context_positives(seed=seed, per_type=40)
    missed = [
        line
        for line, kind, value in corpus
        if not any(
            m.type == kind and m.start < line.index(value) + len(value) and m.end > line.index(value)
            for m in scan_text(line)
        )
    ]
    assert missed == []
