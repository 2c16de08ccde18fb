"""Audit memory bounded in line count (issue 18, finding 8): every example keeps 16 bytes, but
MinHash signatures (128 bytes) only for a consistent sample once a file holds more than
NEAR_MAX_EXAMPLES examples. The memory itself is measured by bench/pii/run.py (both shapes)."""

from __future__ import annotations

import json
import random

import numpy as np

from audits.dedupe import (
    NEAR_MAX_EXAMPLES,
    SAMPLE_LEVELS,
    ExampleFingerprints,
    FingerprintCollector,
    find_duplicates,
    sample_below_for,
    sample_limit,
)
from audits.report import audit_file

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def sentence(rng: random.Random, words: int = 30) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(words))


def collect(texts: list[str], *, sample_below: int) -> ExampleFingerprints:
    collector = FingerprintCollector(batch_size=500, sample_below=sample_below)
    for line, text in enumerate(texts, start=1):
        collector.add(line=line, text=text)
    return collector.finish()


def test_the_first_sampling_limit_follows_the_expected_example_count():
    assert sample_below_for(NEAR_MAX_EXAMPLES) == SAMPLE_LEVELS
    assert sample_below_for(NEAR_MAX_EXAMPLES * 4) == SAMPLE_LEVELS // 4
    assert sample_below_for(NEAR_MAX_EXAMPLES * 10_000) == 1  # never nothing at all


def test_signatures_are_kept_for_a_consistent_sample_and_exact_keys_for_everyone():
    rng = random.Random(3)
    texts = [sentence(rng) for _ in range(4000)]
    fingerprints = collect(texts, sample_below=SAMPLE_LEVELS // 4)
    assert fingerprints.lines.size == fingerprints.exact_keys.size == 4000
    kept = fingerprints.signatures.shape[0]
    assert 800 < kept < 1200  # about a quarter
    assert (fingerprints.signatures[:, 0] < SAMPLE_LEVELS // 4).all()
    # The same examples are sampled whoever computes them: the rule depends on the text alone.
    again = collect(list(reversed(texts)), sample_below=SAMPLE_LEVELS // 4)
    assert sorted(fingerprints.lines[fingerprints.signature_rows].tolist()) == sorted(
        (4001 - again.lines[again.signature_rows]).tolist()
    )


def test_near_duplicates_are_sampled_together_not_independently():
    rng = random.Random(5)
    texts = []
    for _ in range(600):
        base = sentence(rng, 60)
        texts += [base, base + " " + rng.choice(WORDS)]  # Jaccard ≈ 0.97
    fingerprints = collect(texts, sample_below=SAMPLE_LEVELS // 4)
    found = find_duplicates(fingerprints).near_groups
    # Independent sampling would keep both of a pair 1 time in 16 (≈ 38 pairs); consistent sampling
    # keeps the pair whenever the first bins agree, i.e. about as often as one of them (≈ 150).
    assert len(found) > 100
    assert all(len(group) == 2 and group[1] == group[0] + 1 for group in found)


def test_a_tighter_limit_keeps_at_most_the_cap():
    rng = np.random.default_rng(1)
    first_bins = np.bincount(rng.integers(0, SAMPLE_LEVELS, 10_000), minlength=SAMPLE_LEVELS)
    limit = sample_limit(10_000, first_bins, cap=2_500)
    assert first_bins[:limit].sum() <= 2_500 < first_bins[: limit + 1].sum()
    assert sample_limit(2_000, first_bins, cap=2_500) == SAMPLE_LEVELS


def test_a_big_file_is_audited_with_a_bounded_sample_and_says_so(tmp_path):
    # A cap of 1 000 makes a small file "big": the audit keeps about that many signatures, still finds
    # every exact duplicate, and says the near count is a lower bound.
    rng = random.Random(9)
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for index in range(8_000):
            content = "repeat me please" if index % 100 == 0 else f"q{index} {sentence(rng, 8)}"
            handle.write(json.dumps({"messages": [{"role": "user", "content": content},
                                                  {"role": "assistant", "content": "ok"}]}) + "\n")
    report = audit_file(path, workers=1, near_max_examples=1_000)
    assert report.lines == 8_000
    assert report.duplicates.exact == 79  # complete: 80 identical lines count 79
    assert report.near_sampled_fraction <= 1_000 * 5 / 4 / 8_000 + 1 / SAMPLE_LEVELS
    assert any("lower bound" in note for note in report.notes)
    assert report.to_contract_dict()["duplicate_groups"]["near_sampled_fraction"] == round(report.near_sampled_fraction, 4)
