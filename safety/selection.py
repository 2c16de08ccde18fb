"""Which prompts a WaltzRL build uses and which examples reach its files. Pure (stdlib + numpy + the
audits' Django-free dedupe core): plain values in and out.

* duplicates — exact and near (MinHash, the audits' own core and threshold) among prompts;
* contamination — a prompt that is an exact or near duplicate of a benchmark case is left out;
* split — train / validation by a seeded hash of the prompt, so a prompt is in the same split in
  both agents' files, and (duplicates being gone) the splits cannot overlap;
* mix — the target is reached by selection only: when one kind is short, the total shrinks so the
  mix still holds, and the shortfall says how many more prompts of which kind are needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from audits.dedupe import (
    DEFAULT_THRESHOLD,
    FingerprintCollector,
    estimated_similarity,
    exact_key,
    find_duplicates,
    minhash_signatures,
    normalise,
)

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
    """Indexes of `texts` that equal or nearly equal (estimated Jaccard >= threshold) any reference."""
    if not texts or not references:
        return set()
    normalised = [normalise(text) for text in texts]
    reference_norms = [normalise(text) for text in references]
    reference_keys = {exact_key(text) for text in reference_norms}
    found = {index for index, text in enumerate(normalised) if exact_key(text) in reference_keys}
    signatures = minhash_signatures(normalised)
    reference_signatures = minhash_signatures(reference_norms)
    block = max(1, 400_000 // len(reference_norms))  # about 50 MB of comparisons at a time
    for start in range(0, len(normalised), block):
        chunk = signatures[start : start + block]
        # (chunk, 1, bins) against (1, references, bins): every pair, in blocks to bound memory.
        similarity = estimated_similarity(chunk[:, None, :], reference_signatures[None, :, :])
        for offset in np.flatnonzero((similarity >= threshold).any(axis=1)).tolist():
            found.add(start + offset)
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
