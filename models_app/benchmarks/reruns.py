"""Re-runs of one candidate on one suite spend the gate's α. Pure (no Django).

An INCONCLUSIVE candidate goes back to `registered` and may be benchmarked again, and a PASS is never
taken back by a later run; re-running until PASS would otherwise multiply the chance of a false PASS
(statistics review F5: 6–11 % within five runs at r = t, where one run promises 2.5 %). The run number is
counted by selectors.benchmark_run_number and frozen with the run; stats.compare_paired reads the
interval at rerun_confidence.
"""

from __future__ import annotations

# Re-runs of one candidate on one suite spend the gate's α: the k-th completed run reads its interval at
# α_k = α / (ζ(3)·k³), so Σ_k α_k = α however often a candidate is re-run (INCONCLUSIVE sends it back to
# registered), and P(some run PASSes | r = t) stays within the single run's promise. k³ rather than the
# textbook 6/(π²k²) keeps the first run close to today's 95 % (95.8 %); the second reads 99.5 %.
ZETA_3 = 1.2020569031595942


def rerun_alpha(*, alpha: float, run_number: int) -> float:
    """The two-sided α the `run_number`-th run (1, 2, …) of a candidate on a suite is read at."""
    if run_number < 1:
        raise ValueError(f"run_number must be >= 1, got {run_number}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be within (0, 1), got {alpha}")
    return alpha / (ZETA_3 * run_number ** 3)


def rerun_confidence(*, confidence: float, run_number: int) -> float:
    """The interval's confidence for the `run_number`-th run when all runs together keep `confidence`."""
    return 1 - rerun_alpha(alpha=1 - confidence, run_number=run_number)


def confidence_text(confidence: float) -> str:
    """How every page and command names an interval's level: 0.95 → "95 %", 0.958404 → "95.84 %"."""
    return f"{confidence * 100:.4g} %"


def rerun_reason(*, run_number: int, confidence: float, run_confidence: float) -> str:
    """The sentence that says which run this is and the α it spent."""
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}.get(run_number, f"{run_number}th")
    return (f"run {run_number} of this candidate on this suite: its interval is read at {confidence_text(run_confidence)} "
            f"(α = {(1 - run_confidence) * 100:.3f} %, the {ordinal} share of α = {(1 - confidence) * 100:g} % spent as "
            f"α/(ζ(3)·k³) over re-runs), so re-running until PASS cannot raise the chance of a false PASS")
