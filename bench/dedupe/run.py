"""The near-duplicate detector's operating characteristic: how often a pair of texts of a known true
similarity is flagged, by text length (not part of the test run).

    .venv/bin/python bench/dedupe/run.py [--pairs 300] [--lengths 10,20,40,80,150,300] [--threshold 0.8] [--seed 7]

For each length (in words) the script writes `--pairs` pairs per bucket of similarity: a text of random words drawn from a
vocabulary of 50 000 made-up words (so two unrelated texts share no 3-word shingle), and a copy
changed by random word substitutions, insertions and deletions (half of them at an end of the
text, where a short text can be changed without losing most of its shingles) until its *true* Jaccard similarity
— of the sets of word 3-shingles, the similarity the detector estimates (`audits/dedupe.py`) — falls
to a target drawn uniformly from [0.45, 1). The true similarity is computed exactly, and pairs are
bucketed by it. Then it runs the real code, unchanged, on all texts of one length at once:

* audit — `FingerprintCollector` + `find_duplicates` (MinHash, LSH bands for the threshold, then the
  estimate checked against the threshold), as `audit_dataset` runs it; a pair is flagged when both
  texts end in one near (or exact) group;
* waltzrl — `safety.selection.contaminated_indexes(changed copies, originals)`, as a WaltzRL build
  removes prompts that nearly repeat a benchmark case (and counts train/validation overlap): the
  exact Jaccard similarity of every pair sharing a shingle against the threshold (before 2026-12-07
  it was the MinHash estimate of every pair, which gave the audit's curve).

It prints, per length, the share of pairs flagged in each bucket of true similarity (with the number
of pairs in it): the detection curve above the threshold and the false-positive curve below it.
Pairs from different originals share no shingle, so cross-pair matches are not expected; their count
is printed as a check.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from audits.dedupe import SHINGLE_WORDS, FingerprintCollector, find_duplicates  # noqa: E402
from safety.selection import contaminated_indexes  # noqa: E402

BUCKETS = [0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]


def vocabulary(rng: random.Random, size: int = 50_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randrange(3, 9))))
    return sorted(words)


def shingles(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < SHINGLE_WORDS:
        return {tuple(words)}
    return {tuple(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def jaccard(first: set[tuple[str, ...]], second: set[tuple[str, ...]]) -> float:
    return len(first & second) / len(first | second)


def make_pair(rng: random.Random, vocab: list[str], length: int) -> tuple[str, str, float]:
    """(original, changed copy, true Jaccard of their word 3-shingle sets), the copy edited down to a
    random target similarity in [0.45, 1): edits stop at the first similarity below it."""
    original = [rng.choice(vocab) for _ in range(length)]
    original_shingles = shingles(original)
    target = rng.uniform(0.45, 1.0)
    changed = list(original)
    similarity = 1.0
    while similarity >= target:
        edit = rng.random()
        # Half the edits at an end of the text: in a short text only those keep the similarity high.
        size = len(changed) + (1 if edit < 1 / 3 else 0)
        position = rng.randrange(size) if rng.random() < 0.5 else rng.choice([0, 1, size - 2, size - 1])
        position = min(max(position, 0), size - 1)
        if edit < 1 / 3:
            changed.insert(position, rng.choice(vocab))
        elif edit < 2 / 3 or len(changed) <= SHINGLE_WORDS:
            changed[position] = rng.choice(vocab)
        else:
            del changed[position]
        similarity = jaccard(original_shingles, shingles(changed))
    return " ".join(original), " ".join(changed), similarity


def bucket_of(similarity: float) -> int | None:
    for index in range(len(BUCKETS) - 1):
        if BUCKETS[index] <= similarity < BUCKETS[index + 1]:
            return index
    return None


def fill_buckets(rng: random.Random, vocab: list[str], length: int, per_bucket: int) -> list[tuple[str, str, float]]:
    """Pairs until every bucket holds `per_bucket` of them, or 40 × as many tries as that asks for
    (a short text cannot reach every similarity)."""
    pairs: list[tuple[str, str, float]] = []
    counts = [0] * (len(BUCKETS) - 1)
    for _ in range(40 * per_bucket * len(counts)):
        if min(counts) >= per_bucket:
            break
        pair = make_pair(rng, vocab, length)
        bucket = bucket_of(pair[2])
        if bucket is not None and counts[bucket] < per_bucket:
            counts[bucket] += 1
            pairs.append(pair)
    return pairs


def flagged_by_audit(pairs: list[tuple[str, str, float]], threshold: float) -> tuple[list[bool], int]:
    collector = FingerprintCollector()
    for index, (original, changed, _) in enumerate(pairs):
        collector.add(line=2 * index + 1, text=original)
        collector.add(line=2 * index + 2, text=changed)
    report = find_duplicates(collector.finish(), threshold=threshold)
    flagged = [False] * len(pairs)
    cross = 0
    for group in report.near_groups + report.exact_groups:
        by_pair: dict[int, int] = {}
        for line in group:
            by_pair[(line - 1) // 2] = by_pair.get((line - 1) // 2, 0) + 1
        for pair, members in by_pair.items():
            if members == 2:
                flagged[pair] = True
        cross += len(by_pair) - 1  # groups joining texts of different pairs
    return flagged, cross


def flagged_by_waltzrl(pairs: list[tuple[str, str, float]], threshold: float) -> list[bool]:
    found = contaminated_indexes([changed for _, changed, _ in pairs], [original for original, _, _ in pairs],
                                 threshold=threshold)
    return [index in found for index in range(len(pairs))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300, help="pairs per bucket of similarity, per length")
    parser.add_argument("--lengths", default="10,20,40,80,150,300", help="text lengths in words")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    vocab = vocabulary(rng)
    lengths = [int(item) for item in args.lengths.split(",")]
    labels = [f"{BUCKETS[i]:.2f}-{BUCKETS[i + 1]:.2f}" for i in range(len(BUCKETS) - 1)]
    print(f"threshold {args.threshold}; up to {args.pairs} pairs per bucket and length; seed {args.seed}")
    print("share of pairs flagged as near duplicates, by true Jaccard similarity of word 3-shingles "
          "(pairs in the bucket in brackets)")
    for path in ("audit", "waltzrl"):
        print()
        print(f"{path}: " + ("find_duplicates (LSH + estimate)" if path == "audit"
                             else "contaminated_indexes (exact Jaccard of every pair sharing a shingle)"))
        print(f"{'words':>6} " + " ".join(f"{label:>11}" for label in labels))
        for length in lengths:
            pair_rng = random.Random(f"{args.seed}|{length}")
            pairs = fill_buckets(pair_rng, vocab, length, args.pairs)
            if path == "audit":
                flagged, cross = flagged_by_audit(pairs, args.threshold)
            else:
                flagged, cross = flagged_by_waltzrl(pairs, args.threshold), 0
            hits = [0] * len(labels)
            counts = [0] * len(labels)
            for (_, _, similarity), flag in zip(pairs, flagged):
                bucket = bucket_of(similarity)
                if bucket is not None:
                    counts[bucket] += 1
                    hits[bucket] += flag
            cells = [f"{hits[i] / counts[i]:5.0%} ({counts[i]:>3})" if counts[i] >= 20 else f"{'—':>5} ({counts[i]:>3})"
                     for i in range(len(labels))]
            print(f"{length:>6} " + " ".join(f"{cell:>11}" for cell in cells)
                  + (f"   cross-pair groups: {cross}" if cross else ""))
    print()
    print("— : fewer than 20 pairs in the bucket (a short text's similarity takes few values).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
