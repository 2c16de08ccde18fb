"""The per-case side of a benchmark comparison: paired scores, per-tag means, the worst regressions and
score histograms. Pure (no Django, no statistics beyond counting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedScore:
    key: str
    baseline: float
    candidate: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TagBreakdown:
    tag: str
    n: int
    baseline_mean: float
    candidate_mean: float
    mean_delta: float
    relative_improvement: float | None
    wins: int
    losses: int
    ties: int


@dataclass(frozen=True)
class Regression:
    key: str
    baseline: float
    candidate: float
    delta: float
    tags: tuple[str, ...]


def tag_breakdown(pairs: Sequence[PairedScore]) -> list[TagBreakdown]:
    """Means and win/loss counts per tag (a case counts under each of its tags), sorted by tag."""
    by_tag: dict[str, list[PairedScore]] = {}
    for pair in pairs:
        for tag in pair.tags:
            by_tag.setdefault(tag, []).append(pair)
    rows = []
    for tag in sorted(by_tag):
        group = by_tag[tag]
        base = np.array([pair.baseline for pair in group], dtype=float)
        cand = np.array([pair.candidate for pair in group], dtype=float)
        deltas = cand - base
        baseline_mean, candidate_mean = float(base.mean()), float(cand.mean())
        rows.append(
            TagBreakdown(
                tag=tag, n=len(group), baseline_mean=baseline_mean, candidate_mean=candidate_mean,
                mean_delta=candidate_mean - baseline_mean,
                relative_improvement=(candidate_mean - baseline_mean) / baseline_mean if baseline_mean else None,
                wins=int((deltas > 0).sum()), losses=int((deltas < 0).sum()), ties=int((deltas == 0).sum()),
            )
        )
    return rows


def regressions(pairs: Sequence[PairedScore], *, limit: int | None = None) -> list[Regression]:
    """Cases where the candidate scored lower than the baseline, worst first."""
    worse = [
        Regression(key=p.key, baseline=p.baseline, candidate=p.candidate, delta=p.candidate - p.baseline, tags=p.tags)
        for p in pairs
        if p.candidate < p.baseline
    ]
    worse.sort(key=lambda item: (item.delta, item.key))
    return worse if limit is None else worse[:limit]


def score_histogram(scores: Sequence[float], *, bins: int = 10) -> list[int]:
    """Counts of scores in `bins` equal slices of [0, 1]; a score of exactly 1 falls in the last."""
    counts = [0] * bins
    for score in scores:
        index = min(bins - 1, max(0, int(score * bins)))
        counts[index] += 1
    return counts
