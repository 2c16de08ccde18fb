"""Exact and near duplicates: groups of line numbers, counted as the contract says."""

from __future__ import annotations

import random

import numpy as np
import pytest

from audits.dedupe import (
    BUCKET_WINDOW,
    MIN_THRESHOLD,
    NUM_BINS,
    ExampleFingerprints,
    FingerprintCollector,
    estimated_similarity,
    exact_key,
    find_duplicates,
    lsh_bands,
    minhash_signatures,
    normalise,
)

_WORDS = [f"word{i}" for i in range(3000)]


def prose(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def shingles(text: str) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def true_jaccard(first: str, second: str) -> float:
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)


def duplicates_of(texts: list[str], **options: object):
    collector = FingerprintCollector(batch_size=7)  # several batches even in small tests
    for line, text in enumerate(texts, start=1):
        collector.add(line=line, text=text)
    return find_duplicates(collector.finish(), **options)


def test_a_group_of_three_identical_lines_counts_two() -> None:
    report = duplicates_of([prose(1), prose(2), prose(1), prose(3), prose(1)])
    assert report.exact_groups == [[1, 3, 5]]
    assert (report.exact, report.near) == (2, 0)


def test_exact_means_after_case_folding_and_collapsing_whitespace() -> None:
    text = prose(4)
    shouted = "  " + text.upper().replace(" ", " \n\t ") + " "
    report = duplicates_of([text, shouted, text + " extra"])
    assert report.exact_groups == [[1, 2]]
    assert normalise("A\tB\n\nc ") == "a b c"
    assert exact_key(normalise(text)) == exact_key(normalise(shouted))


def test_near_duplicates_are_grouped_and_unrelated_texts_are_not() -> None:
    base = prose(5, words=150)
    one_word_changed = base.replace(base.split()[70], "different", 1)
    appended = base + " thanks a lot"
    texts = [base, prose(6, 150), one_word_changed, prose(7, 150), appended]
    assert true_jaccard(base, one_word_changed) > 0.9 and true_jaccard(base, appended) > 0.9
    report = duplicates_of(texts)
    assert report.near_groups == [[1, 3, 5]]
    assert (report.exact, report.near) == (0, 2)


def test_a_line_counted_as_exact_is_not_counted_again_as_near() -> None:
    base = prose(8, words=150)
    close = base + " indeed"
    report = duplicates_of([base, base, close, close, base])
    assert report.exact_groups == [[1, 2, 5], [3, 4]]
    assert report.near_groups == [[1, 3]]  # only the first line of each exact group
    assert (report.exact, report.near) == (3, 1)
    assert report.redundant_lines() == {2, 3, 4, 5}


def edited_pairs(count: int, rate: float, seed: int) -> list[tuple[str, str]]:
    """(text, the text with about `rate` of its words replaced) pairs, unrelated to one another."""
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        base = prose(1000 + seed * 100 + index, words=150).split()
        edited = [word if rng.random() > rate else rng.choice(_WORDS) for word in base]
        pairs.append((" ".join(base), " ".join(edited)))
    return pairs


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_the_threshold_is_configurable_and_works_across_its_range(threshold: float) -> None:
    # Pairs clearly above the threshold are found (LSH may miss a few at random) and pairs clearly
    # below it are not; with the bands fixed for 0.8, pairs at 0.4 were found 1 time in 5.
    above = [pair for pair in edited_pairs(40, 0.01, seed=1) + edited_pairs(40, 0.08, seed=2) + edited_pairs(40, 0.16, seed=3)
             if threshold + 0.12 <= true_jaccard(*pair) < 1][:20]  # identical ones are exact, not near
    below = [pair for pair in edited_pairs(40, 0.16, seed=4) + edited_pairs(40, 0.3, seed=5) + edited_pairs(40, 0.6, seed=6)
             if true_jaccard(*pair) <= threshold - 0.12][:20]
    assert len(above) == 20 and len(below) == 20
    found_above = sum(duplicates_of(list(pair), threshold=threshold).near for pair in above)
    found_below = sum(duplicates_of(list(pair), threshold=threshold).near for pair in below)
    assert found_above >= 18 and found_below <= 1


def test_thresholds_the_signature_cannot_support_are_refused_with_the_reason() -> None:
    for refused in (MIN_THRESHOLD - 0.01, 0.0, 1.5):
        with pytest.raises(ValueError, match=rf"between {MIN_THRESHOLD:g} and 1, got .*cannot find examples less similar"):
            duplicates_of([prose(1)], threshold=refused)


def test_bands_are_chosen_for_the_threshold() -> None:
    chosen = [lsh_bands(threshold) for threshold in (0.3, 0.5, 0.8, 0.95)]
    assert all(bands * rows <= NUM_BINS and rows >= 3 for bands, rows in chosen)
    assert [rows for _, rows in chosen] == sorted(rows for _, rows in chosen)  # stricter: longer bands
    assert chosen[0] != chosen[2]


def fingerprints_of(signatures: np.ndarray) -> ExampleFingerprints:
    count = len(signatures)
    # Different exact keys: only the signatures can make them duplicates.
    return ExampleFingerprints(np.arange(1, count + 1, dtype=np.int64), np.arange(count, dtype=np.uint64), signatures)


def test_bucket_members_are_compared_with_each_other_not_only_with_the_first() -> None:
    rng = np.random.default_rng(0)
    bands, rows = lsh_bands(0.8)
    twin = rng.integers(0, 256, NUM_BINS, dtype=np.uint8)
    near_twin = twin.copy()
    near_twin[0] ^= 1  # about 0.99 similar; differs in band 0 only
    # In every other band an unrelated example comes first in the twins' bucket.
    blockers = []
    for band in range(1, bands):
        blocker = rng.integers(0, 256, NUM_BINS, dtype=np.uint8)
        blocker[band * rows : (band + 1) * rows] = twin[band * rows : (band + 1) * rows]
        blockers.append(blocker)
    report = find_duplicates(fingerprints_of(np.stack(blockers + [twin, near_twin])))
    assert report.near_groups == [[bands, bands + 1]]


def test_a_bucket_larger_than_the_window_still_forms_one_group() -> None:
    rng = np.random.default_rng(1)
    signature = rng.integers(0, 256, NUM_BINS, dtype=np.uint8)
    size = 3 * BUCKET_WINDOW + 5
    report = find_duplicates(fingerprints_of(np.tile(signature, (size, 1))))
    assert report.near_groups == [list(range(1, size + 1))]


def test_minhash_estimates_jaccard_and_is_deterministic() -> None:
    rng = random.Random(10)
    base = prose(10, words=200).split()
    errors = []
    for _ in range(40):
        other = [word if rng.random() > 0.1 else rng.choice(_WORDS) for word in base]
        first, second = " ".join(base), " ".join(other)
        signatures = minhash_signatures([normalise(first), normalise(second)])
        errors.append(float(estimated_similarity(signatures[0], signatures[1])) - true_jaccard(first, second))
    assert abs(np.mean(errors)) < 0.03  # unbiased
    assert np.std(errors) < 0.08  # 128 bins: standard error ≈ 0.04
    again = minhash_signatures([normalise(" ".join(base))])
    assert np.array_equal(again, minhash_signatures([normalise(" ".join(base))]))


def test_short_texts_compare_sensibly() -> None:
    signatures = minhash_signatures(["hi there", "hi there", "hello world", "x", ""])
    assert estimated_similarity(signatures[0], signatures[1]) == 1.0
    assert estimated_similarity(signatures[0], signatures[2]) < 0.2
    assert estimated_similarity(signatures[0], signatures[3]) < 0.2
    assert (signatures[4] == 255).all()  # no words: nothing to compare


def test_empty_texts_are_ignored_and_nothing_gives_an_empty_report() -> None:
    report = duplicates_of(["", "   ", ""])
    assert (report.exact, report.near, report.exact_groups, report.near_groups) == (0, 0, [], [])


def test_many_examples_with_planted_duplicates() -> None:
    texts = [prose(100 + i, words=80) for i in range(3000)]
    for i in range(0, 300, 3):
        texts[1000 + i] = texts[i]  # 100 exact copies
        texts[2000 + i] = texts[i + 1] + " plus a few words"  # 100 near copies
    report = duplicates_of(texts)
    assert report.exact == 100
    assert report.near == 100
