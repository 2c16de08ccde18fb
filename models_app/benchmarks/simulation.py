"""A reference score model for the gate's operating characteristics: paired per-case scores with a
known true improvement (tests/models_app/test_gate_properties.py, bench/decisions/gate.py). Pure."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats as scipy_stats
from scipy.optimize import brentq


def simulate_scores(
    rng: np.random.Generator, *, n: int, true_improvement: float, baseline_mean: float = 0.6,
    graded_share: float = 0.3, agreement: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired per-case scores in [0, 1] like the scorers produce, with a known true relative improvement.

    Assumptions (say them wherever its numbers are quoted): each case has a difficulty d ~ N(0, 1)
    shared by both models; each model adds its own noise e ~ N(0, 1), correlated `agreement` between
    the two models (a fine-tune errs where its base errs); a share 1 − `graded_share` of the cases is
    scored right/wrong (exact, regex, JSON schema: 1 when a + d + e > 0), the rest graded like an LLM
    judge (Φ(a + d + e), continuous in (0, 1)). Each model's offset a is solved so that the expected
    means are exactly `baseline_mean` and baseline_mean·(1 + true_improvement)."""
    target = baseline_mean * (1 + true_improvement)
    if not 0 < baseline_mean < 1 or not 0 < target < 1:
        raise ValueError(f"means must lie within (0, 1): baseline {baseline_mean}, candidate {target}")
    difficulty = rng.standard_normal(n)
    shared = rng.standard_normal(n)
    own = rng.standard_normal((2, n))
    noise = math.sqrt(agreement) * shared + math.sqrt(1 - agreement) * own
    graded = rng.random(n) < graded_share
    scores = []
    for index, mean in enumerate((baseline_mean, target)):
        # Binary: P(a + d + e > 0) = Φ(a/√2). Graded: E Φ(a + d + e) = Φ(a/√3). Solve one a for the mix.
        offset = float(_solve_offset(mean, graded_share))
        latent = offset + difficulty + noise[index]
        scores.append(np.where(graded, scipy_stats.norm.cdf(latent), (latent > 0).astype(float)))
    return scores[0], scores[1]


@functools.lru_cache(maxsize=256)
def _solve_offset(mean: float, graded_share: float) -> float:
    def expected(offset: float) -> float:
        return ((1 - graded_share) * scipy_stats.norm.cdf(offset / math.sqrt(2))
                + graded_share * scipy_stats.norm.cdf(offset / math.sqrt(3)))

    return float(brentq(lambda offset: expected(offset) - mean, -20, 20))
