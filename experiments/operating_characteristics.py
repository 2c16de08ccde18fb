"""The default success-rate guardrail's operating curve, as measured — published beside the rule on
the admin's experiment page and in the README.

These are measurements, not settings: `bench/decisions/run.py --part guardrails` (seed 20261206,
500 simulated rollouts per drop) printed them on 2026-12-06, with α spent over resumes (the first
segment, before any resume, at α/ζ(3)); re-run it and update both places when
the rule in experiments/stats.py changes. tests/experiments/test_stats.py checks the same shape at a
smaller scale on every run.
"""

from __future__ import annotations

SUCCESS_RATE_ROLLBACK_CURVE = {
    "conditions": (
        "tolerance 5 points, alpha 5 %, base rate 0.9, 2 000 users/h, stages 10 → 25 → 50 % of 48 h each, checked "
        "every minute; at base rate 0.6 a 5-point drop is rolled back 2.2 %, a 10-point one in 4.3 h median; at "
        "200 users/h 0.4 % and 29 h; a resume restarts the stage's test at a smaller share of alpha (README)"
    ),
    "rows": [
        {"drop_points": 0, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 2, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 3, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 4, "rollback": "0.0 %", "median_hours": None},
        {"drop_points": 5, "rollback": "0.6 %", "median_hours": "13"},
        {"drop_points": 6, "rollback": "100 %", "median_hours": "53"},
        {"drop_points": 8, "rollback": "100 %", "median_hours": "6.8"},
        {"drop_points": 10, "rollback": "100 %", "median_hours": "2.9"},
        {"drop_points": 15, "rollback": "100 %", "median_hours": "0.95"},
        {"drop_points": 20, "rollback": "100 %", "median_hours": "0.78"},
    ],
}
