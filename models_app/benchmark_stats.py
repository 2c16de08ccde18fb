"""The benchmark gate: does the candidate beat the baseline on the same cases? Pure (numpy, no Django).

Both models answer every case, so the comparison is *paired*: per-case deltas, and a paired
bootstrap that resamples cases (keeping each case's two scores together) to put a 95 % interval on
the relative improvement (candidate mean − baseline mean) / baseline mean.

The verdict rule (issue 4), with threshold t = BENCHMARK_MIN_RELATIVE_IMPROVEMENT:

    PASS          improvement ≥ t  and  CI lower bound > 0
    FAIL          CI upper bound < t          (even the optimistic end falls short)
    INCONCLUSIVE  otherwise, with roughly how many more cases would decide it

When the baseline scores zero on every case the relative improvement is undefined; the rule then
reads the interval of the absolute mean delta against zero (anything above nothing is an
improvement) and says so in its reasons.

Two guards keep the numbers honest:

- Fewer than `min_cases` paired cases (BENCHMARK_MIN_CASES) never decide: a two-case suite can show a
  zero-width interval and would otherwise PASS on no evidence. The verdict is INCONCLUSIVE and the
  first reason says how many cases the gate needs.
- When resamples that drew only zero-baseline cases make an end of the interval infinite, the
  verdict still reads that end (+∞ is above any threshold), but the interval is reported as absent
  (`ci_low` = `ci_high` = None) with a reason, because a half-infinite pair has no JSON form and the
  contract's `ci95` is either two numbers or null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)

# Resamples are drawn in blocks so that a large suite (tens of thousands of cases) stays within a
# few tens of megabytes.
_BOOTSTRAP_BLOCK_ELEMENTS = 2_000_000


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


@dataclass(frozen=True)
class Comparison:
    n: int
    baseline_mean: float
    candidate_mean: float
    mean_delta: float
    relative_improvement: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    reasons: list[str]
    more_cases_needed: int | None
    threshold: float
    resamples: int
    seed: int
    confidence: float
    wins: int
    losses: int
    ties: int
    per_tag: list[TagBreakdown] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 6 places, so stored and printed values agree)."""
        return _rounded(asdict(self))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


# ---- the rule --------------------------------------------------------------------------------------


def gate_verdict(*, relative_improvement: float, ci_low: float, ci_high: float, threshold: float) -> str:
    """The verdict rule on its own, for known-answer tests and for people reading the code."""
    if relative_improvement >= threshold and ci_low > 0:
        return PASS
    if ci_high < threshold:
        return FAIL
    return INCONCLUSIVE


def more_cases_to_decide(
    *, n: int, relative_improvement: float, ci_low: float, ci_high: float, threshold: float
) -> int | None:
    """Roughly how many more cases would make an INCONCLUSIVE verdict decisive, assuming the effect
    stays what it is now and the interval narrows as 1/√n. None when no number of cases would (the
    point estimate sits exactly on the boundary it must clear)."""
    if n <= 0:
        return None
    if relative_improvement >= threshold:
        # Heading for PASS: the lower bound must rise above zero.
        margin, half_width = relative_improvement, relative_improvement - ci_low
    else:
        # Heading for FAIL: the upper bound must fall below the threshold.
        margin, half_width = threshold - relative_improvement, ci_high - relative_improvement
    if margin <= 0 or half_width <= 0 or not math.isfinite(half_width):
        return None
    needed = math.ceil(n * (half_width / margin) ** 2)
    return max(1, needed - n)


# ---- the bootstrap ---------------------------------------------------------------------------------


def bootstrap_means(
    baseline: np.ndarray, candidate: np.ndarray, *, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Means of `resamples` paired resamples (same case indices for both models)."""
    n = len(baseline)
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // max(1, n))
    baseline_means = np.empty(resamples)
    candidate_means = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        indices = rng.integers(0, n, size=(stop - start, n))
        baseline_means[start:stop] = baseline[indices].mean(axis=1)
        candidate_means[start:stop] = candidate[indices].mean(axis=1)
    return baseline_means, candidate_means


def _relative(candidate_means: np.ndarray, baseline_means: np.ndarray) -> np.ndarray:
    delta = candidate_means - baseline_means
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = delta / baseline_means
    # A resample whose baseline mean is zero: any gain is an unbounded improvement, any loss an
    # unbounded regression, no change is no change (set apart: sign(0) · ∞ would be NaN).
    zero = baseline_means == 0
    ratio[zero] = np.copysign(np.inf, delta[zero])
    ratio[zero & (delta == 0)] = 0.0
    return ratio


def percentile_interval(values: np.ndarray, *, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    # Linear interpolation is the usual percentile interval; with infinite values (zero-baseline
    # resamples) interpolation would give NaN, so take order statistics instead.
    method = "linear" if np.all(np.isfinite(values)) else "inverted_cdf"
    low, high = np.quantile(values, [tail, 1 - tail], method=method)
    return float(low), float(high)


# ---- the comparison --------------------------------------------------------------------------------


def _percent(value: float) -> str:
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value * 100:+.1f} %"


@dataclass(frozen=True)
class _Decision:
    """What the rule concluded, before the common fields are added."""

    verdict: str
    reasons: list[str]
    relative_improvement: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    more_cases_needed: int | None = None


def compare_paired(
    pairs: Sequence[PairedScore],
    *,
    threshold: float,
    min_cases: int,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    max_regressions: int | None = None,
) -> Comparison:
    """Compare candidate and baseline on the same cases and apply the gate (fewer than `min_cases`
    paired cases are always INCONCLUSIVE)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if min_cases < 1:
        raise ValueError(f"min_cases must be >= 1, got {min_cases}")
    n = len(pairs)
    base = np.array([pair.baseline for pair in pairs], dtype=float)
    cand = np.array([pair.candidate for pair in pairs], dtype=float)
    deltas = cand - base
    wins, losses = int((deltas > 0).sum()), int((deltas < 0).sum())
    baseline_mean, candidate_mean = (float(base.mean()), float(cand.mean())) if n else (0.0, 0.0)
    if n == 0:
        decision = _Decision(INCONCLUSIVE, ["no case has a score from both models"])
    else:
        baseline_means, candidate_means = bootstrap_means(base, cand, resamples=resamples, seed=seed)
        if baseline_mean == 0:
            decision = _decide_absolute(
                n=n, candidate_mean=candidate_mean, gains=candidate_means - baseline_means, confidence=confidence
            )
        else:
            decision = _decide_relative(
                n=n, baseline_mean=baseline_mean, candidate_mean=candidate_mean, baseline_means=baseline_means,
                candidate_means=candidate_means, threshold=threshold, confidence=confidence,
            )
    reasons, more = decision.reasons, decision.more_cases_needed
    if 0 < n < min_cases:
        # Whatever the numbers say, this few cases cannot decide (the reason goes first: it is the one
        # that matters, and the candidate's status change quotes the first reason).
        reasons = [f"only {n} paired case(s): the gate needs at least {min_cases} to decide, so the verdict is "
                   f"{INCONCLUSIVE}; add cases to the suite"] + reasons
        more = max(more or 0, min_cases - n)
    return Comparison(
        n=n, baseline_mean=baseline_mean, candidate_mean=candidate_mean, mean_delta=candidate_mean - baseline_mean,
        relative_improvement=decision.relative_improvement, ci_low=decision.ci_low, ci_high=decision.ci_high,
        verdict=INCONCLUSIVE if n < min_cases else decision.verdict, reasons=reasons, more_cases_needed=more,
        threshold=threshold, resamples=resamples, seed=seed, confidence=confidence, wins=wins, losses=losses,
        ties=n - wins - losses, per_tag=tag_breakdown(pairs), regressions=regressions(pairs, limit=max_regressions),
    )


def _decide_absolute(*, n: int, candidate_mean: float, gains: np.ndarray, confidence: float) -> _Decision:
    """The baseline scored 0 on every case: judge the absolute gain (the resamples' `gains`) against zero."""
    level = f"{confidence * 100:g} %"
    mean_delta = candidate_mean
    low, high = percentile_interval(gains, confidence=confidence)
    if low > 0:
        return _Decision(PASS, [
            f"the baseline scored 0 on all {n} cases, so the relative improvement is unbounded",
            f"the candidate's mean gain {mean_delta:+.3f} has a {level} interval [{low:+.3f}, {high:+.3f}] above zero",
        ])
    if high <= 0:
        return _Decision(FAIL, [
            f"neither model scored on any of the {n} cases" if candidate_mean == 0 else
            f"the candidate's mean gain {mean_delta:+.3f} has a {level} interval entirely at or below zero"
        ])
    return _Decision(INCONCLUSIVE, [
        f"the baseline scored 0 on all {n} cases; the candidate's mean gain {mean_delta:+.3f} has a "
        f"{level} interval [{low:+.3f}, {high:+.3f}] that includes zero"
    ])


def _decide_relative(
    *, n: int, baseline_mean: float, candidate_mean: float, baseline_means: np.ndarray, candidate_means: np.ndarray,
    threshold: float, confidence: float,
) -> _Decision:
    """The verdict rule on the relative improvement and its bootstrap interval."""
    level = f"{confidence * 100:g} %"
    relative_improvement = (candidate_mean - baseline_mean) / baseline_mean
    ci_low, ci_high = percentile_interval(_relative(candidate_means, baseline_means), confidence=confidence)
    verdict = gate_verdict(
        relative_improvement=relative_improvement, ci_low=ci_low, ci_high=ci_high, threshold=threshold
    )
    interval = f"{level} interval [{_percent(ci_low)}, {_percent(ci_high)}]"
    summary = (
        f"candidate mean {candidate_mean:.3f} vs baseline {baseline_mean:.3f} on {n} cases: "
        f"relative improvement {_percent(relative_improvement)} (threshold {_percent(threshold)})"
    )
    more = None
    if verdict == PASS:
        reasons = [summary, f"the {interval} lies entirely above zero"]
    elif verdict == FAIL:
        reasons = [summary, f"the {interval} ends below the threshold: even its optimistic end is not enough"]
    else:
        if relative_improvement >= threshold:
            reasons = [summary, f"the improvement reaches the threshold, but the {interval} includes zero"]
        else:
            reasons = [summary, f"the improvement is below the threshold, but the {interval} still reaches it"]
        more = more_cases_to_decide(
            n=n, relative_improvement=relative_improvement, ci_low=ci_low, ci_high=ci_high, threshold=threshold
        )
        if more is not None:
            reasons.append(f"about {more} more case(s) would decide it, if the effect stays the same")
        else:
            reasons.append("more cases would not decide it at this effect size")
    finite = math.isfinite(ci_low) and math.isfinite(ci_high)
    if not finite:
        zero_baseline = int((baseline_means == 0).sum())
        reasons.append(
            f"{zero_baseline} of {len(baseline_means)} resamples drew only cases where the baseline scored 0, "
            "where the relative change is unbounded, so the interval has no finite end and is not reported "
            "(ci95 null); the verdict above already accounts for it"
        )
    return _Decision(
        verdict, reasons, relative_improvement, ci_low if finite else None, ci_high if finite else None, more
    )


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
