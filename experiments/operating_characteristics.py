"""The default success-rate guardrail's operating curve, as measured — published beside the rule on
the admin's experiment page and in the README.

These are measurements, not settings: `bench/decisions/run.py --part guardrails` (seed 20261206,
500 simulated rollouts per drop) printed them on 2026-12-06; re-run it and update both places when
the rule in experiments/stats.py changes. tests/experiments/test_stats.py checks the same shape at a
smaller scale on every run.
"""

from __future__ import annotations

SUCCESS_RATE_ROLLBACK_CURVE = {
    "conditions": "tolerance 5 points, alpha 5 %, 2 000 users/h, stages 10 → 25 → 50 % of 48 h each, checked every minute",
    "rows": [
        {"drop_points": 0, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 2, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 3, "rollback": "0.2 %", "median_hours": "1.0"},
        {"drop_points": 4, "rollback": "1.4 %", "median_hours": "1.0"},
        {"drop_points": 5, "rollback": "5.4 %", "median_hours": "1.0"},
        {"drop_points": 6, "rollback": "100 %", "median_hours": "49"},
        {"drop_points": 10, "rollback": "100 %", "median_hours": "1.0"},
    ],
}
