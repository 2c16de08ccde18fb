"""The provider layer: every model call in Genesis goes through `ChatProvider.chat`.

No Django here. Build providers with `build_provider(...)` (or a `ProviderCache`), retry with
`call_with_retries(...)` (the only retry layer).
"""

from .base import (
    ChatMessage,
    ChatProvider,
    ChatResult,
    FineTuningJobSnapshot,
    JobCheckpoint,
    JobEvent,
    ModelInfo,
    ProviderKind,
    ProviderSettings,
    UploadedFile,
)
from .destinations import ProviderDestinations, provider_destinations
from .errors import (
    PermanentProviderError,
    ProviderAnswerTooLarge,
    ProviderAuthError,
    ProviderDestinationRefused,
    ProviderError,
    ProviderRefused,
    TransientProviderError,
    UnknownModelError,
    UnsupportedParameterError,
)
from .factory import ProviderCache, build_provider
from .mistral import MistralProvider
from .openai_compatible import OpenAICompatibleProvider
from .retry import NO_RETRY, RetryAttempt, RetryPolicy, call_with_retries

__all__ = [
    "NO_RETRY",
    "ChatMessage",
    "ChatProvider",
    "ChatResult",
    "FineTuningJobSnapshot",
    "JobCheckpoint",
    "JobEvent",
    "MistralProvider",
    "ModelInfo",
    "OpenAICompatibleProvider",
    "PermanentProviderError",
    "ProviderAnswerTooLarge",
    "ProviderAuthError",
    "ProviderCache",
    "ProviderDestinationRefused",
    "ProviderDestinations",
    "ProviderError",
    "ProviderKind",
    "ProviderRefused",
    "ProviderSettings",
    "RetryAttempt",
    "RetryPolicy",
    "TransientProviderError",
    "UnknownModelError",
    "UnsupportedParameterError",
    "UploadedFile",
    "build_provider",
    "call_with_retries",
    "provider_destinations",
]
