"""An agent's health from its recent outcomes: plain numbers in, a status out (no Django).

The lines are the alert rules' (ops/prometheus/alerts.yml), so the endpoint, the admin column and the
pager read the same numbers: an error ratio above 5 % (HighModelErrorRate) or a p95 above 5 s
(HighModelLatency) is degraded; above 10 % (LowSuccessRate: success below 90 %) or 10 s
(VeryHighModelLatency) failing. A window is judged on at least 20 requests (the alerts, which hold for
minutes, want 100 over 30 minutes): the 5-minute window decides once it has 20, else the 15-minute one. A 15-minute window with fewer than 20
requests is read as if the missing requests up to 20 had succeeded — errors / 20, not errors / requests,
and no latency judgement (the p95 of a few requests is their slowest) — so one failure of three is
"ok", not "failing", while three failures of three still read "failing".

What health does not copy from the alerts, and why: it is one read, not a condition held `for:` 5 or 15
minutes (it turns at once and may flicker; the alert waits), it reads "failing" from the 5-minute window
where LowSuccessRate waits for 100 requests over 30 minutes, its latency is the agent's where the latency
alerts are per variant, and it judges an agent with fewer than 20 requests where the alerts stay silent.
Its measured operating characteristic — P(status | true error rate, p95, traffic) per read — is
bench/health/run.py's table, published in README › API beside the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

DEGRADED_ERROR_RATIO = 0.05
FAILING_ERROR_RATIO = 0.10
DEGRADED_P95_MS = 5_000.0
FAILING_P95_MS = 10_000.0
# Fewer requests say too little (one failure of three is not "failing"), in either window. The alert
# rules' gate is larger (100 requests over 30 minutes) because they page; one read only reports.
MIN_REQUESTS_TO_JUDGE = 20


@dataclass(frozen=True)
class WindowStats:
    requests: int
    errors: int
    latency_p95_ms: float | None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def as_json(self) -> dict[str, float | int | None]:
        ratio = self.error_ratio
        return {
            "requests": self.requests,
            "error_ratio": round(ratio, 4) if ratio is not None else None,
            "latency_p95_ms": round(self.latency_p95_ms, 1) if self.latency_p95_ms is not None else None,
        }


def health_status(*, window_5m: WindowStats, window_15m: WindowStats) -> str:
    """ok | degraded | failing | idle."""
    if window_15m.requests == 0:
        return "idle"
    window = window_5m if window_5m.requests >= MIN_REQUESTS_TO_JUDGE else window_15m
    # A short window counts the requests it lacks as successes: errors / 20 at the least.
    ratio = window.errors / max(window.requests, MIN_REQUESTS_TO_JUDGE)
    enough = window.requests >= MIN_REQUESTS_TO_JUDGE
    p95 = (window.latency_p95_ms or 0.0) if enough else 0.0
    if ratio > FAILING_ERROR_RATIO or p95 > FAILING_P95_MS:
        return "failing"
    if ratio > DEGRADED_ERROR_RATIO or p95 > DEGRADED_P95_MS:
        return "degraded"
    return "ok"
