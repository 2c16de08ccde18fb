"""The benchmark gate's rules (BENCHMARK_GATE_RULE) by name, and each in words as `stats.gate_verdict`
applies it (pure: no Django, no numpy)."""

from __future__ import annotations

from models_app.benchmarks.reruns import confidence_text

RULE_AT_LEAST_THRESHOLD = "at_least_threshold"
RULE_IMPROVES_AND_REACHES = "improves_and_reaches"
RULES: dict[str, str] = {
    RULE_AT_LEAST_THRESHOLD: "confident the improvement is at least the threshold",
    RULE_IMPROVES_AND_REACHES: "confident it improves, and the estimate reaches the threshold",
}
DEFAULT_RULE = RULE_AT_LEAST_THRESHOLD


def rule_text(rule: str, *, confidence: float = 0.95) -> str:
    """The rule as `gate_verdict` applies it, at the level the run's interval is read at (`confidence`:
    1 − the run's α, e.g. 95.84 % for a first run, 99.48 % for a second), for the run page and the
    commands. Until 2026-12-07 this said "95 %" whatever the run's level and left out FAIL's one more win."""
    check_rule(rule)
    level = confidence_text(confidence)
    passes = ("its lower end ≥ threshold" if rule == RULE_AT_LEAST_THRESHOLD
              else "its lower end > 0 and the estimate ≥ threshold")
    return (f"{RULES[rule]}: on the {level} interval (the hull of the paired bootstrap's and Fieller's), PASS when "
            f"{passes}; FAIL when its upper end < threshold and would stay below it with one more case where the "
            "candidate is right and the baseline wrong; otherwise INCONCLUSIVE (a baseline that scores 0 on every case: "
            "the absolute gain's interval against 0 instead)")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown gate rule {rule!r}; known: {', '.join(RULES)}")
    return rule
