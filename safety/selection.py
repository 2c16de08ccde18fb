"""Which prompts a WaltzRL build uses and which examples reach its files. Pure (stdlib + the
audits' Django-free dedupe core): plain values in and out.

* duplicates — exact and near (MinHash, the audits' own core and threshold) among prompts;
* contamination — a prompt that is an exact or near duplicate of a benchmark case (exact Jaccard
  similarity of word 3-shingles, not the MinHash estimate: see :func:`contaminated_indexes`) is left out;
* split — train / validation by a seeded hash of the prompt, so a prompt is in the same split in
  both agents' files, and (duplicates being gone) the splits cannot overlap;
* mix — the target is reached by selection only: when one kind is short, the total shrinks so the
  mix still holds, and the shortfall says how many more prompts of which kind are needed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from audits.dedupe import DEFAULT_THRESHOLD, FingerprintCollector, find_duplicates, normalise, word_shingles

TRAIN = "train"
VALID = "valid"


def find_duplicate_prompts(texts: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD) -> tuple[dict[str, int], set[int]]:
    """({"exact", "near"} counted as the audit counts them — a line repeating an earlier one —, and the
    indexes (0-based) of the texts that repeat an earlier one exactly or nearly; the first is kept)."""
    collector = FingerprintCollector()
    for index, text in enumerate(texts):
        collector.add(line=index + 1, text=text)
    report = find_duplicates(collector.finish(), threshold=threshold)
    return {"exact": report.exact, "near": report.near}, {line - 1 for line in report.redundant_lines()}


def redundant_indexes(texts: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD) -> set[int]:
    """Indexes (0-based) of texts that repeat an earlier one exactly or nearly; the first is kept."""
    return find_duplicate_prompts(texts, threshold=threshold)[1]


def contaminated_indexes(
    texts: Sequence[str], references: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD
) -> set[int]:
    """Indexes of `texts` that equal or nearly equal any reference: the *exact* Jaccard similarity of
    their word 3-shingle sets (the audits' definition, :func:`audits.dedupe.word_shingles`) reaches
    `threshold`.

    Exact rather than the MinHash estimate the audits use: prompts are short (the built-in ones have
    8-23 words), and for a text of a few shingles the estimate is noisy — measured by
    bench/dedupe/run.py, a 10-word pair of true similarity 0.85-0.90 was flagged 78 % of the time and
    one of 0.70-0.75 29 %. Prompt and benchmark sets are small enough for exact counts through an
    inverted index of shingles."""
    if not texts or not references:
        return set()
    reference_sets = [word_shingles(normalise(text)) for text in references]
    postings: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for reference, shingles in enumerate(reference_sets):
        for shingle in shingles:
            postings[shingle].append(reference)
    found: set[int] = set()
    for index, text in enumerate(texts):
        shingles = word_shingles(normalise(text))
        shared = Counter(reference for shingle in shingles for reference in postings.get(shingle, ()))
        for reference, common in shared.items():
            if common / (len(shingles) + len(reference_sets[reference]) - common) >= threshold:
                found.add(index)
                break
    return found


def split_of(text: str, *, seed: int, validation: float) -> str:
    """train or valid, by a seeded hash of the normalised text (the same in every process)."""
    digest = hashlib.sha256(f"{seed}\x1f{normalise(text)}".encode()).digest()
    return VALID if int.from_bytes(digest[:8], "big") / 2**64 < validation else TRAIN


def seeded_order(texts: Sequence[str], *, seed: int) -> list[int]:
    """A deterministic shuffle of indexes (by a seeded hash), so a selection takes no file's order."""
    return sorted(range(len(texts)), key=lambda i: hashlib.sha256(f"{seed}\x1e{texts[i]}".encode()).digest())


@dataclass(frozen=True)
class MixPlan:
    """How many of each kind to take, and what the target lacked."""

    take: dict[str, int]
    target: int
    mix: dict[str, int]  # percent per kind, as asked
    shortfall: dict[str, int] = field(default_factory=dict)  # kind -> prompts more needed

    @property
    def total(self) -> int:
        return sum(self.take.values())

    def shortfall_text(self, *, what: str = "prompts") -> str:
        return "; ".join(f"{count} more {kind} {what} needed" for kind, count in sorted(self.shortfall.items()) if count)

    def achieved(self) -> dict[str, float]:
        total = self.total
        return {kind: round(100 * count / total, 2) if total else 0.0 for kind, count in self.take.items()}


def plan_mix(*, available: dict[str, int], target: int, mix: dict[str, int]) -> MixPlan:
    """Take `target` examples in the `mix` (percent per kind, summing to 100) from what is
    `available`, never more than there is. When a kind is short, the total shrinks until every kind's
    share fits, so the mix holds; the shortfall is what each kind lacks for the full target."""
    if sum(mix.values()) != 100 or any(value < 0 for value in mix.values()):
        raise ValueError(f"mix must be non-negative percentages summing to 100, got {mix}")
    wanted = _split_target(target, mix)
    shortfall = {kind: max(0, wanted[kind] - available.get(kind, 0)) for kind in mix}
    total = target
    if any(shortfall.values()):
        total = min(
            [target] + [math.floor(available.get(kind, 0) * 100 / share) for kind, share in mix.items() if share]
        )
    take = _split_target(total, mix)
    # Rounding may ask one more than there is: give the remainder to a kind that has it.
    for kind in take:
        while take[kind] > available.get(kind, 0):
            take[kind] -= 1
    return MixPlan(take=take, target=target, mix=dict(mix), shortfall={k: v for k, v in shortfall.items() if v})


def _split_target(total: int, mix: dict[str, int]) -> dict[str, int]:
    kinds = list(mix)
    take = {kind: math.floor(total * mix[kind] / 100) for kind in kinds}
    remainder = total - sum(take.values())
    for kind in sorted(kinds, key=lambda k: -(total * mix[k] / 100 - take[k]))[:remainder]:
        take[kind] += 1
    return take
