"""An agent's health from its recent outcomes: plain numbers in, a status out (no Django).

The thresholds are the alert rules' (ops/prometheus/alerts.yml), so the endpoint, the admin column
and the pager agree: an error ratio above 5 % or a p95 above 5 s is degraded, above 25 % or 10 s
failing. The 5-minute window decides when it has enough requests to judge; otherwise the 15-minute one.
"""

from __future__ import annotations

from dataclasses import dataclass

DEGRADED_ERROR_RATIO = 0.05
FAILING_ERROR_RATIO = 0.25
DEGRADED_P95_MS = 5_000.0
FAILING_P95_MS = 10_000.0
# Fewer requests than this in 5 minutes say too little (one failure of three is not "failing").
MIN_REQUESTS_TO_JUDGE = 10


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
    ratio = window.error_ratio or 0.0
    p95 = window.latency_p95_ms or 0.0
    if ratio > FAILING_ERROR_RATIO or p95 > FAILING_P95_MS:
        return "failing"
    if ratio > DEGRADED_ERROR_RATIO or p95 > DEGRADED_P95_MS:
        return "degraded"
    return "ok"

