"""How a simulator instance behaves. Plain values; the environment is read only for defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .safety import SafetyBehaviour

DEFAULT_API_KEY = "sim-key"
API_KEYS_ENV = "GENESIS_SIMULATOR_KEYS"
DEMO_PROVIDER_KEY_ENV = "GENESIS_SIMULATOR_API_KEY"  # the key `seed_demo`'s provider sends
QUALITY_ENV = "GENESIS_SIMULATOR_QUALITY"

# Probability that a model answers a marked question correctly. Matched exactly first, then as
# shell-style patterns from the most specific (longest) to the least. A fine-tuned model is
# better than its base at the questions of its benchmark suite: that is the whole point of
# Genesis, and the demo must be able to show it.
DEFAULT_QUALITY: Mapping[str, float] = {"ft:*": 0.85, "*": 0.55}


def default_api_keys() -> frozenset[str]:
    """Keys from $GENESIS_SIMULATOR_KEYS (comma-separated) plus $GENESIS_SIMULATOR_API_KEY (so the
    demo provider's key is always accepted), else the single key `sim-key`."""
    configured = {key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()}
    if os.environ.get(DEMO_PROVIDER_KEY_ENV, "").strip():
        configured.add(os.environ[DEMO_PROVIDER_KEY_ENV].strip())
    return frozenset(configured or {DEFAULT_API_KEY})


def parse_quality_spec(spec: str) -> dict[str, float]:
    """`"ft:*=0.9, open-mistral-7b=0.5"` -> {"ft:*": 0.9, "open-mistral-7b": 0.5}."""
    table: dict[str, float] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        pattern, separator, value = item.rpartition("=")
        if not separator or not pattern.strip():
            raise ValueError(f"quality entry {item.strip()!r} must look like MODEL_OR_PATTERN=PROBABILITY")
        try:
            probability = float(value)
        except ValueError:
            raise ValueError(f"quality entry {item.strip()!r}: {value!r} is not a number") from None
        table[pattern.strip()] = probability
    return table


def default_quality() -> dict[str, float]:
    """DEFAULT_QUALITY overlaid with $GENESIS_SIMULATOR_QUALITY."""
    return {**DEFAULT_QUALITY, **parse_quality_spec(os.environ.get(QUALITY_ENV, ""))}


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0 picks a free ephemeral port (tests)
    latency_ms: float = 0.0  # added to every response
    error_rate: float = 0.0  # fraction of API requests answered 429 (with Retry-After) or 500
    job_seconds: float = 30.0  # a fine-tuning job's time from start to SUCCESS
    seed: int = 0
    # Ids (files, jobs, and so the fine-tuned model names) from the seed alone, the same at every start,
    # as `--seed S` promises. Otherwise (make run, which passes no seed) each start mixes in a random
    # part, so a restarted simulator never re-issues an id Genesis already holds.
    fixed_ids: bool = False
    api_keys: frozenset[str] = field(default_factory=default_api_keys)
    quality: Mapping[str, float] = field(default_factory=default_quality)
    validation_seconds: float = 1.0  # QUEUED -> VALIDATED / FAILED_VALIDATION
    cancel_seconds: float = 1.0  # CANCELLATION_REQUESTED -> CANCELLED
    retry_after_seconds: int = 1  # the Retry-After header of an injected 429
    log_requests: bool = False  # one line per request on stderr (never headers or bodies)
    safety: SafetyBehaviour = field(default_factory=SafetyBehaviour)  # refusals and the judge, see safety.py

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        object.__setattr__(self, "quality", MappingProxyType(dict(self.quality)))  # frozen means frozen
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, got {self.error_rate}")
        for name in ("latency_ms", "job_seconds", "validation_seconds", "cancel_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        if self.retry_after_seconds < 0:
            raise ValueError(f"retry_after_seconds must be >= 0, got {self.retry_after_seconds}")
        if not self.api_keys:
            raise ValueError("api_keys must hold at least one key")
        for pattern, probability in self.quality.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"quality for {pattern!r} must be between 0 and 1, got {probability}")
