"""The one interface every model call in Genesis goes through, and the plain values it returns.

No Django here: a `ProviderAccount` row is turned into these values by the caller (see factory.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from models_app.simulator.markers import strip_answer_markers

ChatMessage = Mapping[str, Any]  # {"role": "system"|"user"|"assistant"|"tool", "content": str, …}


class ProviderKind(StrEnum):
    MISTRAL = "mistral"
    OPENAI_COMPATIBLE = "openai_compatible"
    SIMULATOR = "simulator"


@dataclass(frozen=True)
class ProviderSettings:
    """Everything needed to talk to one provider account. `api_key` is the key itself, read by the
    caller from the environment variable named `api_key_env`; it is never printed."""

    name: str
    kind: ProviderKind
    base_url: str | None
    api_key: str = field(default="", repr=False)
    api_key_env: str | None = None
    timeout_seconds: float = 30.0
    max_concurrency: int = 8
    rate_limit_per_minute: int | None = None
    # Benchmark prompts carry `[[answer: …]]` for the simulator; a real model must never see it.
    strip_answer_markers: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ProviderKind(self.kind))
        if self.timeout_seconds <= 0:
            raise ValueError(f"provider '{self.name}': timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.max_concurrency < 1:
            raise ValueError(f"provider '{self.name}': max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError(
                f"provider '{self.name}': rate_limit_per_minute must be >= 1 or None, got {self.rate_limit_per_minute}"
            )


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str  # "stop", "length", "tool_calls", "error"…, as the provider said
    model: str = ""  # the model that answered, as the provider reported it
    provider: str = ""
    # The provider reported no usage (or only part of it): the token counts are estimated at about four
    # characters a token (providers/usage.py), and so is any cost computed from them.
    tokens_estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelInfo:
    id: str
    fine_tuned: bool = False
    base_model: str | None = None  # for a fine-tuned model, what it was trained from
    job_id: str | None = None
    fine_tunable: bool = False


@runtime_checkable
class ChatProvider(Protocol):
    settings: ProviderSettings

    @property
    def name(self) -> str: ...

    def chat(
        self, *, model: str, messages: Sequence[ChatMessage], parameters: Mapping[str, Any] | None = None
    ) -> ChatResult: ...

    def list_models(self) -> list[ModelInfo]: ...

    def close(self) -> None: ...


# ---- fine-tuning: what MistralProvider's file and job calls return ----------------------------


@dataclass(frozen=True)
class UploadedFile:
    id: str
    filename: str
    purpose: str
    size_bytes: int
    num_lines: int | None
    created_at: datetime


@dataclass(frozen=True)
class JobEvent:
    name: str
    created_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class JobCheckpoint:
    step_number: int
    created_at: datetime
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class FineTuningJobSnapshot:
    """A fine-tuning job as the provider reports it right now."""

    id: str
    status: str  # QUEUED, VALIDATING, VALIDATED, RUNNING, SUCCESS, FAILED, FAILED_VALIDATION, CANCELLED, CANCELLATION_REQUESTED
    base_model: str
    fine_tuned_model: str | None
    training_file_ids: list[str]
    validation_file_ids: list[str]
    hyperparameters: dict[str, Any]
    suffix: str | None
    auto_start: bool
    trained_tokens: int | None
    cost: Decimal | None  # money is Decimal, from the provider's float via str()
    cost_currency: str | None
    expected_duration_seconds: int | None
    created_at: datetime
    modified_at: datetime
    events: list[JobEvent]
    checkpoints: list[JobCheckpoint]
    raw: dict[str, Any]  # the provider's JSON, for the admin

    TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILED", "FAILED_VALIDATION", "CANCELLED"})

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


def prepared_messages(messages: Sequence[ChatMessage], *, strip_markers: bool) -> list[dict[str, Any]]:
    """Plain dict copies of `messages`, without answer markers unless the target is the simulator."""
    prepared = []
    for message in messages:
        copy = dict(message)
        if strip_markers and isinstance(copy.get("content"), str):
            copy["content"] = strip_answer_markers(copy["content"])
        prepared.append(copy)
    return prepared
